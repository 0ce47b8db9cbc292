"""Writing files so that readers never see half of one: a file is replaced by one rename, a folder of generated
files is swapped in whole; and checking a destination before any work is done."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from profiler.errors import ProfilerError


def check_writable(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Fail early, before any work, if the file ``path`` cannot be written: its folder must exist and take a new
    file. ``flag`` names the option in the message."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ProfilerError(f"{flag} {path} is a folder; give a file name")
    if not folder.is_dir():
        raise ProfilerError(f"cannot write {flag} {path}: folder '{folder}' does not exist; create it first")
    _probe(folder, f"{flag} {path}", target.name)
    if target.exists() and not os.access(target, os.W_OK):
        raise ProfilerError(f"cannot write {flag} {path}: permission denied; choose a writable location")
    return target


def check_writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail early if ``path`` cannot become a folder of files: it is an existing folder that takes a new file, or
    a missing one whose nearest existing parent does."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ProfilerError(f"{flag} {path} is a file; give a folder (it is created if missing)")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ProfilerError(f"cannot write {flag} {path}: '{existing}' is not a folder")
    _probe(existing, f"{flag} {path}", "probe")
    return target


def _probe(folder: Path, what: str, name: str) -> None:
    # try for real: os.access says yes to root even where nothing can be written (/proc, read-only mounts)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ProfilerError(f"cannot write {what}: {err.strerror or err}; choose a writable location") from None


def write_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` in one rename, so readers never see a half-written file."""
    target = Path(path)
    data = text.encode() if isinstance(text, str) else text
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.",
                                   suffix=".tmp")
    except OSError as err:
        raise ProfilerError(f"cannot write {path}: {err.strerror or err}; choose a writable location") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a result is for everyone
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ProfilerError(f"cannot write {path}: {err.strerror or err}; choose a writable location") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_files(folder: str | os.PathLike, files: Mapping[str, str | bytes], owned: tuple[str, ...] = ()) -> None:
    """Write ``files`` (path relative to ``folder`` → content) as one set: each is written into a staging folder
    inside ``folder`` first (the slow part; an interruption or a failure there leaves the old set as it was and no
    staging folder), then all are renamed into place together with SIGINT and SIGTERM held back, so a set is never
    half old, half new. Before the first rename every destination is checked (its folder exists, on the staging
    folder's file system, and the path is not a folder), so that a rename cannot fail for a reason known in advance.
    Against a crash or SIGKILL between two renames nothing protects; each file is still whole, old or new.

    ``owned`` names sub-folders whose every file this set generates: files there that the new set lacks are
    removed (the caller vouches that nothing else lives there). Nothing else in ``folder`` is touched (committed
    inputs stay exactly as they are)."""
    target = Path(folder)
    for relative in files:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise ValueError(f"{relative!r} is not a path inside the folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target, prefix=STAGING_PREFIX))
    except OSError as err:
        raise ProfilerError(f"cannot write {folder}: {err.strerror or err}; choose a writable location") from None
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_staged(path, content.encode() if isinstance(content, str) else content)
        _prepare_destinations(target, staging, files)
        with _signals_held():
            for relative in files:
                os.replace(staging / relative, target / relative)
            for sub in owned:
                for stale in sorted((target / sub).glob("*")):
                    if stale.is_file() and stale.relative_to(target).as_posix() not in files:
                        stale.unlink()
    except OSError as err:
        raise ProfilerError(f"cannot write {folder}: {err.strerror or err}; choose a writable location") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: The name every staging folder of :func:`replace_files` starts with.
STAGING_PREFIX = ".profiler-new."


def _write_staged(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)  # a result is for everyone, whatever the umask


def _prepare_destinations(target: Path, staging: Path, files: Mapping[str, str | bytes]) -> None:
    """Create every destination folder and refuse, before anything is renamed, what would make a rename fail: a
    destination that is a folder, or a folder on another file system than the staging folder (a symbolic link to
    another disk), where a rename cannot move a file."""
    device = staging.stat().st_dev
    for relative in files:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_dir():
            raise ProfilerError(f"cannot write {destination}: it is a folder; move it away and run again")
        if destination.parent.stat().st_dev != device:
            raise ProfilerError(f"cannot write {destination}: its folder is on another file system than "
                                f"{target}, so the set cannot be swapped in by renames; make it a plain folder")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one that came (main thread only;
    elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: caught.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            # None: a handler not installed from Python (an embedding program's); the default is the closest
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])
