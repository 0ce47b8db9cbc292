"""The reports generator's own parts: the course content held as data and tied to the code that answers it."""

from __future__ import annotations

from profiler.catalogue import gpu_spec
from profiler.models.zoo import EDITION, SECTIONS, ZOO
from profiler.site.claims import CHECKS
from profiler.site.content import CLAIMS, EXERCISES, NOTES_000, Citation, claim
from profiler.site.exercises import ANSWERS
from profiler.site.markdown import (
    FP32_RIDGE_FLOP_PER_BYTE,
    ROOFS,
    TF32_RIDGE_FLOP_PER_BYTE,
    anchor,
    teraflops_per_s,
    tf32_note,
)
from profiler.site.measured import MeasuredRun


def test_every_exercise_has_one_answer_and_every_answer_an_exercise():
    numbers = [e.number for e in EXERCISES]
    assert len(numbers) == len(set(numbers))
    assert list(ANSWERS) == numbers


def test_every_claim_has_one_check_and_every_check_a_claim():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    assert sorted(CHECKS) == sorted(keys)


def test_claim_titles_give_distinct_anchors():
    anchors = [anchor(c.title) for c in CLAIMS]
    assert len(anchors) == len(set(anchors))
    assert anchor("AlexNet training memory at 224") == "alexnet-training-memory-at-224"
    assert anchor("AlexNet's fully connected layers") == "alexnets-fully-connected-layers"


def test_citations_read_as_the_notes_are_cited():
    assert str(Citation(NOTES_000, (1599,))) == f"{NOTES_000}, line 1599"
    assert str(Citation(NOTES_000, (287, 307, 327))) == f"{NOTES_000}, lines 287, 307, 327"
    assert str(Citation(NOTES_000, (1150, 1175), span=True)) == f"{NOTES_000}, lines 1150–1175"
    assert claim("alexnet-fc-gigabyte").source == ("001_fac40185f130e3db.txt, line 36; "
                                                    "003_5d0edbe44cf5956c.txt, line 2753")


def test_the_nin_hand_count_adds_up_to_what_the_notes_print():
    # the notes: 2,013,160 parameters and 898,208,840 multiply-adds (000, lines 1150-1175)
    hand = claim("nin-hand-count").figures
    assert sum(hand["params"]) == 2_013_160
    assert sum(p * m ** 2 for p, m in zip(hand["params"], hand["maps"], strict=True)) == 898_208_840


def test_the_ridge_point_and_its_roofs_come_from_the_gpu_catalogue():
    h200 = gpu_spec("h200")
    assert FP32_RIDGE_FLOP_PER_BYTE == 67e12 / 4.8e12            # the H200 datasheet: 67 TFLOP/s FP32, 4.8 TB/s
    assert ROOFS == f"{h200.sources['fp32_flops_per_s']}: 4.8 TB/s DRAM, 67 TFLOP/s FP32 without tensor cores"


def test_derived_rates_are_counted_work_over_the_measured_step_time():
    run = MeasuredRun(model="alexnet", size=224, batch=128, train=False, params=1, baseline_bytes=0,
                      peak_allocated_bytes=0, peak_reserved_bytes=0, ms_per_step=2.5, nvml_used_bytes=None,
                      source="reports/data/x.json")
    assert run.examples_per_s == 128 / 0.0025 == 51_200
    assert run.achieved_per_s(240e9) == 96e12
    assert teraflops_per_s(run.achieved_per_s(240e9)) == "96.0" and teraflops_per_s(None) == "-"


def test_every_zoo_source_names_the_edition_and_its_section_in_both_editions():
    for entry in ZOO.values():
        assert entry.source == f"{EDITION} §{entry.section.number} {entry.what}"
        assert SECTIONS[entry.section.number] is entry.section
    for section in SECTIONS.values():
        chapter, number = section.number.split(".")
        # the English edition (d2l.ai) numbers the same sections one chapter later: LeNet §7.6, AlexNet §8.1
        assert section.english_number == f"{int(chapter) + 1}.{number}"
        assert section.english_title.endswith(")") or section.english_title.endswith("ResNeXt")
    assert str(SECTIONS["6.6"]) == ("d2l-zh v2 §6.6 卷积神经网络（LeNet） (English edition §7.6 “Convolutional Neural "
                                    "Networks (LeNet)”)")


def test_the_tf32_note_quotes_the_catalogue_roofs():
    note = tf32_note()  # the H200 datasheet: 67 TFLOP/s FP32, 494.5 TFLOP/s dense TF32, 4.8 TB/s
    assert "FP32 peak (67 TFLOP/s)" in note and "is 494.5 TFLOP/s" in note
    assert "`torch.backends.cudnn.allow_tf32` is True" in note and "allow_tf32` is False" in note
    assert TF32_RIDGE_FLOP_PER_BYTE == gpu_spec("h200").tf32_flops_per_s / 4.8e12 == 494.5e12 / 4.8e12
