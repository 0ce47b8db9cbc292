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
from pathlib import Path

import pytest

from profiler.cli import build_parser, main
from profiler.errors import ProfilerError
from profiler.site import generate as generate_module
from profiler.site.collect import BATCH, SIZES, ReportData, collect
from profiler.site.figures import FIGURES
from profiler.site.generate import generate, render
from profiler.site.markdown import mib, ms, per_second, ratio
from profiler.site.measured import MEASUREMENT_FILES
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
                    train = header.startswith("training")
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
    for name, text in _markdown(generated).items():
        if name.startswith("models/"):
            assert "no gpu timing per layer is committed yet" in text.lower(), name


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
