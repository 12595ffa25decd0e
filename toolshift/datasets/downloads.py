"""Fetching benchmark files: from a local mirror folder, else downloaded through pooch into a cache.

Every file is a `RemoteFile`: its path relative to the mirror and the cache (the layout of the project's
`shared/data`, e.g. `figstep_safebench/safebench.csv`), its upstream URL and, where the registry can pin it,
its sha256. Where it cannot (a third-party copy, a file listed only inside another file), the first fetch
records the sha256 in a lock file and every later fetch, from the mirror or the network, is checked against
it. A mirror copy is checked exactly like a download.

- A hash is recorded only for a file that decodes (an image, a CSV, a JSON or parquet file, a zip archive:
  `decode_problem`), so a broken first copy (an empty image, a truncated download) never becomes the truth
  a fixed copy is then refused against.
- A run never edits the committed lock (`config/datasets.lock.yaml`): it reads it and records the hashes it
  lacks beside the results (`{results}/datasets.lock.yaml`); `make lock-data` (toolshift.datasets.lock)
  copies them into the committed file. A lock file a config names (`data_lock`) is read and written.

A missing file, a failed download or a checksum mismatch raises DataError with one line naming the file;
a mismatch with a lock entry names the lock file and how to accept the new file (`make lock-data REFRESH=`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pooch
import yaml
from filelock import FileLock

from toolshift import REPO_ROOT
from toolshift.errors import ConfigError, DataError
from toolshift.files import atomic_path

DEFAULT_LOCK: Path = REPO_ROOT / "config" / "datasets.lock.yaml"
"""The committed lock file: sha256 of every registry file the registry itself does not pin."""

DEFAULT_CACHE_SUBDIR = "cache/downloads"
"""Where downloads go by default, relative to the results root."""

DOWNLOAD_TIMEOUT_S = 120
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOCK_HEADER = (
    "# toolshift dataset lock file: the sha256 of every registry file whose hash the registry cannot pin,\n"
    "# recorded by its first fetch (download or data_mirror) and checked on every later fetch.\n"
    "# Commit it. Delete an entry only to accept a changed upstream file on purpose.\n"
)


def check_relpath(relpath: str, where: str) -> str:
    """A relative POSIX path without `..`, absolute parts or empty components (else DataError)."""
    p = PurePosixPath(relpath) if isinstance(relpath, str) else None
    if p is None or not relpath or p.is_absolute() or ".." in p.parts or "\\" in relpath or relpath != str(p):
        raise DataError(f"{where}: {relpath!r} is not a safe relative path")
    return relpath


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lies under the mirror/cache, where it comes from, its sha256."""

    relpath: str
    url: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        check_relpath(self.relpath, "registry file")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise DataError(f"registry file {self.relpath}: sha256 must be 64 lowercase hex digits")


RUN_LOCK_NAME = "datasets.lock.yaml"
"""The lock a run records new hashes in, under its results root, when it reads the committed lock."""


@dataclass(frozen=True)
class DataSource:
    """Where files come from: `mirror` (a folder, takes precedence) or downloads into `cache`; `lock`
    is the lock file of the sha256s of files the registry does not pin. New hashes are recorded in `record`
    (when set; `lock` is then only read), else in `lock`."""

    cache: Path
    mirror: Path | None = None
    lock: Path = field(default=DEFAULT_LOCK)
    record: Path | None = None


def data_source(
    results_root: str | os.PathLike[str],
    data_mirror: str | os.PathLike[str] | None = None,
    data_cache: str | os.PathLike[str] | None = None,
    data_lock: str | os.PathLike[str] | None = None,
) -> DataSource:
    """The DataSource of a run: the cache defaults to `<results_root>/cache/downloads`; the lock to the
    committed `config/datasets.lock.yaml`, which is then only read (new hashes go to
    `<results_root>/datasets.lock.yaml`); a mirror that is not a folder raises ConfigError."""
    mirror = None if data_mirror in (None, "") else Path(data_mirror)
    if mirror is not None and not mirror.is_dir():
        raise ConfigError(f"data_mirror {str(mirror)!r} is not a folder")
    cache = Path(data_cache) if data_cache not in (None, "") else Path(results_root) / DEFAULT_CACHE_SUBDIR
    if data_lock not in (None, ""):
        return DataSource(cache=cache, mirror=mirror, lock=Path(data_lock))
    return DataSource(
        cache=cache, mirror=mirror, lock=DEFAULT_LOCK, record=Path(results_root) / RUN_LOCK_NAME
    )


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the lock file


def read_lock(path: str | os.PathLike[str]) -> dict[str, str]:
    """The lock file's `files` mapping (relative path -> sha256); an absent file is an empty lock."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{p}: lock file is not valid YAML ({exc})") from None
    if raw is not None and not isinstance(raw, dict):
        raise DataError(f"{p}: lock file must hold a mapping `files: {{path: sha256}}`")
    files = (raw or {}).get("files") or {}
    if not isinstance(files, dict):
        raise DataError(f"{p}: lock file must hold a mapping `files: {{path: sha256}}`")
    for key, value in files.items():
        if not isinstance(key, str) or not isinstance(value, str) or not _SHA256.match(value):
            raise DataError(
                f"{p}: lock entry {key!r}: expected a sha256 (64 lowercase hex digits), got {value!r}"
            )
    return dict(files)


def _write_lock(path: Path, files: dict[str, str]) -> None:
    body = yaml.safe_dump({"files": dict(sorted(files.items()))}, default_flow_style=False, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(_LOCK_HEADER + body, encoding="utf-8")


def write_lock(path: str | os.PathLike[str], files: dict[str, str]) -> None:
    """Write a lock file (its header, then `files` sorted), atomically."""
    _write_lock(Path(path), files)


def refresh_hint(relpath: str, lock: str | os.PathLike[str]) -> str:
    """How to accept a changed file whose hash a lock holds (the end of a mismatch message)."""
    return (
        f"if the new file is right, accept it with `make lock-data REFRESH={relpath}` (or delete its entry "
        f"from {lock}) and rerun; else restore the file"
    )


def record_lock(path: str | os.PathLike[str], relpath: str, sha256: str) -> None:
    """Record `relpath -> sha256` in the lock file (under a file lock: parallel jobs may record at once).
    An entry that is already there with another hash raises DataError naming both hashes and the fix."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(p) + ".flock"):
        files = read_lock(p)
        known = files.get(relpath)
        if known == sha256:
            return
        if known is not None:
            raise DataError(
                f"{relpath}: sha256 mismatch (expected {known} recorded in lock {p}, got {sha256}); "
                + refresh_hint(relpath, p)
            )
        files[relpath] = sha256
        _write_lock(p, files)


# --------------------------------------------------------------------------- decoding before recording

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def decode_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a fetched file does not decode as what its suffix says (an image, CSV, JSON, parquet file or
    zip archive; any other file must not be empty), or None. A hash is recorded only when this is None."""
    p = Path(path)
    if p.stat().st_size == 0:
        return "an empty file (0 bytes)"
    suffix = p.suffix.lower()
    try:
        if suffix in _IMAGE_SUFFIXES:
            from toolshift.datasets.images import decode_image

            decode_image(p, str(p))
        elif suffix in (".csv", ".tsv"):
            import pandas as pd

            pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_metadata(p)
        elif suffix == ".zip":
            with zipfile.ZipFile(p) as zf:
                zf.namelist()
    except DataError as exc:
        return str(exc).removeprefix(f"{p}: ")
    except Exception as exc:  # noqa: BLE001 - every reader's own error type: the file does not decode
        first = " ".join(str(exc).split())[:200]
        return f"does not decode as a {suffix[1:]} file ({type(exc).__name__}: {first})"
    return None


# --------------------------------------------------------------------------- fetching


def _mismatch(where: str | Path, expected: str, actual: str, hint: str = "") -> DataError:
    return DataError(
        f"{where}: sha256 mismatch (expected {expected}, got {actual})" + (f"; {hint}" if hint else "")
    )


def _download(file: RemoteFile, expected: str | None, cache: Path, hint: str = "") -> Path:
    """Download (or reuse the cached copy of) one file through pooch; pooch checks `expected`."""
    target = cache / file.relpath
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S)
    try:
        got = pooch.retrieve(
            file.url,
            known_hash=None if expected is None else f"sha256:{expected}",
            fname=target.name,
            path=target.parent,
            downloader=downloader,
        )
    except ValueError as exc:  # pooch: hash of the download does not match
        found = re.search(r"\(([0-9a-f]{64})\)", str(exc))
        if expected is not None and found:
            raise _mismatch(f"{file.url} (cached as {target})", expected, found.group(1), hint) from None
        raise DataError(f"{file.url}: download of {file.relpath} failed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors of any kind
        raise DataError(
            f"{file.url}: download of {file.relpath} failed ({type(exc).__name__}: {exc}); to work offline "
            f"set data_mirror to a folder holding {file.relpath}"
        ) from None
    return Path(got)


def fetch(file: RemoteFile, source: DataSource) -> Path:
    """The local path of a registry file, checked against its sha256.

    With a mirror, the file must be at `<mirror>/<relpath>` (it is used in place); otherwise it is
    downloaded into `<cache>/<relpath>` (a cached copy with the right hash is reused). The expected hash is
    the registry's, else the lock file's (`source.lock`, then `source.record`); with neither, the file must
    decode (`decode_problem`) and its hash is recorded in `source.record` (else `source.lock`).
    """
    expected, hint = file.sha256, "the registry pins this hash (toolshift.datasets.sources): restore the file"
    for lock in (source.lock, source.record):
        if expected is None and lock is not None:
            expected, hint = read_lock(lock).get(file.relpath), refresh_hint(file.relpath, lock)
            hint = f"expected hash from lock {lock}: {hint}"
    if source.mirror is not None:
        path = Path(source.mirror) / file.relpath
        if not path.is_file():
            raise DataError(f"{path}: file not found in data_mirror {source.mirror} (upstream: {file.url})")
    else:
        path = _download(file, expected, Path(source.cache), hint)
    actual = sha256_of(path)
    if expected is None:
        problem = decode_problem(path)
        if problem is not None:
            raise DataError(
                f"{path}: {problem}; its hash was not recorded in any lock: replace the file with a good "
                f"copy (upstream: {file.url}) and rerun"
            )
        record_lock(source.record or source.lock, file.relpath, actual)
    elif actual != expected:
        raise _mismatch(path, expected, actual, hint)
    return path


def fetch_archive(file: RemoteFile, source: DataSource) -> Path:
    """Fetch a zip archive (see `fetch`) and unpack it once into `<cache>/<relpath>.d/`; returns that
    folder. A member with an absolute path or `..` raises DataError."""
    archive = fetch(file, source)
    digest = sha256_of(archive)
    out = Path(source.cache) / (file.relpath + ".d")
    marker = out / ".toolshift-unpacked"
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                check_relpath(member.rstrip("/"), f"{archive}: member")
            zf.extractall(tmp)
        (tmp / ".toolshift-unpacked").write_text(digest + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another job unpacked the same archive meanwhile
            if not (marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest):
                raise
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
