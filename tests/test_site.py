"""The reports generator's own parts: the course content held as data and tied to the code that answers it."""

from __future__ import annotations

from profiler.site.claims import CHECKS
from profiler.site.content import CLAIMS, EXERCISES, NOTES_000, Citation, claim
from profiler.site.exercises import ANSWERS
from profiler.site.markdown import anchor


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
