"""Reading a bundle zip without trusting it.

`open_bundle_archive` reads the manifest and checks the archive's central directory against it before a
byte of data is extracted: every member a regular file (no symlink, device, pipe or socket), with a safe
relative name, listed once in the manifest with the size the manifest gives, and every listed file present.
`stage` then extracts into a fresh staging folder, reading each member through a size cap and hashing it as
it streams, and renames the folder into place only when every file matched; anything wrong removes the
staging folder and raises DataError with one line naming the bundle and the member.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolshift.bundles.manifest import (
    CRATE_NAME,
    MANIFEST_NAME,
    MAX_METADATA_BYTES,
    archive_path_problem,
    file_record,
    read_manifest,
    sha256_bytes,
    total_size,
)
from toolshift.errors import DataError

STAGED_MARKER = ".toolshift-staged"
"""Written last into a complete staging folder: the sha256 of the manifest it was checked against."""

_ALLOWED_TYPES = (0, stat.S_IFREG, stat.S_IFDIR)
_TYPE_NAMES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class BundleArchive:
    """A bundle whose manifest was read and whose central directory matches it."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def where(self) -> str:
        return str(self.path)


def _open_zip(path: Path) -> zipfile.ZipFile:
    where = str(path)
    if not path.is_file():
        raise DataError(f"bundle {where}: file not found")
    try:
        return zipfile.ZipFile(path)
    except _CORRUPT as exc:
        if _looks_like_tar(path):
            raise DataError(
                f"bundle {where}: a tar archive, not a zip: toolshift bundles are RO-Crate zip files made by "
                "`make bundle` (tar members such as hard links are never extracted)"
            ) from None
        raise DataError(
            f"bundle {where}: not a complete zip archive, truncated or corrupt ({exc}): download it again"
        ) from None
    except OSError as exc:
        raise DataError(f"bundle {where}: cannot be read ({exc.strerror or exc})") from None


def _looks_like_tar(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(262)
    return head[257:262] == b"ustar" or head[:2] == b"\x1f\x8b"


def _member_type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = (info.external_attr >> 16) & 0o170000
    if mode in _ALLOWED_TYPES:
        return None
    return _TYPE_NAMES.get(mode, f"a special file (mode {oct(mode)})")


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, where: str) -> bytes:
    with zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise DataError(f"bundle {where}: {info.filename} is larger than {cap} bytes; refused unread")
    return data


def check_central_directory(zf: zipfile.ZipFile, manifest: Mapping[str, Any], where: str) -> None:
    """Every member a listed regular file with a safe name and the manifest's size; every listed file
    there. DataError (one line) otherwise."""
    files = manifest["files"]
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        problem = archive_path_problem(name)
        if problem:
            raise DataError(f"bundle {where}: member {name!r} has {problem}; refused, nothing extracted")
        kind = _member_type_problem(info)
        if kind:
            raise DataError(f"bundle {where}: member {name!r} is {kind}; refused, nothing extracted")
        if info.flag_bits & 0x1:
            raise DataError(f"bundle {where}: member {name!r} is encrypted; refused, nothing extracted")
        if name in seen:
            raise DataError(f"bundle {where}: member {name!r} appears twice; refused, nothing extracted")
        seen.add(name)
        if info.is_dir() or name in (MANIFEST_NAME, CRATE_NAME):
            continue
        if name not in files:
            raise DataError(
                f"bundle {where}: member {name!r} is not in its manifest; refused, nothing extracted"
            )
        if info.file_size != files[name]["size"]:
            raise DataError(
                f"bundle {where}: member {name!r} unpacks to {info.file_size} bytes, its manifest says "
                f"{files[name]['size']}; refused, nothing extracted"
            )
    absent = sorted(set(files) - seen)
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise DataError(
            f"bundle {where}: {absent[0]}{more} listed in its manifest but missing from the archive"
        )


def open_bundle_archive(path: str | os.PathLike[str]) -> BundleArchive:
    """Read and validate a bundle's manifest and check its central directory (no data extracted)."""
    archive = Path(path)
    where = str(archive)
    with _open_zip(archive) as zf:
        seen: set[str] = set()
        twice = next((n for n in zf.namelist() if n in seen or seen.add(n)), None)
        if twice is not None:  # checked first: which copy of a name would be read is the archiver's choice
            raise DataError(f"bundle {where}: member {twice!r} appears twice; refused, nothing extracted")
        try:
            info = zf.getinfo(MANIFEST_NAME)
        except KeyError:
            raise DataError(
                f"bundle {where}: no {MANIFEST_NAME} at the archive's root: not a toolshift bundle"
            ) from None
        try:
            data = _read_capped(zf, info, MAX_METADATA_BYTES, where)
        except _CORRUPT as exc:
            raise DataError(f"bundle {where}: {MANIFEST_NAME} is corrupt ({exc})") from None
        manifest = read_manifest(data, f"bundle {where}")
        check_central_directory(zf, manifest, where)
        if CRATE_NAME not in zf.namelist():
            raise DataError(f"bundle {where}: no {CRATE_NAME} (RO-Crate metadata) at the archive's root")
    return BundleArchive(archive, manifest, sha256_bytes(data))


def read_crate(bundle: BundleArchive) -> dict[str, Any]:
    """The bundle's RO-Crate metadata as a JSON object (DataError when it is not one)."""
    with _open_zip(bundle.path) as zf:
        try:
            data = _read_capped(zf, zf.getinfo(CRATE_NAME), MAX_METADATA_BYTES, bundle.where)
            crate = json.loads(data.decode("utf-8"))
        except (*_CORRUPT, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"bundle {bundle.where}: {CRATE_NAME} is not valid JSON ({exc})") from None
    if not isinstance(crate, dict) or "@graph" not in crate:
        raise DataError(f"bundle {bundle.where}: {CRATE_NAME} has no @graph: not RO-Crate metadata")
    return crate


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, entry: Mapping[str, Any], dest: Path, where: str
) -> None:
    size, expected = int(entry["size"]), entry["sha256"]
    digest = hashlib.sha256()
    written = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(min(1 << 20, size - written + 1)):
            written += len(chunk)
            if written > size:
                raise DataError(
                    f"bundle {where}: {info.filename} unpacks to more than the {size} bytes its manifest "
                    "says; refused, nothing placed"
                )
            digest.update(chunk)
            out.write(chunk)
    if written != size:
        raise DataError(
            f"bundle {where}: {info.filename} unpacks to {written} bytes, its manifest says {size}"
        )
    if digest.hexdigest() != expected:
        raise DataError(
            f"bundle {where}: {info.filename} has sha256 {digest.hexdigest()}, its manifest says {expected}; "
            "refused, nothing placed"
        )


def _check_space(folder: Path, needed: int, where: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DataError(
            f"bundle {where}: unpacking needs {needed / 1e9:.2f} GB, {folder} has {free / 1e9:.2f} GB free"
        )


def is_staged(staging: Path, bundle: BundleArchive) -> bool:
    """Whether `staging` is a complete staging folder of this very bundle."""
    marker = staging / STAGED_MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == bundle.manifest_sha256


def stage(bundle: BundleArchive, staging: str | os.PathLike[str], archive_sha256: str | None = None) -> Path:
    """Extract every listed file of `bundle` into the folder `staging` (made complete, then renamed into
    place; reused when it already holds this bundle). `archive_sha256`, when given, is checked against the
    whole archive first. Any problem removes what was extracted and raises DataError (one line)."""
    target = Path(staging)
    if is_staged(target, bundle):
        return target
    where = bundle.where
    if archive_sha256:
        actual = file_record(bundle.path)["sha256"]
        if actual != archive_sha256.lower():
            raise DataError(
                f"bundle {where}: sha256 {actual}, expected {archive_sha256} (bundle_sha256); refused, "
                "nothing placed"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_space(target.parent, total_size(bundle.manifest), where)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-staging-", dir=target.parent))
    try:
        with _open_zip(bundle.path) as zf:
            check_central_directory(
                zf, bundle.manifest, where
            )  # the file may have changed since it was opened
            for name, entry in sorted(bundle.manifest["files"].items()):
                try:
                    _extract_member(zf, zf.getinfo(name), entry, tmp / name, where)
                except _CORRUPT as exc:
                    raise DataError(
                        f"bundle {where}: {name} is corrupt in the archive ({exc}); refused, nothing placed"
                    ) from None
        (tmp / STAGED_MARKER).write_text(bundle.manifest_sha256 + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
