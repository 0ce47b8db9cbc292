"""What a user installs: the wheel's contents, the declared versions, the license and CI's script."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_command(comment: str) -> str:
    """The command under ``# {comment}`` in the README's quick start."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(f"# {comment}") + 1]


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def declared_minimum(package: str) -> str:
    requirements = setup_cfg()["options"]["install_requires"].splitlines()
    (minimum,) = [line.split(">=")[1] for line in requirements if line.startswith(f"{package}>=")]
    return minimum


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built the way pip builds one for a non-editable install, from a copy of the tree (the build writes
    ``build/`` and ``*.egg-info`` beside the sources)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "profiler", source / "profiler", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("profiler-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_every_data_file_the_package_reads(wheel):
    data_files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "profiler").rglob("*")
                        if path.is_file() and path.suffix not in (".py", ".pyc"))
    assert "profiler/memory/calibration.json" in data_files
    assert "profiler/bandwidth/time_calibration.json" in data_files
    missing = [name for name in data_files if name not in wheel.namelist()]
    assert not missing, f"add to [options.package_data] in setup.cfg: {missing}"


def test_the_wheel_carries_the_mit_license_the_metadata_names(wheel):
    (license_name,) = [name for name in wheel.namelist() if name.endswith("/LICENSE")]
    text = wheel.read(license_name).decode()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the profiler authors\n")
    metadata = wheel.read(next(name for name in wheel.namelist() if name.endswith("/METADATA"))).decode()
    assert "License: MIT" in metadata.splitlines()
    assert f"Requires-Dist: torch>={declared_minimum('torch')}" in metadata.splitlines()


def test_the_declared_minimum_versions_are_the_oldest_tested_ones():
    readme = (ROOT / "README.md").read_text()
    tested = readme[readme.index("Tested with"):].split("\n\n")[0]
    pairs = re.findall(r"torch (\d+\.\d+)\s+with\s+torchvision\s+(\d+\.\d+)", tested)
    assert len(pairs) >= 2, tested
    oldest_torch, oldest_torchvision = min(pairs, key=lambda pair: tuple(map(int, pair[0].split("."))))
    assert (declared_minimum("torch"), declared_minimum("torchvision")) == (oldest_torch, oldest_torchvision)


def test_ci_runs_the_readme_test_command_and_deletes_nothing():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [readme_command("the tests (what CI runs, via .ci/run)")]
    assert not any(re.search(r"\brm\b", line) for line in script)


def test_the_readme_keeps_its_quick_start_and_documents_the_cpu_only_install():
    assert readme_command("the main job: regenerate the comparison reports under reports/") == \
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m profiler report"
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):readme.index("\n## ", readme.index("## Quick start") + 1)]
    assert ".venv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in quick_start
    assert "(Not tested:" in quick_start
    assert re.search(r"The test suite takes under [\d½]+ minutes: \d+ min \d+ s for its \d+ tests, measured once",
                     " ".join(quick_start.split()))
