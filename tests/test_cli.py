"""The command line as a user runs it: ``python -m profiler ...`` in a fresh process.

The issue's example commands and a successful ``--output`` run as real processes: all at once, in parallel, in one
module fixture (each costs ~2 s of start-up); the tests read their exit codes and output. Bad input is in
``test_cli_errors.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from profiler.counting import CONVENTIONS, OTHER_OPS_CONVENTIONS, conventions, other_ops_conventions
from profiler.kinds import SCHEMA_VERSION
from profiler.models import ZOO
from profiler.util.units import human_count

ROOT = Path(__file__).resolve().parents[1]
KEPT = "an earlier result that a failed command must leave alone\n"

#: The example commands of issue 3 (``mypkg.nets:build`` is the factory from conftest's ``factory_dir``).
EXAMPLES = {
    "models": ["models"],
    "flops_nin": ["flops", "nin"],
    "googlenet_markdown": ["flops", "googlenet", "--size", "96", "--format", "markdown"],
    "densenet_params_json": ["params", "densenet", "--size", "96", "--format", "json"],
    "six_families_csv": ["flops", "alexnet", "vgg", "nin", "googlenet", "resnet", "densenet",
                         "--size", "96", "--size", "224", "--batch", "128", "--format", "csv"],
    "torchvision_resnet50": ["flops", "torchvision:resnet50"],
    "factory": ["flops", "mypkg.nets:build", "--channels", "3"],
    "resnet_train": ["flops", "resnet", "--size", "96", "--train"],
}


def _cases(work: Path) -> dict[str, list[str]]:
    cases = {
        **EXAMPLES,
        "output_json": ["flops", "nin", "--format", "json", "--output", str(work / "nin.json")],
        "help": ["flops", "--help"],
    }
    return cases


@pytest.fixture(scope="module")
def cli(factory_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Run every case of :func:`_cases` as ``python -m profiler`` from the repository root, in parallel."""
    work = tmp_path_factory.mktemp("cli")
    (work / "nin.json").write_text(KEPT)               # replaced by a successful --output run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), str(factory_dir), os.environ.get("PYTHONPATH", "")) if p)}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "profiler", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(run, argv) for name, argv in _cases(work).items()}
        runs = {name: future.result() for name, future in futures.items()}
    return SimpleNamespace(work=work, runs=runs, run=run)


def ok(cli: SimpleNamespace, case: str) -> str:
    """The stdout of a run that must succeed quietly."""
    run = cli.runs[case]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return run.stdout


# ------------------------------------------------------------------------------------------- the examples

def test_models_lists_every_zoo_model_with_the_issue_checkpoints(cli):
    lines = ok(cli, "models").splitlines()
    names = {line.split()[0] for line in lines[2:] if line and line.split()[0] in ZOO}
    assert names == set(ZOO)
    checkpoints = {"lenet": "61,706", "alexnet": "46,764,746", "vgg": "128,806,154", "nin": "1,992,166",
                   "googlenet": "5,977,530", "resnet": "11,178,378", "densenet": "758,226"}
    for name, params in checkpoints.items():
        (line,) = [line for line in lines if line.split() and line.split()[0] == name]
        assert line.endswith(params)
    assert any(line.startswith("vgg = vgg11") for line in lines)
    assert "torchvision:NAME" in lines[-1] and "module.path:callable" in lines[-1]


def test_flops_nin_table_shows_hand_counted_totals(cli):
    out = ok(cli, "flops_nin")
    assert out.startswith("nin (d2l-zh v2 §7.3 Network in Network) · input 1×1×224×224 float32 · inference")
    # Totals of tests/test_counting.py's hand counts: 762,297,352 MACs, 4,053,718 other ops, 34,360,992 bytes.
    assert ("totals: 1,992,166 params · 762.30 M MACs · 1.52 G FLOPs · 4.05 M other ops · 32.8 MiB moved"
            in out)
    assert "uncounted ops (no MAC/other-ops rule; their bytes are counted): none" in out
    (total_row,) = [line for line in out.splitlines() if line.startswith("total ")]
    assert total_row.split()[1:3] == ["1,992,166", "762.30"]


def test_flops_googlenet_markdown_is_a_github_table_with_totals(cli, flop_counter_macs):
    out = ok(cli, "googlenet_markdown")
    lines = out.splitlines()
    assert lines[0].startswith("### googlenet") and "1×1×96×96" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| layer") and set(table[1]) <= {"|", "-", ":", " "}
    assert table[-1].startswith("| total")
    macs = flop_counter_macs("googlenet", 96)
    assert f"- totals: 5,977,530 params · {human_count(macs)} MACs ·" in out


def test_params_densenet_json_has_per_layer_params_summing_to_the_hand_count(cli):
    (obj,) = json.loads(ok(cli, "densenet_params_json"))
    assert (obj["model"], obj["input_shape"], obj["mode"]) == ("densenet", [1, 1, 96, 96], "inference")
    assert obj["totals"] == {"params": 758_226, "param_bytes": 4 * 758_226}
    assert sum(layer["params"] for layer in obj["layers"]) == 758_226
    assert obj["layers"][0] == {"name": "b1.0", "type": "Conv2d", "kind": "leaf", "output_shape": [1, 64, 48, 48],
                                "params": 64 * 7 * 7 + 64, "param_bytes": 4 * (64 * 7 * 7 + 64)}


def test_csv_of_six_families_at_two_sizes_has_one_row_per_layer_and_a_total(cli, zoo_counts):
    rows = list(csv.reader(io.StringIO(ok(cli, "six_families_csv"))))
    assert rows[0] == ["model", "input_shape", "mode", "dtype", "layer", "type", "output_shape", "params", "macs",
                       "flops", "other_ops", "bytes", "intensity"]
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for line in rows[1:]:
        groups.setdefault((line[0], line[1]), []).append(line)
    expected_order = [(name, f"128×1×{size}×{size}") for name in ("alexnet", "vgg", "nin", "googlenet", "resnet",
                                                                  "densenet") for size in (96, 224)]
    assert list(groups) == expected_order
    for (name, shape), lines in groups.items():
        size = int(shape.split("×")[-1])
        stats = zoo_counts(name, size, batch=128)
        assert [line[4] for line in lines] == [layer.name for layer in stats.layers] + ["(total)"]
        total = lines[-1]
        assert int(total[8]) == sum(int(line[8]) for line in lines[:-1]) == stats.totals.macs
        assert int(total[7]) == stats.params
    assert int(groups["nin", "128×1×224×224"][-1][8]) == 128 * 762_297_352       # the NiN hand count × 128
    assert int(groups["alexnet", "128×1×224×224"][0][8]) == 128 * 33_872_256      # AlexNet conv1 × 128


def test_torchvision_resnet50_defaults_to_3_channels_224_and_matches_published_numbers(cli):
    out = ok(cli, "torchvision_resnet50")
    assert out.startswith("torchvision:resnet50 (torchvision.models.resnet50) · input 1×3×224×224")
    # ResNet50_Weights.IMAGENET1K_V1.meta: num_params 25,557,032; _ops 4.089 GMACs.
    assert "totals: 25,557,032 params · 4.09 G MACs" in out


def test_factory_model_runs_with_3_channels(cli):
    out = ok(cli, "factory")
    assert out.startswith("mypkg.nets:build (mypkg.nets.build()) · input 1×3×224×224")
    # conv 3→8 3×3 (padding 1) at 224: 8·3·9·224·224 = 10,838,016 MACs; linear 8→5: 40 MACs.
    # params: 8·3·9 + 8 = 224 and 8·5 + 5 = 45.
    assert f"totals: 269 params · {human_count(10_838_016 + 40)} MACs" in out


def test_train_flag_counts_forward_and_backward(cli, flop_counter_macs):
    out = ok(cli, "resnet_train")
    assert out.splitlines()[0].endswith("· training step")
    total = flop_counter_macs("resnet", 96, train=True)
    forward = flop_counter_macs("resnet", 96)
    assert f"totals: 11,178,378 params · {human_count(total)} MACs" in out
    assert f"forward {human_count(forward)} MACs · backward {human_count(total - forward)} MACs" in out


def test_flops_help_lists_the_conventions(cli):
    out = ok(cli, "help")
    assert "FLOPs = 2 × MACs" in out
    flat = " ".join(out.split())
    assert f"conventions: {conventions()}." in flat
    for rule in OTHER_OPS_CONVENTIONS:
        assert " ".join(rule.split()) in flat


def test_the_conventions_are_generated_from_the_rules_module():
    text = conventions()
    assert text.startswith("MAC: one multiply-accumulate of a convolution, linear layer, matrix, matrix-vector or dot "
                           "product, or one term of a triple product (nn.Bilinear);")
    assert all(f"{name}: " in text for name in CONVENTIONS)
    assert text.count(". ") == len(CONVENTIONS) - 1 and not text.endswith(".")
    assert other_ops_conventions() == sorted(OTHER_OPS_CONVENTIONS) and len(OTHER_OPS_CONVENTIONS) >= 16


def test_the_readme_quotes_every_convention_and_every_other_ops_rule():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Conventions\n"):]
    section = " ".join(section[:section.index("\n## ", 1)].split())
    missing = [f"**{name}** — {statement}." for name, statement in CONVENTIONS.items()
               if f"**{name}** — {' '.join(statement.split())}." not in section]
    missing += [f"- {rule}" for rule in other_ops_conventions() if f"- {' '.join(rule.split())}" not in section]
    assert not missing, "README.md's Conventions section lacks (paste these, from profiler/counting/rules.py):\n" + \
        "\n".join(missing)


def test_output_writes_the_file_and_nothing_to_stdout(cli):
    assert ok(cli, "output_json") == ""
    (obj,) = json.loads((cli.work / "nin.json").read_text())  # always a list, one object per configuration
    assert list(obj) == ["schema_version", "model", "model_source", "input_shape", "mode", "dtype", "convention",
                         "totals", "layers", "uncounted_ops", "notes"]
    assert obj["schema_version"] == SCHEMA_VERSION
    assert obj["convention"] == conventions()
    assert obj["totals"] == {"params": 1_992_166, "macs": 762_297_352, "flops": 2 * 762_297_352,
                             "other_ops": 4_053_718, "bytes": 34_360_992}
    assert set(obj["layers"][0]) == {"name", "type", "kind", "output_shape", "params", "macs", "flops", "other_ops",
                                     "bytes", "intensity"}
    assert not list(cli.work.glob(".*.tmp"))


def test_version_names_profiler_torch_and_torchvision(cli):
    done = cli.run(["--version"])
    assert done.returncode == 0
    assert done.stdout.startswith("profiler 0.") and "(torch 2." in done.stdout and "torchvision 0." in done.stdout


def test_flops_dtype_halves_the_bytes_moved_and_keeps_the_macs(cli):
    full, half = (json.loads(ok_run(cli, ["flops", "nin", "--size", "96", "--format", "json", "--dtype", d]))
                  for d in ("float32", "bfloat16"))
    (full,), (half,) = full, half
    assert (full["dtype"], half["dtype"]) == ("float32", "bfloat16")
    assert half["totals"]["macs"] == full["totals"]["macs"]
    conv = [(f, h) for f, h in zip(full["layers"], half["layers"], strict=True) if f["type"] == "Conv2d"]
    assert all(h["bytes"] * 2 == f["bytes"] for f, h in conv)  # input, weights, bias, output: all 2 bytes
    assert half["totals"]["bytes"] < full["totals"]["bytes"]


def test_a_forward_that_creates_tensors_without_a_device_is_counted(cli):
    text = ok_run(cli, ["flops", "mypkg.nets:MakesItsOwnTensors", "--size", "4"])
    assert "fc" in text and "Linear" in text


def test_a_compiled_model_counts_as_the_module_it_wraps(cli):
    plain, wrapped = (ok_run(cli, ["params", f"mypkg.nets:{name}", "--size", "8", "--format", "csv"])
                      for name in ("build", "compiled"))
    assert plain == wrapped.replace("mypkg.nets:compiled", "mypkg.nets:build")


def test_the_console_script_finds_a_factory_in_the_current_folder(cli, factory_dir):
    script = Path(sys.executable).with_name("profiler")
    if not script.exists():
        pytest.skip(f"the console script is not installed beside {sys.executable} (pip install -e . makes it)")
    done = subprocess.run([str(script), "flops", "mypkg.nets:build", "--size", "8"], cwd=factory_dir,
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    assert "mypkg.nets:build" in done.stdout


def ok_run(cli: SimpleNamespace, argv: list[str]) -> str:
    done = cli.run(argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gpus_lists_every_card_with_its_roofs_and_sources(cli):
    text = ok_run(cli, ["gpus"])
    assert "h100 (default)" in text and "a100-40gb" in text and "rtx4090" in text
    assert "parseChosenWorkspaceSize" in text and "dense (no 2:4 sparsity)" in text
    cards = json.loads(ok_run(cli, ["gpus", "--format", "json"]))
    assert {card["key"] for card in cards} >= {"h100", "h200", "t4", "v100-16gb", "l4"}
    t4 = next(card for card in cards if card["key"] == "t4")
    assert t4["tf32_flops_per_s"] is None and t4["cublas_workspace_bytes"] == 4096 * 1024 * 2 + 16 * 1024 * 8


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def test_the_program_exits_with_main_s_code_at_once_unless_a_profiler_or_another_thread_waits(monkeypatch, capsys):
    import sys
    import threading

    from profiler import cli

    def exit_now(code: int) -> None:
        raise _Exited(code)

    watched = cli._watched
    monkeypatch.setattr(cli.os, "_exit", exit_now)
    monkeypatch.setattr(cli, "_watched", lambda: False)  # (pytest may run under coverage)
    for argv, code in ((["flops", "nin"], 0), (["flops", "nosuch"], 2), (["--bogus"], 2)):
        with pytest.raises(_Exited) as exited:
            cli.run(argv)
        assert exited.value.code == code, argv
    assert "totals: 1,992,166 params" in capsys.readouterr().out
    # a thread that is not a daemon would be waited for by the normal exit: it runs
    release = threading.Event()
    waiting = threading.Thread(target=release.wait)
    waiting.start()
    try:
        with pytest.raises(SystemExit) as done:
            cli.run(["flops", "nin"])
        assert done.value.code == 0
    finally:
        release.set()
        waiting.join()
    # under a profiler (it writes its results at exit) the normal exit runs too
    monkeypatch.setattr(cli, "_watched", watched)
    sys.setprofile(lambda *args: None)
    try:
        with pytest.raises(SystemExit):
            cli.run(["flops", "nosuch"])
    finally:
        sys.setprofile(None)
