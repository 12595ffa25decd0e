"""Rule `model`: the local model directory of a config entry, a fixture built offline from its seed or a
hub snapshot downloaded at its pinned revision; inference loads either through toolshift.models.loading."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError
from toolshift.files import atomic_dir, disk_full_cause
from toolshift.models.fixtures import build_fixture

HUB_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken")
"""Files taken from a hub snapshot: configs, safetensors weights, tokenizer and chat-template files."""


def prepare_model(
    entry: dict[str, Any], out_dir: str | os.PathLike[str], episodes: dict[str, Any] | None = None
) -> Path:
    """Make the local model directory of a config entry: build a fixture, or download a hub snapshot.

    `source: fixture` builds `toolshift.models.fixtures.build_fixture(family, out_dir, **entry["fixture"])`
    (a planted world is calibrated with the run's episode options `episodes`);
    `source: hub` downloads `hub_id` at `revision` (safetensors and configs only, plus `*.py` when
    `trust_remote_code`) into a temporary directory beside `out_dir`, then renames it onto `out_dir`.
    """
    out = Path(out_dir)
    source = entry.get("source")
    if source == "fixture":
        fixture = dict(entry.get("fixture") or {})
        if fixture.get("planted"):
            fixture["episodes"] = episodes
        return build_fixture(entry["family"], out, **fixture)
    if source != "hub":
        raise ConfigError(f"model entry source {source!r} is not 'fixture' or 'hub'")
    from huggingface_hub import snapshot_download

    patterns = list(HUB_PATTERNS) + (["*.py"] if entry.get("trust_remote_code") else [])
    with atomic_dir(out) as tmp:
        try:
            snapshot_download(
                entry["hub_id"], revision=entry.get("revision"), local_dir=tmp, allow_patterns=patterns
            )
        except Exception as exc:  # noqa: BLE001 - network, auth and missing-revision errors alike
            if disk_full_cause(exc) is not None:
                raise  # atomic_dir names the file it was writing
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            what = f"model {entry['hub_id']!r} at revision {entry.get('revision')!r}"
            raise ConfigError(f"{what} cannot be downloaded: {first}") from None
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
    return out
