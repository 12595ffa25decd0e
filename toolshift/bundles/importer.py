"""Importing a bundle into a results folder (`snakemake --config bundle=PATH_OR_URL`, rules/bundle.smk).

Three steps, each safe to repeat (step 1 runs in every Snakemake process, jobs included, so this module
imports pooch and the netCDF stack only when it downloads or places files):

1. `open_for_import` (when the Snakefile loads, dry runs and jobs included): find the archive (a path; a URL
   from `<data_mirror>/bundles/`, the download cache or through pooch), read its manifest, check its central
   directory, refuse another toolshift version or generation config unless `bundle_accept_mismatch`, and
   check that it holds every file this config reads after generation. Nothing is written.
2. `stage_for_import` (before the first job, `onstart`): extract every file into
   `{results}/.bundle-staging/<id>/`, each checked against the manifest's size and sha256 while it streams
   (and the whole archive against `bundle_sha256` when given). A bad bundle leaves the results folder as
   it was.
3. `place` (the `import_bundle` job): move the staged files this config wants to their places, write the
   import record `{results}/bundle/imported.json` and remove the staging folder.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import toolshift
from toolshift.bundles.archive import BundleArchive, open_bundle_archive, stage
from toolshift.bundles.manifest import (
    IMPORT_RECORD,
    RESULTS_PREFIX,
    check_compatible,
    missing_results,
    results_files,
)
from toolshift.errors import DataError

URL_PREFIXES: tuple[str, ...] = ("http://", "https://", "ftp://", "sftp://", "doi:")
"""Bundle sources fetched through pooch (`doi:` resolves Zenodo, figshare and Dataverse records)."""
MIRROR_SUBDIR = "bundles"
"""Where a URL's archive lies under the offline `data_mirror` and under the download cache."""
STAGING_DIR = ".bundle-staging"
RECORD = IMPORT_RECORD


def is_url(source: str) -> bool:
    """Whether a bundle source is fetched (a URL or DOI) rather than a local path."""
    return str(source).lower().startswith(URL_PREFIXES)


def url_file_name(url: str) -> str:
    """The archive's file name in a URL or `doi:` source (its last path part)."""
    name = PurePosixPath(urlparse(url).path if "://" in url else url.split(":", 1)[1]).name
    if not name or name in (".", ".."):
        raise DataError(f"bundle {url}: the URL names no file (expected .../<name>.zip)")
    return name


def locate(
    source: str,
    *,
    cache: str | os.PathLike[str],
    mirror: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> Path:
    """The local archive of a bundle source. A path is used in place. A URL is taken from
    `<mirror>/bundles/<name>` when a mirror is set (offline: it must be there), else from
    `<cache>/bundles/<name>`, downloaded through pooch (checked against `sha256` when given) if absent."""
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"bundle {source}: file not found")
        return path
    name = url_file_name(source)
    if mirror is not None:
        path = Path(mirror) / MIRROR_SUBDIR / name
        if not path.is_file():
            raise DataError(f"bundle {source}: not in data_mirror (expected {path})")
        return path
    target = Path(cache) / MIRROR_SUBDIR / name
    if target.is_file():  # checked in full before the first job (stage_for_import), not at every load
        return target
    import pooch

    from toolshift.datasets.downloads import DOWNLOAD_TIMEOUT_S

    known = f"sha256:{sha256.lower()}" if sha256 else None
    try:
        downloader = (
            pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S)
            if source.lower().startswith(("http://", "https://"))
            else None
        )
        got = pooch.retrieve(source, known_hash=known, fname=name, path=target.parent, downloader=downloader)
    except ValueError as exc:
        raise DataError(f"bundle {source}: download does not match bundle_sha256 ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors of any kind
        raise DataError(
            f"bundle {source}: download failed ({type(exc).__name__}: {exc}); offline, put the archive at "
            f"<data_mirror>/{MIRROR_SUBDIR}/{name}"
        ) from None
    return Path(got)


def open_for_import(config: Mapping[str, Any]) -> tuple[BundleArchive, str | None]:
    """Find and check the bundle `config["bundle"]` names (see the module docstring, step 1): the archive and
    what differs from this run (None, or the mismatch `bundle_accept_mismatch` accepts)."""
    source = str(config["bundle"])
    mirror, cache = config.get("data_mirror"), config.get("data_cache")
    if is_url(source):  # the data sources of datasets: the mirror, else the download cache
        from toolshift.datasets.downloads import data_source

        data = data_source(config["results"], mirror, cache)
        mirror, cache = data.mirror, data.cache
    path = locate(source, cache=cache or config["results"], mirror=mirror, sha256=config.get("bundle_sha256"))
    bundle = open_bundle_archive(path)
    accepted = check_compatible(bundle.manifest, config, toolshift.__version__, source)
    return bundle, accepted


def check_holds(bundle: BundleArchive, wanted: Iterable[tuple[str, bool]], source: str) -> None:
    """DataError (one line) unless the bundle holds every wanted results path: (path relative to the results
    root, is a folder) of each file this config reads from the generation side."""
    missing = missing_results(bundle.manifest, wanted)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(
            f"bundle {source}: lacks {missing[0]}{more}, which this config reads after generation: run with "
            "the bundle's own config (provenance/config.yaml inside it)"
        )


def staging_dir(results: str | os.PathLike[str], bundle: BundleArchive) -> Path:
    """The staging folder of one bundle under a results root."""
    return Path(results) / STAGING_DIR / bundle.manifest_sha256[:16]


def stage_for_import(
    bundle: BundleArchive, results: str | os.PathLike[str], archive_sha256: str | None
) -> Path:
    """Extract and check the whole bundle into its staging folder (step 2). On failure every folder this
    call created is removed again, the results root included when it did not exist before."""
    root = Path(results)
    created = [p for p in (root, root / STAGING_DIR) if not p.exists()]
    try:
        return stage(bundle, staging_dir(root, bundle), archive_sha256)
    except BaseException:
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    os.replace(src, dest)


def place(
    bundle: BundleArchive,
    results: str | os.PathLike[str],
    wanted: Sequence[tuple[str, bool]],
    *,
    source: str,
    accepted: str | None,
    recomputed: Iterable[str] = (),
    archive_sha256: str | None = None,
) -> dict[str, Any]:
    """Move the bundle's results files from the staging folder (staged now if it is not there) into the
    results root, write the import record and remove the staging folder (step 3). Returns the record.

    Every results file goes to its place, except those of the rules in `recomputed` (rerun from the others);
    a wanted folder (a `directory()` output) is emptied first, so that it holds exactly the bundle's files."""
    from toolshift.files import atomic_path

    root = Path(results)
    check_holds(bundle, wanted, source)
    staged = stage_for_import(bundle, root, archive_sha256) / RESULTS_PREFIX.rstrip("/")
    for rel, is_dir in wanted:
        if is_dir and (root / rel).is_dir():
            shutil.rmtree(root / rel)
    have = results_files(bundle.manifest)
    skipped = set(recomputed)
    placed = sorted(n for n, entry in have.items() if entry.get("rule") not in skipped)
    for name in placed:
        _move(staged / name, root / name)
    manifest = bundle.manifest
    record = {
        "source": source,
        "archive": str(bundle.path),
        "manifest_sha256": bundle.manifest_sha256,
        "created": manifest["created"],
        "imported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "toolshift_version": manifest["toolshift_version"],
        "config_hash": manifest["config_hash"],
        "activations_dtype": manifest["activations_dtype"],
        "accepted_mismatch": accepted,
        "placed_files": len(placed),
        "placed_bytes": sum(int(have[n]["size"]) for n in placed),
        "recomputed": sorted(set(have) - set(placed)),
        "gpu_seconds": (manifest.get("rerun") or {}).get("gpu_seconds"),
        "git": (manifest.get("rerun") or {}).get("git"),
    }
    with atomic_path(root / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(staging_dir(root, bundle), ignore_errors=True)
    with_staging = root / STAGING_DIR
    if with_staging.is_dir() and not any(with_staging.iterdir()):
        with_staging.rmdir()
    return record
