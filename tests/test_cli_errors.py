"""Bad input, through the real command line: every case is a ``python -m profiler`` process.

A user mistake gets exactly one line on stderr that says what to do, exit code 2, nothing on stdout, no traceback,
and leaves an existing ``--output`` file untouched. Out of GPU memory exits with 3 (one configuration) or is recorded
in a sweep. NVML missing is not an error. The processes run all at once, in parallel, in one module fixture (each
costs ~2 s of start-up).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
KEPT = "an earlier result that a failed command must leave alone\n"

#: case → (arguments, fragments the one-line error must contain). Every case writes to --output kept.json.
CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "unknown_model": (["flops", "nosuchnet"], ("unknown model 'nosuchnet'", "python -m profiler models")),
    "misspelled_model": (["flops", "alexnt"], ("unknown model 'alexnt'", "did you mean alexnet")),
    "torchvision_unknown": (["flops", "torchvision:nosuchmodel"],
                            ("torchvision has no classification model 'nosuchmodel'",)),
    "module_missing": (["flops", "nosuchmodule:f"], ("cannot import 'nosuchmodule' for nosuchmodule:f",)),
    "import_fails": (["flops", "mypkg.missing_dep:build"], ("cannot import 'mypkg.missing_dep'",)),
    "import_raises": (["flops", "mypkg.broken:build"], ("importing 'mypkg.broken'", "ZeroDivisionError")),
    "factory_raises": (["flops", "mypkg.nets:explodes"], ("raised RuntimeError while building",)),
    "factory_not_module": (["flops", "mypkg.nets:not_a_module"], ("returned dict, not a torch.nn.Module",)),
    "factory_missing": (["flops", "mypkg.nets:nothere"], ("module 'mypkg.nets' has no callable 'nothere'",)),
    "size_zero": (["flops", "nin", "--size", "0"], ("--size must be between 1 and 8192 (got 0)",)),
    "size_negative": (["flops", "nin", "--size", "-1"], ("--size must be between 1 and 8192 (got -1)",)),
    "size_too_large": (["flops", "nin", "--size", "8193"], ("--size must be between 1 and 8192 (got 8193)",)),
    "size_text": (["flops", "nin", "--size", "abc"], ("--size takes a whole number, not 'abc'",)),
    # NiN at 66: 66 → 14 → 6 → 2, and the third 3×3 max pool (layer 5) has no room; 67 works.
    "size_too_small": (["flops", "nin", "--size", "66"],
                       ("66×66 input is too small", "layer 5 (MaxPool2d)", "smallest size that works is 67")),
    "batch_zero": (["flops", "nin", "--batch", "0"], ("--batch must be at least 1 (got 0)",)),
    "channels_zero": (["flops", "nin", "--channels", "0"], ("--channels must be between 1 and 4096 (got 0)",)),
    "unknown_format": (["flops", "nin", "--format", "xml"], ("invalid choice: 'xml'",)),
    # resnet50's first convolution takes 3 channels: the forward fails on a 1-channel input
    "forward_fails": (["flops", "torchvision:resnet50", "--channels", "1"],
                      ("the forward failed on input [1, 1, 224, 224]", "layer conv1 (Conv2d)", "--channels")),
    "memory_too_small": (["memory", "densenet", "--size", "20", "--predict"],
                         ("20×20 input is too small", "smallest size that works is 29")),
    "bandwidth_predict_with_device": (["bandwidth", "nin", "--predict", "--device", "cpu"],
                                      ("argument --device: not allowed with argument --predict",)),
    "bandwidth_unknown_gpu": (["bandwidth", "nin", "--predict", "--gpu", "h900"], ("no GPU 'h900'", "h100")),
    "bandwidth_bad_gpu_memory": (["bandwidth", "nin", "--predict", "--gpu-memory", "lots"],
                                 ("--gpu-memory 'lots' is not a size",)),
    "optimizer_without_train": (["memory", "nin", "--optimizer", "adam"], ("--optimizer applies to a training step",
                                                                          "add --train")),
    "checkpoint_without_train": (["memory", "nin", "--checkpoint"], ("--checkpoint applies to a training step",)),
    "bandwidth_optimizer_without_train": (["bandwidth", "nin", "--predict", "--optimizer", "adam"],
                                          ("--optimizer applies to a training step",)),
    "predict_with_device": (["bandwidth", "nin", "--predict", "--device", "cpu"], ("not allowed with argument",)),
    "bandwidth_measured_gpu": (["bandwidth", "nin", "--device", "cpu", "--gpu", "h200"], ("add --predict",)),
}
if not torch.cuda.is_available():
    CASES["measure_without_gpu"] = (["memory", "nin", "--measure"], ("needs a CUDA GPU", "--predict"))
    CASES["bandwidth_cuda_without_gpu"] = (["bandwidth", "nin", "--device", "cuda"], ("--device cpu",))


@pytest.fixture(scope="module")
def runs(factory_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every case of :data:`CASES` (writing into its own kept file) plus the unwritable-output cases."""
    work = tmp_path_factory.mktemp("errors")
    readonly = work / "readonly"
    readonly.mkdir()
    (readonly / "kept.json").write_text(KEPT)
    readonly.chmod(0o555)
    argvs = {name: [*argv, "--output", str(work / f"{name}.json")] for name, (argv, _) in CASES.items()}
    for name in CASES:
        (work / f"{name}.json").write_text(KEPT)
    argvs["output_missing_folder"] = ["flops", "lenet", "--output", str(work / "missing" / "out.json")]
    argvs["output_unwritable"] = ["flops", "lenet", "--output", "/proc/profiler-test.json"]
    argvs["output_readonly_folder"] = ["flops", "lenet", "--output", str(readonly / "kept.json")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), str(factory_dir), os.environ.get("PYTHONPATH", "")) if p)}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "profiler", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    try:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            futures = {name: pool.submit(run, argv) for name, argv in argvs.items()}
            done = {name: future.result() for name, future in futures.items()}
    finally:
        readonly.chmod(0o755)  # let pytest clean the folder up
    return SimpleNamespace(work=work, runs=done)


def assert_user_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, nothing on stdout, exactly one line on stderr starting `profiler: error:`, no traceback."""
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith("profiler: error: ") and run.stderr.endswith("\n"), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in run.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_the_output_file_alone(runs, case):
    assert_user_error(runs.runs[case], *CASES[case][1])
    assert (runs.work / f"{case}.json").read_text() == KEPT
    assert not list(runs.work.glob(".*.tmp"))


def test_output_into_a_missing_folder_says_create_it(runs):
    assert_user_error(runs.runs["output_missing_folder"], "does not exist", "create it first")
    assert not (runs.work / "missing").exists()


def test_output_where_nobody_can_write_is_a_user_error(runs):
    assert_user_error(runs.runs["output_unwritable"], "cannot write --output /proc/profiler-test.json")


@pytest.mark.skipif(IS_ROOT, reason="root may write into a read-only folder; run as a normal user to check this")
def test_output_into_a_read_only_folder_keeps_the_old_file(runs):
    assert_user_error(runs.runs["output_readonly_folder"], "cannot write --output")
    assert (runs.work / "readonly" / "kept.json").read_text() == KEPT


# ---------------------------------------------------------------------------------------------- out of memory

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_out_of_memory_exits_3_with_what_was_needed():
    proc = subprocess.run([sys.executable, "-m", "profiler", "memory", "vgg", "--size", "224", "--batch", "200000",
                           "--measure"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr
    assert "ran out of GPU memory" in proc.stderr and "Traceback" not in proc.stderr


def _pretend_an_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA as the memory command sees it, without a GPU: an H100 80GB of 85,520,809,984 B as device 0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=85_520_809_984))


def test_out_of_memory_in_a_sweep_is_recorded_and_the_sweep_goes_on(monkeypatch):
    from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
    from profiler.memory import measure, runner

    def fake_measure(config):
        if config["size"] == 224:
            raise ProfilerError("nin at [128, 1, 224, 224] ran out of GPU memory", exit_code=EXIT_OUT_OF_MEMORY)
        return runner.predict_config(config["name"], config["size"], config["batch"])

    monkeypatch.setattr(measure, "measure_in_subprocess", fake_measure)
    _pretend_an_h100(monkeypatch)
    results = runner.peak_memory_configs(["nin"], [96, 224], batch=128, measure=True, gpu="h100")
    assert [r.out_of_memory for r in results] == [False, True]
    assert "ran out of GPU memory" in results[1].notes[0]
    assert results[1].verdict.fits and results[1].verdict.held is False   # predicted to fit, ran out of memory


def test_out_of_memory_of_a_single_configuration_is_exit_3(monkeypatch, capsys):
    from profiler.cli import main
    from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
    from profiler.memory import measure

    def fake_measure(config):
        raise ProfilerError("vgg ran out of GPU memory: needed 2 TiB, the device has 79.1 GiB",
                            exit_code=EXIT_OUT_OF_MEMORY)

    monkeypatch.setattr(measure, "measure_in_subprocess", fake_measure)
    _pretend_an_h100(monkeypatch)
    assert main(["memory", "vgg", "--measure"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "ran out of GPU memory" in err


def test_nvml_missing_is_reported_not_an_error(monkeypatch):
    import builtins

    from profiler.device import nvml_used_bytes

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    used, note = nvml_used_bytes(0)
    assert used is None and "nvidia-ml-py" in note
