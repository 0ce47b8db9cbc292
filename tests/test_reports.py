"""The committed reports: regenerating them changes nothing, a failure leaves them as they were, every measured
figure comes from ``reports/data/``, and every command they show is one the CLI accepts.

Everything is computed once (``report_data``, about half a minute on two cores: the counts and memory predictions
of every zoo model); the tests then render and write from that.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import signal
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from profiler.bandwidth.fit import measurement_key
from profiler.bandwidth.timemodel import committed_calibration
from profiler.catalogue import Precision, gpu_spec
from profiler.cli import build_parser, main
from profiler.errors import ProfilerError
from profiler.format.plots import palette
from profiler.kinds import HOST_WAIT_ROW
from profiler.models.zoo import EDITION, EDITION_NAME
from profiler.site import generate as generate_module
from profiler.site.collect import BATCH, SIZES, ReportData, collect
from profiler.site.exercises import _missing_gradients
from profiler.site.figures import FIGURES, params_vs_macs, roofline, roofline_file
from profiler.site.generate import generate, render
from profiler.site.markdown import error, mib, ms, per_second, ratio
from profiler.site.measured import MEASUREMENT_FILES
from profiler.site.measured_gpu import BANDWIDTH_PATTERN, load_gpu_bandwidth
from profiler.site.pages import TIME_HEADING, model_page
from profiler.util import files as files_module
from profiler.util.units import human_bytes

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
#: Written by others, never by `report`, so never compared.
NOT_GENERATED = ("benchmarks.md",)


@pytest.fixture(scope="module")
def report_data() -> ReportData:
    return collect()


@pytest.fixture(scope="module")
def generated(report_data: ReportData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reports regenerated into a temporary folder by ``generate`` (with the data computed once)."""
    out = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate_module, "collect", lambda: report_data)
        generate(out)
    return out


def _markdown(folder: Path) -> dict[str, str]:
    files = {}
    for path in sorted(folder.rglob("*.md")):
        relative = path.relative_to(folder).as_posix()
        if relative not in NOT_GENERATED and not relative.startswith("data/"):
            files[relative] = path.read_text()
    return files


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of ``text``: (header cells, data rows)."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: ") and \
                (i == 0 or not lines[i - 1].startswith("|")):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split("|")])
            tables.append(([cell.strip() for cell in line.strip("|").split("|")], rows))
    return tables


def _commands(text: str) -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python -m profiler ")]


# --------------------------------------------------------------------------------------------- drift

def test_regenerated_markdown_matches_the_committed_reports(generated):
    fresh, committed = _markdown(generated), _markdown(REPORTS)
    assert sorted(fresh) == sorted(committed), (
        "the set of generated reports changed: run `python -m profiler report` and commit reports/ "
        f"(only generated: {sorted(set(fresh) - set(committed))}, only committed: "
        f"{sorted(set(committed) - set(fresh))})")
    diffs = ["".join(difflib.unified_diff(committed[name].splitlines(keepends=True),
                                          fresh[name].splitlines(keepends=True), f"reports/{name} (committed)",
                                          f"reports/{name} (regenerated)"))
             for name in fresh if fresh[name] != committed[name]]
    assert not diffs, "reports/ is stale — run `python -m profiler report` and commit it:\n" + "\n".join(diffs)


def test_rendering_twice_gives_identical_markdown(report_data):
    first, second = render(report_data), render(report_data)
    assert {k: v for k, v in first.items() if k.endswith(".md")} == \
        {k: v for k, v in second.items() if k.endswith(".md")}


def test_plots_are_regenerated_as_png_and_embedded(generated):
    comparison = (generated / "comparison.md").read_text()
    for name in FIGURES:
        assert (generated / "figures" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"](figures/{name})" in comparison


def test_every_report_says_how_to_regenerate_it(generated):
    for name, text in _markdown(generated).items():
        assert "`python -m profiler report`" in "\n".join(text.splitlines()[:4]), name


def test_cli_report_writes_the_folder_and_lists_it(report_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    assert main(["report", "--out", str(tmp_path / "out")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert f"wrote {tmp_path / 'out' / 'comparison.md'}" in listed
    assert (tmp_path / "out" / "models" / "densenet201.md").is_file()


def test_report_into_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("")
    assert main(["report", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- atomicity

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _previous_set(generated: Path, out: Path) -> dict[str, bytes]:
    """``out`` as an earlier run left it: every generated file (changed, so that a new set shows), the committed
    data and the benchmarks' page; returns its snapshot."""
    for relative, content in _snapshot(generated).items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(content + b"\nprevious\n")
    (out / "data").mkdir()
    (out / "data" / "reference.json").write_text('{"runs": []}\n')
    (out / "benchmarks.md").write_text("written by the benchmarks\n")
    return _snapshot(out)


def _staging_folders(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(files_module.STAGING_PREFIX)]


def test_an_unwritable_destination_fails_before_any_work(monkeypatch, capsys):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc, a folder nothing can be created in")

    def collect_must_not_run() -> ReportData:
        raise AssertionError("collect ran although the destination cannot be written")

    monkeypatch.setattr(generate_module, "collect", collect_must_not_run)
    assert main(["report", "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("profiler: error: cannot write --out /proc/x")


def test_a_folder_that_is_not_a_reports_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine"
    (mine / "models").mkdir(parents=True)
    (mine / "models" / "notes.md").write_text("my own notes\n")
    monkeypatch.setattr(generate_module, "collect", lambda: pytest.fail("collect ran"))
    assert main(["report", "--out", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "models" / "notes.md").read_text() == "my own notes\n"


def test_a_failing_renderer_leaves_the_previous_reports_untouched(report_data, generated, tmp_path, monkeypatch):
    out = tmp_path / "reports"
    before = _previous_set(generated, out)

    def broken(data: ReportData) -> str:
        raise RuntimeError("renderer failed on purpose")

    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    monkeypatch.setattr(generate_module, "claims_page", broken)  # rendered after README, comparison, models
    with pytest.raises(RuntimeError, match="on purpose"):
        generate(out)
    assert _snapshot(out) == before
    assert not _staging_folders(out)


def test_a_failing_write_leaves_the_previous_set_whole_and_no_staging_folder(report_data, generated, tmp_path,
                                                                               monkeypatch):
    out = tmp_path / "reports"
    before = _previous_set(generated, out)
    real_write, staged = files_module._write_staged, []

    def disk_full_halfway(path: Path, data: bytes) -> None:
        if len(staged) == 5:
            raise OSError(28, "No space left on device (on purpose)")
        staged.append(path)
        real_write(path, data)

    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    monkeypatch.setattr(files_module, "_write_staged", disk_full_halfway)
    with pytest.raises(ProfilerError, match="on purpose"):  # a one-line user error, not a traceback
        generate(out)
    assert len(staged) == 5
    assert _snapshot(out) == before
    assert not _staging_folders(out)


def test_an_interruption_while_staging_leaves_the_previous_set_and_no_staging_folder(report_data, generated,
                                                                                    tmp_path, monkeypatch):
    out = tmp_path / "reports"
    before = _previous_set(generated, out)
    real_write, staged = files_module._write_staged, []

    def interrupted_halfway(path: Path, data: bytes) -> None:
        if len(staged) == len(before) // 2:
            raise KeyboardInterrupt
        staged.append(path)
        real_write(path, data)

    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    monkeypatch.setattr(files_module, "_write_staged", interrupted_halfway)
    with pytest.raises(KeyboardInterrupt):
        generate(out)
    assert staged and _snapshot(out) == before
    assert not _staging_folders(out)


def test_an_interruption_while_renaming_waits_until_the_whole_set_is_in_place(report_data, generated, tmp_path,
                                                                               monkeypatch):
    out = tmp_path / "reports"
    _previous_set(generated, out)
    real_replace, renamed = files_module.os.replace, []

    def ctrl_c_at_the_first_rename(src: str, dst: str) -> None:
        if not renamed:
            signal.raise_signal(signal.SIGINT)  # held back: the handler only notes it
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    monkeypatch.setattr(files_module.os, "replace", ctrl_c_at_the_first_rename)
    with pytest.raises(KeyboardInterrupt):  # delivered once every file is renamed
        generate(out)
    assert len(renamed) == len(_snapshot(generated))
    fresh = _snapshot(out)
    assert all(fresh[relative] == content for relative, content in _snapshot(generated).items())
    assert not _staging_folders(out)


def test_a_destination_that_is_a_folder_fails_before_any_rename(report_data, generated, tmp_path, monkeypatch):
    out = tmp_path / "reports"
    _previous_set(generated, out)
    (out / "claims.md").unlink()
    (out / "claims.md").mkdir()
    before = _snapshot(out)
    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    with pytest.raises(ProfilerError, match="claims.md: it is a folder"):
        generate(out)
    assert _snapshot(out) == before
    assert not _staging_folders(out)


def test_data_and_other_files_are_never_modified_and_stale_generated_files_are_removed(report_data, generated,
                                                                                         tmp_path, monkeypatch):
    out = tmp_path / "reports"
    _previous_set(generated, out)
    (out / "models" / "a_model_no_longer_in_the_zoo.md").write_text("stale\n")
    (out / "figures" / "an_old_plot.png").write_bytes(b"stale")
    kept = [out / "data" / "reference.json", out / "benchmarks.md", *sorted((REPORTS / "data").iterdir())]
    stamps = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in kept}
    monkeypatch.setattr(generate_module, "collect", lambda: report_data)
    generate(out)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in kept} == stamps
    assert not (out / "models" / "a_model_no_longer_in_the_zoo.md").exists()
    assert not (out / "figures" / "an_old_plot.png").exists()
    fresh = _snapshot(out)
    assert all(fresh[relative] == content for relative, content in _snapshot(generated).items())


# --------------------------------------------------------------------------------------------- provenance

def _reference_runs() -> list[dict]:
    runs = []
    for name in MEASUREMENT_FILES:
        runs += json.loads((REPORTS / "data" / name).read_text())["runs"]
    return runs


def _allowed_measured_cells() -> set[str]:
    """Every way a report may print a number taken from the committed JSON (value, or ratio 224/96)."""
    runs = _reference_runs()
    allowed = {"-", "not measured"}
    byte_fields = ("peak_allocated", "peak_reserved", "nvml_used", "baseline_allocated")
    for run in runs:
        for field in byte_fields:
            allowed |= {mib(run[field]), human_bytes(run[field])}
        allowed |= {ms(run["ms_per_step"]), per_second(run["batch"] / (run["ms_per_step"] / 1000))}
    for high in runs:
        for low in runs:
            if (high["model"], high["train"], high["size"], low["size"]) == (low["model"], low["train"], *SIZES[::-1]):
                for field in (*byte_fields, "ms_per_step"):
                    allowed.add(ratio(high[field], low[field]))
    return allowed


def _is_measured(header: str, row_label: str) -> bool:
    label = f"{header} | {row_label}"
    return "measured" in label and not any(word in label for word in ("derived", "error", "predicted"))


def test_every_measured_figure_comes_from_reports_data(generated):
    allowed = _allowed_measured_cells()
    checked = 0
    for name, text in _markdown(generated).items():
        for headers, rows in _tables(text):
            for row in rows:
                for header, cell in zip(headers[1:], row[1:], strict=True):
                    if _is_measured(header, row[0]):
                        assert cell in allowed, f"{name}: '{cell}' in column '{header}', row '{row[0]}'"
                        checked += 1
    assert checked > 100


def test_derived_figures_are_counted_work_over_measured_time(report_data, generated):
    runs = {(r["model"], r["size"], r["train"]): r for r in _reference_runs() if r["batch"] == BATCH}
    text = (generated / "comparison.md").read_text()
    sections = re.split(r"^## (\d+)×\d+ input$", text, flags=re.M)
    checked = 0
    for size, body in zip(sections[1::2], sections[2::2], strict=True):
        for headers, rows in _tables(body):
            for row in rows:
                for header, cell in zip(headers, row, strict=True):
                    if "derived" not in header:
                        continue
                    train = {"inference": False, "training": True}[row[1]]
                    sd = report_data.models[row[0]].sizes[int(size)]
                    stats = sd.train if train else sd.inference
                    step = runs[row[0], int(size), train]["ms_per_step"]
                    seconds = step / 1000
                    expected = (f"{stats.totals.flops / seconds / 1e12:,.1f}" if "TFLOP" in header
                                else f"{stats.totals.bytes / seconds / 1e12:,.2f}")
                    assert cell == expected, (row[0], size, header)
                    checked += 1
    assert checked == 2 * 2 * 2 * 6


def test_comparison_quotes_the_provenance_of_its_measurements(generated):
    text = (generated / "comparison.md").read_text()
    for name in MEASUREMENT_FILES:
        provenance = json.loads((REPORTS / "data" / name).read_text())["provenance"]
        assert f"`reports/data/{name}`: {provenance['device']}" in text
        assert provenance["date"] in text


def test_predicted_memory_says_which_gpu(generated):
    text = (generated / "comparison.md").read_text()
    for headers, _ in _tables(text):
        for header in headers:
            if "predicted" in header:
                assert "predicted for NVIDIA H200" in header or header.endswith("predicted"), header


def test_no_per_layer_time_is_invented(generated):
    """Without a committed GPU run of kernel times, model pages show predicted per-layer time only, and say so."""
    assert not list((REPORTS / "data").glob(BANDWIDTH_PATTERN))
    for name, text in _markdown(generated).items():
        if name.startswith("models/"):
            assert "No measured time per layer is committed yet" in text, name
            assert not any("measured" in header for headers, _ in _tables(text) for header in headers
                           if "ms/step" in header), name


# --------------------------------------------------------------------------------------------- commands

def test_every_command_shown_is_one_the_cli_accepts(generated):
    parser = build_parser()
    commands = [c for text in _markdown(generated).values() for c in _commands(text)]
    assert len(commands) > 50
    for line in commands:
        parser.parse_args(shlex.split(line)[3:])


def test_googlenet_smallest_input_is_found_by_the_tool(report_data, generated):
    assert report_data.smallest_sizes["googlenet"] == 1
    assert "python -m profiler flops googlenet --size 1" in (generated / "exercises.md").read_text()


# --------------------------------------------------------------------------------------------- tables and time

def _section(text: str, heading: str) -> str:
    """The body of the markdown section whose heading line is ``heading``, up to the next heading of its level."""
    level = heading.split(" ")[0]
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"\n{level} ", body, maxsplit=1)[0]


def _cell_ms(cell: str) -> float:
    return float(cell.split(" ")[0].replace(",", ""))


def test_comparison_tables_have_at_most_seven_columns(generated):
    widths = [len(headers) for headers, _ in _tables((generated / "comparison.md").read_text())]
    # per size: cost and time two tables each, memory three (allocated, reserved, the fit verdict)
    assert len(widths) == 2 * 7 + 3 and max(widths) <= 7


def test_the_tf32_reason_stands_right_above_achieved_rates_beyond_the_fp32_peak(generated):
    paragraphs = (generated / "comparison.md").read_text().split("\n\n")
    fp32_tflops = gpu_spec("h200").fp32_flops_per_s / 1e12
    beyond = 0
    for before, paragraph in zip(paragraphs, paragraphs[1:], strict=False):
        if paragraph.startswith("| model") and "achieved TFLOP/s" in paragraph.splitlines()[0]:
            assert "TF32 tensor cores" in before and "`torch.backends.cudnn.allow_tf32` is True" in before
            assert f"FP32 peak ({fp32_tflops:g} TFLOP/s)" in before
            [(headers, rows)] = _tables(paragraph)
            column = next(i for i, header in enumerate(headers) if "achieved TFLOP/s" in header)
            beyond += sum(float(row[column]) > fp32_tflops for row in rows)
    assert beyond >= 4  # AlexNet and VGG at 224 exceed the FP32 peak: the reason is needed


def test_predicted_step_times_stand_beside_measured_with_in_sample_and_lomo_errors(report_data, generated):
    calibration = committed_calibration()
    fitted = calibration.errors["per_configuration_percent"]
    runs = {(r["model"], r["size"], r["train"]): r["ms_per_step"] for r in _reference_runs() if r["batch"] == BATCH}
    text = (generated / "comparison.md").read_text()
    assert f"fitted on these very 24 step times (`{calibration.fitted_on[0]}`" in text and "proves little" in text
    checked = 0
    for size in SIZES:
        section = text.split(f"\n## {size}×{size} input\n")[1].split("\n## ")[0]
        headers, rows = next(t for t in _tables(section) if "ms/step, measured" in t[0])
        assert headers == ["model", "step", "ms/step, measured", "ms/step, predicted for NVIDIA H200", "error",
                           "error, LOMO", "bound, predicted"]
        for name, step, measured, predicted, in_sample, lomo, bound in rows:
            train = step == "training"
            sd = report_data.models[name].sizes[size]
            result = sd.time_train if train else sd.time_inference
            key = measurement_key(name, size, train, BATCH, "h200")
            assert (measured, predicted, bound) == (ms(runs[name, size, train]), ms(result.step_ms), result.bound)
            assert in_sample == error(result.step_ms, runs[name, size, train])
            assert lomo == f"{fitted[key]['lomo']:+.1f} %"
            # the committed fit's own in-sample error agrees with the prediction made here (coefficients stored to
            # 4 significant digits): the coefficients and the model that uses them are in step
            assert 100 * (result.step_ms / runs[name, size, train] - 1) == pytest.approx(fitted[key]["in_sample"],
                                                                                         abs=0.2)
            checked += 1
    assert checked == 24


def test_every_model_page_shows_predicted_time_per_layer_adding_up_to_the_step(report_data, generated):
    for name, model in report_data.models.items():
        text = (generated / "models" / f"{name}.md").read_text()
        assert "No roofline is drawn" not in text and "no GPU timing" not in text.lower()
        section = _section(text, f"## {TIME_HEADING}")
        tables = _tables(section)
        assert len(tables) == len(model.sizes)
        for (headers, rows), sd in zip(tables, model.sizes.values(), strict=True):
            assert headers == ["layer", "type", "inference: ms/step (share), predicted",
                               "training: ms/step (share), predicted", "bound (inference / training), predicted"]
            assert rows[-1][0] == "step"
            for column, result in ((2, sd.time_inference), (3, sd.time_train)):
                cells = [row[column] for row in rows[:-1] if row[column] != "-"]
                assert sum(map(_cell_ms, cells)) == pytest.approx(result.step_ms, abs=0.0005 * len(cells) + 1e-9)
                assert rows[-1][column] == f"{result.step_ms:,.3f} (100.0 %)"
            if sd.time_train.idle_ms:  # a host-bound step shows the GPU's wait as a row of its own
                assert rows[-2][0] == HOST_WAIT_ROW and rows[-2][-1].endswith("host")
        assert f"![Roofline of {name}, predicted for NVIDIA H200" in text
        assert f"](../figures/{roofline_file(name)})" in text
        assert (generated / "figures" / roofline_file(name)).is_file()


def _synthetic_gpu_times(report_data: ReportData, folder: Path) -> dict[bool, dict[str, float]]:
    """A gpu_bandwidth_h200.json (as benchmarks/gpu_run.py writes it) with AlexNet at 224, both modes, whose layer
    ``i`` took (i + 1) µs; returns the measured ms per row, per mode."""
    sd = report_data.models["alexnet"].sizes[224]
    runs, times = [], {}
    for train, predicted in ((False, sd.time_inference), (True, sd.time_train)):
        layers = [{"name": row.name, "type": row.type, "category": row.category, "ms_per_step": (i + 1) / 1000,
                   "forward_ms": (i + 1) / 1000, "backward_ms": 0.0, "share": 0.0, "flops": row.flops,
                   "bytes": row.bytes, "flops_per_s": None, "bytes_per_s": None, "compute_roof": None,
                   "compute_peak_fraction": None, "bandwidth_peak_fraction": None, "bound": None}
                  for i, row in enumerate(predicted.layers)]
        times[train] = {layer["name"]: layer["ms_per_step"] for layer in layers}
        total = sum(times[train].values())
        runs.append({"model": "alexnet", "input_shape": [BATCH, 1, 224, 224], "mode": "train" if train else "inference",
                     "step_ms": total + 0.5, "profiled_step_ms": total + 0.6, "overhead_percent": 2.0,
                     "busy_ms": total, "idle_ms": 0.0, "attributed_ms": total, "layers": layers, "nvml": None})
    doc = {"dry_run": False, "peaks": {"copy_bytes_per_s": 4.2e12}, "datasheet": None, "runs": runs, "failed": [],
           "provenance": {"device": "NVIDIA H200", "driver": "580", "torch": "2.11", "cuda": "13.0",
                          "cudnn": "91900", "date": "2026-12-01"}}
    (folder / "gpu_bandwidth_h200.json").write_text(json.dumps(doc))
    return times


def test_measured_per_layer_times_stand_beside_the_prediction_once_a_gpu_run_is_committed(report_data, tmp_path):
    times = _synthetic_gpu_times(report_data, tmp_path)  # never under reports/data/
    data = replace(report_data, measured_times=load_gpu_bandwidth(tmp_path))
    text = model_page(data, "alexnet")
    assert "Measured kernel times per layer stand beside the prediction" in text
    small, large = _tables(_section(text, f"## {TIME_HEADING}"))
    assert len(small[0]) == 5  # nothing measured at 96
    headers, rows = large
    assert headers == ["layer", "type", "inference: ms/step (share), predicted",
                       "inference: kernel ms/step (share), measured", "training: ms/step (share), predicted",
                       "training: kernel ms/step (share), measured", "bound (inference / training), predicted"]
    by_name = {row[0]: row for row in rows}
    for train, column in ((False, 3), (True, 5)):
        step_ms = sum(times[train].values()) + 0.5
        assert by_name["3"][column] == f"{times[train]['3']:.3f} ({100 * times[train]['3'] / step_ms:.1f} %)"
        assert by_name["step"][column] == f"{step_ms:,.3f} (100.0 %)"
    assert by_name["loss"][3] == "-" and by_name["loss"][5] != "-"  # the loss runs in training only


def test_activation_ranking_gives_each_amount_one_row_with_every_layer_that_allocates_it(report_data, generated):
    for name, model in report_data.models.items():
        text = (generated / "models" / f"{name}.md").read_text()
        [(headers, rows)] = _tables(_section(text, "### By activation memory (training step, batch 128, predicted "
                                                   "for NVIDIA H200)"))
        assert headers[0] == "layers" and len({row[2] for row in rows}) == len(rows)
        amounts = model.sizes[224].memory_train.layers
        for layers, _, each, _ in rows:
            holders = [layer for layer, nbytes in amounts.items() if human_bytes(nbytes) == each]
            listed = layers.split(" and ")[0].split(", ")
            assert listed == holders[:4] and (len(holders) <= 4 or layers.endswith(f"and {len(holders) - 4} more"))
    nin = _tables(_section((generated / "models" / "nin.md").read_text(), "### By activation memory (training "
                                                                            "step, batch 128, predicted for NVIDIA "
                                                                            "H200)"))[0][1]
    assert nin[0][0].count(",") == 3  # NiN's first block: four layers (and more) with one map size


def test_every_section_number_names_its_edition(generated):
    for name, text in _markdown(generated).items():
        for line in text.splitlines():
            if "§" in line:
                assert EDITION in line or "edition" in line, (name, line)
    readme = (generated / "README.md").read_text()
    assert EDITION_NAME in readme and "chapter 8" in readme


# --------------------------------------------------------------------------------------------- exercises 7.1.x

def test_alexnet_gradients_at_the_peak_are_those_of_the_layers_backward_has_reached(report_data, generated):
    layers = report_data.models["alexnet"].sizes[224].layers.layers
    # the first convolutions' parameters by hand: (11·11 + 1)·96, (96·25 + 1)·256, (256·9 + 1)·384, (384·9 + 1)·384
    first = [11_712, 614_656, 885_120, 1_327_488]
    assert _missing_gradients(layers, 4 * sum(first[:3])) == ["0", "3", "6"]
    assert _missing_gradients(layers, 4 * sum(first) + 1024) == ["0", "3", "6", "8"]  # allocator rounding
    assert _missing_gradients(layers, 4 * sum(first[:3]) // 2) is None
    section = _section((generated / "exercises.md").read_text(), "## 7.1.3")
    weights = {result.breakdown["weights"] for result in report_data.alexnet_batches.values()}
    assert len(weights) == 1 and mib(weights.pop()) == mib(4 * 46_764_746) == "178.4"
    predicted = _tables(section)[0]
    assert predicted[0][4:] == ["weights, predicted", "gradients at the peak, predicted"]
    assert len({row[4] for row in predicted[1]}) == 1
    for batch, result in report_data.alexnet_batches.items():
        missing = result.breakdown["weights"] - result.breakdown["gradients"]
        assert missing > 0 and f"{human_bytes(missing)} (layers " in section and f"missing at batch {batch}" in section
    assert "do not depend on the batch" not in section.split("The gradients *at the peak*")[1]


def test_alexnet_time_answer_names_the_layers_the_prediction_finds_memory_bound(report_data, generated):
    sd = report_data.models["alexnet"].sizes[224]
    section = _section((generated / "exercises.md").read_text(), "## 7.1.4")
    rows = {row.name: row for row in sd.time_inference.layers}
    memory_bound = [row for row in rows.values() if row.flops and row.bound == "memory"]
    assert [row.name for row in memory_bound] == ["0"]
    assert "and, at batch 128, Conv2d 0 (51.3 FLOP/B, under the TF32 ridge at 103)." in section
    # the classifier's last layer is under its ridge yet compute-bound: 128 × 10 outputs are one GEMM tile
    assert rows["20"].bound == "compute" and rows["20"].intensity < gpu_spec("h200").ridge(Precision.FP32)
    assert ("Linear 20 (4.6 FLOP/B, under the FP32 ridge at 14) is compute-bound all the same: its matrix product "
            "makes too few output tiles to keep the NVIDIA H200's 132 SMs busy") in section
    # what the prose says of the others
    assert all(rows[n].bound == "compute" and rows[n].compute_roof == "tf32" for n in ("3", "6", "8", "10"))
    assert all(rows[n].bound == "compute" and rows[n].compute_roof == "fp32" for n in ("14", "17"))
    headers, table_rows = _tables(section)[-1]
    assert len(headers) == 7 and [r[0] for r in table_rows][:3] == ["0", "1", "2"]


# --------------------------------------------------------------------------------------------- figures

def _png_size_and_dpi(png: bytes) -> tuple[int, int, float]:
    """Width and height in pixels (IHDR) and resolution (pHYs, pixels per metre → per inch) of a PNG."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    at = png.index(b"pHYs")
    per_metre_x, per_metre_y, unit = struct.unpack(">IIB", png[at + 4:at + 13])
    assert unit == 1 and per_metre_x == per_metre_y
    return width, height, per_metre_x * 0.0254


def test_every_figure_is_drawn_at_150_dpi_and_at_least_960_pixels_wide(report_data, generated):
    files = sorted(p.name for p in (generated / "figures").iterdir())
    assert files == sorted([*FIGURES, *(roofline_file(name) for name in report_data.models)])
    for name in files:
        width, height, dpi = _png_size_and_dpi((generated / "figures" / name).read_bytes())
        assert dpi == pytest.approx(150, abs=0.1) and width >= 960 and height >= 600, name


def _figures(report_data: ReportData) -> dict[str, Figure]:
    sd = report_data.models["alexnet"].sizes[224]
    return {**{file: draw(report_data) for file, (_, draw) in FIGURES.items()},
            "roofline": roofline(sd.time_inference, sd.time_train)}


def test_every_figure_has_a_legend_and_only_colour_blind_safe_colours(report_data):
    safe = {to_rgb(c) for c in palette()} | {to_rgb(c) for c in ("black", "white", "gray", "dimgray", "darkgray")}
    for name, fig in _figures(report_data).items():
        drawn = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        assert drawn and any(ax.get_legend() is not None for ax in drawn), name
        for ax in drawn:
            colours = [p.get_facecolor() for p in ax.patches] + [
                c for collection in ax.collections for c in collection.get_facecolors()]
            assert colours and all(to_rgb(c[:3]) in safe for c in colours), name


def test_params_vs_macs_puts_lenet_at_its_book_size_and_labels_every_model_without_overlap(report_data, text_box):
    fig = params_vs_macs(report_data)
    ax = fig.axes[0]
    labels = {text.get_text(): text for text in ax.texts}
    assert sorted(labels) == sorted(report_data.models)
    assert labels["lenet"].xy == (61_706, 416_520)  # LeNet at 28×28, by hand: 117,600 + 240,000 + 58,920 MACs
    assert labels["alexnet"].xy == (46_764_746, report_data.models["alexnet"].sizes[224].layers.totals.macs)
    renderer = fig.canvas.get_renderer()
    boxes = [text_box(text, renderer) for text in labels.values()]
    boxes.append(ax.get_legend().get_window_extent(renderer))
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert {text.get_text() for text in ax.get_legend().get_texts()} >= {"LeNet (chapter 6), at its book input "
                                                                         "28×28"}
