"""Making a bundle (rule `bundle`, `make bundle`): the generation side of a results folder, its provenance and
the workflow that made it, in one zip with a manifest and RO-Crate metadata.

Which results files go in is the workflow's to say (rules/bundle.smk lists the declared outputs of the
generation-side rules that the rules after generation read); this module packs what it is given:

- `results/...`: those files, byte for byte, except `activations.nc` when `float16` is asked for: then
  its `resid` is stored as float16 (attribute `stored_dtype: float16`; so says the manifest's
  `activations_dtype`);
- `provenance/`: the resolved config (`config.yaml`), the data lock the run used (`datasets.lock.yaml`), the
  environment (`environment.json`: toolshift, Python, platform, every installed package, the git commit),
  the repository's lock files and the benchmark files of the generation jobs (what a re-run costs);
- `workflow/`: the Snakefile and the rule files (the RO-Crate's main entity).

Zip entries carry a fixed timestamp and mode, and text is deflated while binary data is stored, so packing
the same files twice gives the same entries. The archive is written atomically.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import toolshift
from toolshift.bundles.crate import WORKFLOW_FILE, crate_metadata
from toolshift.bundles.manifest import (
    CRATE_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    RESULTS_PREFIX,
    config_hash,
    generation_config,
)
from toolshift.errors import ContractError
from toolshift.files import atomic_path
from toolshift.report.environment import git_state

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
DEFLATED_SUFFIXES = (
    ".json",
    ".jsonl",
    ".csv",
    ".tsv",
    ".yaml",
    ".yml",
    ".txt",
    ".smk",
    ".md",
    ".jinja",
    "Snakefile",
)
"""Text is deflated; everything else (parquet, netCDF, PNG, safetensors: compressed or noise) is stored."""
LOCK_PATTERNS: tuple[str, ...] = ("*lock*", "config/*lock*", "envs/*lock*")
"""Repository files recorded as the package and data locks (whatever lock files the checkout has)."""
MAX_LOCK_BYTES = 8 << 20
ACTIVATIONS_NAME = "activations.nc"
SKIPPED_NAMES = (".snakemake_timestamp",)
"""Snakemake's markers inside `directory()` outputs: not results."""


def expand_files(results: Path, paths: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Results-relative file paths -> the rule that wrote them; a folder stands for every file under it.
    A path that is missing raises ContractError naming it."""
    files: dict[str, str] = {}
    for rel, rule in paths:
        path = results / rel
        if path.is_dir():
            for sub in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in SKIPPED_NAMES):
                files[sub.relative_to(results).as_posix()] = rule
        elif path.is_file():
            files[rel] = rule
        else:
            raise ContractError(f"{path}: listed for the bundle (rule {rule}) but missing")
    return files


def _image_paths(value: Any) -> Iterable[str]:
    """Every `{"type": "image", "path": ...}` part inside an episode record."""
    if isinstance(value, dict):
        if value.get("type") == "image" and isinstance(value.get("path"), str):
            yield value["path"]
        for sub in value.values():
            yield from _image_paths(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _image_paths(sub)


def referenced_files(results: Path, files: Mapping[str, str]) -> dict[str, str]:
    """The images the listed episode files reference (paths relative to the results root, per their
    contract) that `files` does not list yet -> the rule of the episode file that references them. The
    override images a run shares between datasets (`data/overrides/`) are such files."""
    from toolshift.contracts import read_episodes

    extra: dict[str, str] = {}
    for rel, rule in files.items():
        if not (rel.startswith("episodes/") and rel.endswith(".jsonl")):
            continue
        for path in {p for record in read_episodes(results / rel) for p in _image_paths(record["messages"])}:
            if path not in files and path not in extra:
                if not (results / path).is_file():
                    raise ContractError(f"{results / rel}: references {path}, which is missing")
                extra[path] = rule
    return extra


def environment_record(repo: Path) -> dict[str, Any]:
    """toolshift, Python, the platform, every installed distribution and the git state of `repo`."""
    packages = sorted(
        {
            f"{d.metadata['Name']}=={d.version}"
            for d in importlib.metadata.distributions()
            if d.metadata["Name"]
        },
        key=str.lower,
    )
    return {
        "toolshift": toolshift.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "git": git_state(repo),
    }


def benchmark_seconds(results: Path, benchmarks: Iterable[str]) -> dict[str, float]:
    """Wall seconds per benchmark folder (the first path part under benchmarks/: infer, intervene, ...)."""
    seconds: dict[str, float] = {}
    for rel in benchmarks:
        try:
            frame = pd.read_csv(results / rel, sep="\t")
        except (OSError, ValueError):
            continue
        if frame.empty or "s" not in frame.columns:
            continue
        stage = Path(rel).parts[1] if len(Path(rel).parts) > 2 else Path(rel).stem
        seconds[stage] = seconds.get(stage, 0.0) + float(frame["s"].iloc[-1])
    return seconds


def _float16_copy(source: Path, dest: Path) -> None:
    from toolshift.models.activations import read_activations, write_activations

    ds = read_activations(source)
    ds["resid"] = ds["resid"].astype("float16")
    ds.attrs["stored_dtype"] = "float16"
    write_activations(ds, dest)


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(DEFLATED_SUFFIXES) else zipfile.ZIP_STORED
    return info


def _add_file(zf: zipfile.ZipFile, name: str, source: Path) -> dict[str, Any]:
    """Copy `source` into the archive as `name`, hashing it on the way: {sha256, size}."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as src, zf.open(_zip_info(name), "w", force_zip64=True) as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes) -> dict[str, Any]:
    zf.writestr(_zip_info(name), data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _lock_files(repo: Path) -> list[Path]:
    found = {p for pattern in LOCK_PATTERNS for p in repo.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p.stat().st_size <= MAX_LOCK_BYTES and not p.name.endswith(".flock"))


def make_bundle(
    *,
    results: str | os.PathLike[str],
    files: Sequence[tuple[str, str]],
    out: str | os.PathLike[str],
    config: Mapping[str, Any],
    repo: str | os.PathLike[str],
    float16: bool = False,
    data_lock: str | os.PathLike[str] | None = None,
    benchmarks: Sequence[str] = (),
    gpu_benchmarks: Sequence[str] = (),
    licenses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Pack a bundle into `out` (atomically) and return its manifest.

    `files`: (path relative to `results`, rule) pairs, folders included whole; `benchmarks`: benchmark files
    (relative to `results`) of the generation jobs, `gpu_benchmarks` those of its GPU jobs (their seconds
    are what a re-run needs); `data_lock`: the dataset lock file the run used; `licenses`: dataset ->
    licence for the RO-Crate."""
    results, repo = Path(results), Path(repo)
    listed = expand_files(results, files)
    listed.update(referenced_files(results, listed))
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": created,
        "toolshift_version": toolshift.__version__,
        "config_hash": config_hash(config),
        "config": json.loads(json.dumps(generation_config(config), default=str)),
        "activations_dtype": "float16" if float16 else "float32",
        "models": {
            name: {k: entry.get(k) for k in ("family", "source", "hub_id", "revision", "backend", "engine")}
            for name, entry in (config.get("models") or {}).items()
        },
        "files": {},
    }
    environment = environment_record(repo)
    gpu_seconds = benchmark_seconds(results, gpu_benchmarks)
    manifest["rerun"] = {
        "command": "snakemake --cores all --use-conda --configfile provenance/config.yaml",
        "gpu_seconds": round(sum(gpu_seconds.values()), 1),
        "seconds_by_stage": {k: round(v, 1) for k, v in benchmark_seconds(results, benchmarks).items()},
        "python": environment["python"],
        "snakemake": next(
            (p.split("==")[1] for p in environment["packages"] if p.lower().startswith("snakemake==")), None
        ),
        "git": environment["git"],
    }
    entries: dict[str, dict[str, Any]] = {}
    with atomic_path(out) as tmp_out, zipfile.ZipFile(tmp_out, "w", allowZip64=True) as zf:
        with tempfile.TemporaryDirectory(prefix="toolshift-bundle-") as scratch:
            for rel, rule in sorted(listed.items()):
                source = results / rel
                if float16 and source.name == ACTIVATIONS_NAME:
                    converted = Path(scratch) / "activations.nc"
                    converted.unlink(missing_ok=True)
                    _float16_copy(source, converted)
                    source = converted
                entries[RESULTS_PREFIX + rel] = {**_add_file(zf, RESULTS_PREFIX + rel, source), "rule": rule}
        provenance: dict[str, bytes] = {
            "provenance/config.yaml": yaml.safe_dump(
                json.loads(json.dumps(dict(config), default=str)), sort_keys=False, allow_unicode=True
            ).encode("utf-8"),
            "provenance/environment.json": (json.dumps(environment, indent=2) + "\n").encode("utf-8"),
        }
        if data_lock is not None and Path(data_lock).is_file():
            provenance["provenance/datasets.lock.yaml"] = Path(data_lock).read_bytes()
        for name, data in provenance.items():
            entries[name] = _add_bytes(zf, name, data)
        for lock in _lock_files(repo):
            name = f"provenance/locks/{lock.relative_to(repo).as_posix()}"
            entries[name] = _add_file(zf, name, lock)
        for rel in benchmarks:
            if (results / rel).is_file():
                entries[f"provenance/{rel}"] = _add_file(zf, f"provenance/{rel}", results / rel)
        workflow_files = [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]
        for path in workflow_files:
            name = WORKFLOW_FILE if path.name == "Snakefile" else f"workflow/rules/{path.name}"
            entries[name] = _add_file(zf, name, path)
        manifest["files"] = dict(sorted(entries.items()))
        zf.writestr(_zip_info(MANIFEST_NAME), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        crate = crate_metadata(manifest, licenses)
        zf.writestr(_zip_info(CRATE_NAME), json.dumps(crate, indent=1, ensure_ascii=False) + "\n")
    return manifest
