"""The bundle manifest (`toolshift-bundle.json`, beside `ro-crate-metadata.json` at the archive's root).

It lists every file of the archive with its sha256 and size, where each results file came from (the rule
that wrote it), the config hash, the toolshift version and what a re-run needs. An import checks the
archive against it file by file, and compares its config and version with the importing run's.

The config hash covers the keys that decide what generation produced: every key except the machine's
paths (`LOCAL_KEYS`) and the keys only the stages after generation read (`AFTER_GENERATION_KEYS`: judges,
statistics, the book). A key not named in either (one added later) counts as a generation key, so a bundle
is never taken for the same study by mistake.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from toolshift.errors import ConfigError, DataError

MANIFEST_NAME = "toolshift-bundle.json"
CRATE_NAME = "ro-crate-metadata.json"
FORMAT = "toolshift-bundle"
FORMAT_VERSION = 1
RESULTS_PREFIX = "results/"
"""Files under this archive folder are placed under the results root (`results/runs/...` goes to
`{results}/runs/...`); `provenance/` and `workflow/` describe the run and are never placed."""

IMPORT_RECORD = "bundle/imported.json"
"""The import record, relative to the results root: what was imported, from where, with what accepted
(`toolshift.bundles.importer.place` writes it; the book's provenance page reads it)."""

MAX_METADATA_BYTES = 64 << 20
"""The largest manifest or RO-Crate metadata file an import reads (a bigger one is refused unread)."""

LOCAL_KEYS: tuple[str, ...] = (
    "results",
    "book_dir",
    "data_mirror",
    "data_cache",
    "data_lock",
    "bundle",
    "bundle_sha256",
    "bundle_accept_mismatch",
    "bundle_float16",
)
"""Config keys that name places on one machine or steer bundles themselves: never compared."""

AFTER_GENERATION_KEYS: tuple[str, ...] = (
    "judges",
    "headline_judge",
    "keyword_list",
    "judge_models",
    "api_judge",
    "human_labels",
    "stats",
    "selection",
    "validation",
    "book",
)
"""Config keys read only by the rules after generation (judges, tables, figures, validation, the book): an
import may change them freely, which is the point of importing generations."""

ACTIVATION_DTYPES: tuple[str, ...] = ("float32", "float16")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    """The sha256 (hex) of some bytes."""
    return hashlib.sha256(data).hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """{sha256, size} of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


# --------------------------------------------------------------------------- the config


def generation_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what generation produced (see the module docstring)."""
    skipped = set(LOCAL_KEYS) | set(AFTER_GENERATION_KEYS)
    return {k: v for k, v in config.items() if k not in skipped}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def config_hash(config: Mapping[str, Any]) -> str:
    """The sha256 of the canonical JSON of `generation_config(config)`."""
    return sha256_bytes(_canonical(generation_config(config)).encode("utf-8"))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_ABSENT = object()


def _shown(value: Any) -> str:
    text = "absent" if value is _ABSENT else _canonical(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(bundle: Mapping[str, Any], here: Mapping[str, Any], limit: int = 3) -> list[str]:
    """The generation keys on which two configs differ, as `key: X in the bundle, Y here` (the first `limit`,
    then `and N more`); empty when they agree. Both are full configs or `generation_config` parts."""
    a, b = _flatten(generation_config(bundle)), _flatten(generation_config(here))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT))
    shown = [
        f"{k}: {_shown(a.get(k, _ABSENT))} in the bundle, {_shown(b.get(k, _ABSENT))} here"
        for k in keys[:limit]
    ]
    if len(keys) > limit:
        shown.append(f"and {len(keys) - limit} more")
    return shown


def mismatch(manifest: Mapping[str, Any], config: Mapping[str, Any], version: str) -> str | None:
    """What differs between the run that made a bundle and this one (toolshift version, generation config),
    in one clause; None when nothing does."""
    parts = []
    if manifest["toolshift_version"] != version:
        parts.append(f"toolshift {manifest['toolshift_version']} made it, this is toolshift {version}")
    if manifest["config_hash"] != config_hash(config):
        differences = config_differences(manifest["config"], config)
        parts.append("its config differs (" + "; ".join(differences or ["in key order or types"]) + ")")
    return "; ".join(parts) or None


def check_compatible(
    manifest: Mapping[str, Any], config: Mapping[str, Any], version: str, where: str
) -> str | None:
    """Refuse (ConfigError, one line) a bundle made by another toolshift version or config, unless the config
    sets `bundle_accept_mismatch: true`; then return what differs (None when nothing does)."""
    problem = mismatch(manifest, config, version)
    if problem and not config.get("bundle_accept_mismatch"):
        raise ConfigError(
            f"bundle {where}: {problem}; import it anyway with --config bundle_accept_mismatch=true, or run "
            "with the bundle's own config (provenance/config.yaml inside it)"
        )
    return problem


# --------------------------------------------------------------------------- the manifest


def archive_path_problem(name: str) -> str | None:
    """Why `name` may not be a path inside a bundle (absolute, `..`, a drive, a backslash, an empty or
    control-character part), or None."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    if "\\" in name or any(ord(c) < 32 for c in name):
        return "a backslash or control character"
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' part that leaves the folder"
    if str(path) != name.rstrip("/") or "." in path.parts:
        return "an empty or '.' part"
    return None


def _require(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise DataError(f"{where}: manifest {MANIFEST_NAME} {what}")


def validate_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Check the manifest's shape (format, version strings, config, safe file paths, sha256 and sizes);
    DataError naming the bundle and the first problem."""
    _require(isinstance(manifest, dict), where, "is not a JSON object")
    _require(
        manifest.get("format") == FORMAT,
        where,
        f"is not a {FORMAT} manifest (format {manifest.get('format')!r})",
    )
    version = manifest.get("format_version")
    _require(
        version == FORMAT_VERSION,
        where,
        f"has format_version {version!r}; this toolshift reads version {FORMAT_VERSION}",
    )
    for key in ("toolshift_version", "config_hash", "created"):
        _require(isinstance(manifest.get(key), str), where, f"lacks the string {key!r}")
    _require(isinstance(manifest.get("config"), dict), where, "lacks the config it was made with")
    _require(
        manifest.get("activations_dtype") in ACTIVATION_DTYPES, where, "names no known activations_dtype"
    )
    files = manifest.get("files")
    _require(isinstance(files, dict) and bool(files), where, "lists no files")
    for name, entry in files.items():
        problem = archive_path_problem(name)
        _require(problem is None, where, f"lists {name!r}, a path with {problem}")
        _require(name not in (MANIFEST_NAME, CRATE_NAME), where, f"lists its own metadata file {name!r}")
        _require(isinstance(entry, dict), where, f"entry {name!r} is not an object")
        _require(isinstance(entry.get("sha256"), str) and bool(_SHA256.match(entry["sha256"])), where,
                 f"entry {name!r} has no sha256 of 64 hex digits")  # fmt: skip
        size = entry.get("size")
        _require(isinstance(size, int) and not isinstance(size, bool) and size >= 0, where,
                 f"entry {name!r} has no size in bytes")  # fmt: skip
    return manifest


def read_manifest(data: bytes, where: str) -> dict[str, Any]:
    """Parse and validate manifest bytes (DataError naming the bundle when they are not a manifest)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: manifest {MANIFEST_NAME} is not valid JSON ({exc})") from None
    return validate_manifest(manifest, where)


def results_files(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's files that go under the results root: path relative to it -> entry."""
    return {
        name[len(RESULTS_PREFIX) :]: entry
        for name, entry in manifest["files"].items()
        if name.startswith(RESULTS_PREFIX)
    }


def missing_results(manifest: Mapping[str, Any], wanted: Iterable[tuple[str, bool]]) -> list[str]:
    """The wanted results paths (relative to the results root; `True` for a folder) the bundle lacks: a file
    must be listed, a folder must hold at least one listed file."""
    have = results_files(manifest)
    missing = []
    for rel, is_dir in wanted:
        prefix = rel.rstrip("/") + "/"
        found = any(name.startswith(prefix) for name in have) if is_dir else rel in have
        if not found:
            missing.append(rel + ("/" if is_dir else ""))
    return missing


def total_size(manifest: Mapping[str, Any]) -> int:
    """The bytes of every listed file together."""
    return sum(int(e["size"]) for e in manifest["files"].values())
