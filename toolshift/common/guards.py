"""What a run may touch: the book folder it owns, and the results root it holds alone.

- **Book folder.** The book rule replaces the static pages, `_generated/` and `_build/` of `book_dir`, so it
  writes only into a folder it owns: the repository's own `book/` (the package's book sources), a folder
  that does not exist yet or holds no file (it is then created and marked), or one an earlier run marked
  with `.toolshift-book`. Anything else (a user's documentation folder, a home directory) is refused with one
  line before any job runs, so a foreign `_build/html/index.html` is never taken as the book either.
- **Output folders.** The results root, the book folder and the download cache must be folders this user can
  write: a path through a file, or a read-only folder (a read-only mount refuses even root), is refused with
  one line when the Snakefile loads, dry runs included, instead of a traceback from the first write.
- **Results lock.** Snakemake locks its working directory (`.snakemake/`), not the results root: two runs
  started from two working directories on one absolute `results` would write the same files at once. The
  main Snakemake process therefore holds an exclusive `flock` on `{results}/.toolshift.lock` from the
  workflow's start to its end (`onstart` / `onsuccess` / `onerror`, which also remove the file); the
  operating system releases it when the process ends, even on SIGKILL, so a killed run leaves at most an
  unlocked file, never a stale lock: the next run takes it. Dry runs and job processes never take it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from toolshift.errors import ConfigError, ToolshiftError

BOOK_MARKER = ".toolshift-book"
MARKER_TEXT = (
    "toolshift builds its Jupyter Book in this folder: a run replaces its pages, _generated/ and _build/.\n"
    "toolshift writes only into folders that hold this file (or that are new or empty).\n"
)
RESULTS_LOCK = ".toolshift.lock"


# --------------------------------------------------------------------------- book folder


def book_dir_problem(book_dir: str | os.PathLike[str], sources: str | os.PathLike[str]) -> str | None:
    """Why toolshift must not write into `book_dir` (one line), or None when the folder is its own.

    Its own: the repository's book sources `sources` themselves, a path that does not exist yet, a folder
    with no file in it (empty, or only empty folders such as the `_build/html/` Snakemake creates for the
    book's output), or a folder holding the marker file an earlier run wrote."""
    book = Path(book_dir).absolute()
    if not book.exists():
        return None
    if not book.is_dir():
        return f"config: book_dir {book} is a file, not a folder: point book_dir at a new or empty folder"
    if book.resolve() == Path(sources).resolve() or (book / BOOK_MARKER).is_file():
        return None
    try:
        if not _holds_files(book):
            return None
        entries = sorted(p.name for p in book.iterdir())
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"config: book_dir {book} cannot be read ({reason}): point book_dir at a new or empty folder"
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    return (
        f"config: book_dir {book} is a folder toolshift did not create (it holds {shown}); building the book "
        f"there would overwrite its files and delete its _build/: point book_dir at a new or empty folder "
        f"(toolshift marks the folders it writes with {BOOK_MARKER})"
    )


def _holds_files(folder: Path) -> bool:
    """Whether anything but folders lies under `folder` (a symlink counts as a file); stops at the first."""

    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(folder, onerror=fail):
        if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return True
    return False


def check_book_dir(book_dir: str | os.PathLike[str], sources: str | os.PathLike[str]) -> None:
    """Raise ConfigError (one line) unless toolshift owns `book_dir` (see `book_dir_problem`)."""
    problem = book_dir_problem(book_dir, sources)
    if problem:
        raise ConfigError(problem)


def claim_book_dir(book_dir: str | os.PathLike[str], sources: str | os.PathLike[str]) -> Path:
    """Check that toolshift owns `book_dir`, create it if needed and mark it (not the sources folder)."""
    check_book_dir(book_dir, sources)
    book = Path(book_dir)
    book.mkdir(parents=True, exist_ok=True)
    marker = book / BOOK_MARKER
    if book.resolve() != Path(sources).resolve() and not marker.is_file():
        marker.write_text(MARKER_TEXT, encoding="utf-8")
    return book


# --------------------------------------------------------------------------- output folders


def _writable(folder: Path) -> bool:
    """Whether this process can create a file in `folder` (tried: permission bits say nothing to root, a
    read-only mount or an immutable folder refuses even root). The probe is an unnamed temporary file."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def output_dir_problem(path: str | os.PathLike[str], key: str) -> str | None:
    """Why a run could not create or write the folder `path` (config key `key`), one line, or None: a part
    of the path is a file, or the folder (or, for a new one, the nearest existing folder above it) is
    read-only."""
    target = Path(path).absolute()
    probe = target
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        return f"config: {key} {target}: {probe} is a broken symbolic link: point {key} at a folder"
    if not probe.is_dir():
        what = "is" if probe == target else "(a folder above it) is"
        return (
            f"config: {key} {target}: {probe} {what} a file, not a folder: point {key} at a folder "
            "(a new one is created)"
        )
    if not _writable(probe):
        where = (
            "" if probe == target else f" (the folder above it that exists, {probe}, where it would be made)"
        )
        return (
            f"config: {key} {target} is read-only{where}: point {key} at a folder this user can write, or "
            "make it writable"
        )
    return None


def check_output_dirs(config: Mapping[str, Any]) -> None:
    """ConfigError (one line) unless the run can write its results root, its book folder and its download
    cache (`results`, `book_dir`, `data_cache`): checked when the Snakefile loads, dry runs included."""
    for key in ("results", "book_dir", "data_cache"):
        if config.get(key):
            problem = output_dir_problem(config[key], key)
            if problem:
                raise ConfigError(problem)


# --------------------------------------------------------------------------- locks


def _holder_line() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    host = socket.gethostname()
    return f"pid {os.getpid()} on host {host}, started {started}, working directory {os.getcwd()}"


class FileLock:
    """An exclusive flock held on a lock file; `release` removes the file and frees the lock."""

    def __init__(self, path: Path, handle: IO[str] | None) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and free the lock; a no-op the second time."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(handle, self.path):
                self.path.unlink()
        handle.close()


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        ours, now = os.fstat(handle.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (ours.st_dev, ours.st_ino) == (now.st_dev, now.st_ino)


def acquire_lock(path: str | os.PathLike[str], what: str) -> FileLock:
    """Take an exclusive, non-blocking flock on `path` (created if needed), recording this process in it.

    The lock goes with the process however it ends (the OS frees an flock even on SIGKILL); `release` also
    removes the file. When another process holds it, raise ToolshiftError (one line) naming `what`, that
    process (pid, host, start, working directory) and the lock file. A file system without flock (some
    network mounts) gets a warning and no lock."""
    lock = Path(path).absolute()
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held until released or the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "its details not yet written"
            handle.close()
            raise ToolshiftError(
                f"{what} is in use by another toolshift run ({holder}): wait for that run to end, or stop "
                f"it, then run again; its lock {lock} goes when it exits (if no such run is active, delete "
                f"that file)"
            ) from None
        except OSError as exc:
            handle.close()
            logging.getLogger("toolshift").warning("%s: cannot be locked (%s); no lock is held", lock, exc)
            return FileLock(lock, None)
        if _same_file(handle, lock):
            break
        handle.close()  # the previous holder removed the file between our open and our lock: take a new one
    handle.seek(0)
    handle.truncate()
    handle.write(_holder_line() + "\n")
    handle.flush()
    return FileLock(lock, handle)


@contextlib.contextmanager
def held_lock(path: str | os.PathLike[str], what: str) -> Iterator[FileLock]:
    """`acquire_lock` for the duration of a `with` block."""
    lock = acquire_lock(path, what)
    try:
        yield lock
    finally:
        lock.release()


_RUN_LOCKS: dict[Path, FileLock] = {}  # results root -> the run lock held by this (main Snakemake) process


def lock_results(results: str | os.PathLike[str]) -> Path:
    """Hold the run lock of results root `results` until `unlock_results` or the end of the process.

    Called by the workflow's `onstart` (main Snakemake process only; jobs and dry runs never take it).
    Raises ToolshiftError, one line, when another run holds it. Returns the lock file."""
    root = Path(results).absolute()
    if root not in _RUN_LOCKS:
        _RUN_LOCKS[root] = acquire_lock(root / RESULTS_LOCK, f"results {root}")
    return root / RESULTS_LOCK


def unlock_results(results: str | os.PathLike[str]) -> None:
    """Release the run lock `lock_results` took (onsuccess / onerror) and remove its file; else a no-op."""
    lock = _RUN_LOCKS.pop(Path(results).absolute(), None)
    if lock is not None:
        lock.release()
