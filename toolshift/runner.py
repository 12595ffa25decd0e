"""One inference shard end to end: load the model, pick the shard's episodes, generate, write contracts.

Both inference rules use it: a plain condition run (with residual capture) and an intervention run
(with a hook, no capture). Writing goes through atomic helpers, so a killed shard leaves nothing
that Snakemake would take as complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolshift import __version__
from toolshift.activations import concat_shards, read_activations, to_dataset, write_activations
from toolshift.contracts import RESPONSE_COLUMNS, read_episodes, read_prompts, read_responses, write_parquet
from toolshift.episodes import FREE_CONDITION
from toolshift.errors import ContractError
from toolshift.free_loop import run_free
from toolshift.gpus import job_device
from toolshift.hooks import Intervention
from toolshift.inference import generate
from toolshift.inference import shard as shard_of
from toolshift.interventions import hook_intervention, parse_intervention_id, resolve_layer
from toolshift.modeling import load_model
from toolshift.vectors import read_vectors

log = logging.getLogger(__name__)

PROMPT_FIELDS: tuple[str, ...] = ("prompt_id", "dataset", "category", "harmful")


def attach_prompt_fields(
    responses: pd.DataFrame, prompts: pd.DataFrame, model: str, intervention: str
) -> pd.DataFrame:
    """Complete a generation table into the responses contract (dataset, category, harmful, model, ...)."""
    missing = set(responses["prompt_id"]) - set(prompts["prompt_id"])
    if missing:
        raise ContractError(f"episodes name prompt_id {sorted(missing)[0]!r} that prompts.parquet lacks")
    out = responses.merge(prompts[list(PROMPT_FIELDS)], on="prompt_id", how="left", validate="one_to_one")
    out["model"] = model
    out["intervention"] = intervention
    extra = [c for c in out.columns if c not in RESPONSE_COLUMNS]
    return out[list(RESPONSE_COLUMNS) + extra]


def run_shard(
    *,
    model_name: str,
    entry: dict[str, Any],
    model_dir: Path,
    episodes_path: Path,
    prompts_path: Path,
    results_root: Path,
    generation: dict[str, Any],
    shard: int,
    n_shards: int,
    responses_out: Path,
    activations_out: Path | None = None,
    intervention: str | None = None,
    vectors_path: Path | None = None,
    layer: int | str | None = None,
    free: dict[str, Any] | None = None,
) -> None:
    """Generate one shard of one (model, dataset, condition or intervention) and write its files.

    Episodes of the `free` condition go through the bounded tool loop (toolshift.free_loop); its crops
    are written beside the run, under `runs/{model}/{dataset}/free/images/`.
    """
    prompts = read_prompts(prompts_path)
    episodes = shard_of(read_episodes(episodes_path), n_shards, shard)
    loaded = load_model(
        model_dir,
        entry["family"],
        revision=entry.get("revision"),
        dtype=entry.get("dtype", "float32"),
        device=job_device(generation.get("device", "auto")),
        trust_remote_code=entry.get("trust_remote_code", False),
    )
    hook = None
    if intervention is not None:
        if vectors_path is None:
            raise ContractError(f"intervention {intervention!r} needs a vectors file")
        spec = parse_intervention_id(intervention)
        vectors = read_vectors(vectors_path)
        at_layer = resolve_layer(layer if layer is not None else "auto", loaded.n_layers, vectors)
        hook = Intervention(**hook_intervention(spec, vectors, at_layer))
        log.info("intervention %s at layer %d", intervention, at_layer)
    log.info("%s: %d episodes in shard %d/%d", model_name, len(episodes), shard, n_shards)
    is_free = bool(episodes) and episodes[0]["condition"] == FREE_CONDITION
    if is_free:
        free = free or {}
        run_dir = Path(responses_out).resolve().parent.parent
        responses, states = run_free(
            loaded,
            episodes,
            results_root,
            images_dir=str(run_dir.relative_to(Path(results_root).resolve()) / "images"),
            max_turns=free.get("max_turns", 4),
            max_calls_per_turn=free.get("max_calls_per_turn", 4),
            max_new_tokens=free.get("max_new_tokens") or generation["max_new_tokens"],
            batch_size=generation["batch_size"],
            capture=activations_out is not None,
            intervention=hook,
        )
    else:
        responses, states = generate(
            loaded,
            episodes,
            results_root,
            batch_size=generation["batch_size"],
            max_new_tokens=generation["max_new_tokens"],
            capture=activations_out is not None,
            intervention=hook,
        )
    table = attach_prompt_fields(responses, prompts, model_name, intervention or "none")
    if activations_out is not None:
        assert states is not None
        attrs = {
            "model": model_name,
            "revision": entry.get("revision") or "fixture",
            "condition": str(episodes[0]["condition"]) if episodes else "",
            "position": "first_turn_last_prompt_token" if is_free else "last_prompt_token",
            "dtype": str(np.asarray(states).dtype),
            "toolshift_version": __version__,
        }
        write_activations(to_dataset(states, list(responses["prompt_id"]), attrs), activations_out)
    write_parquet(table, responses_out)


def merge_shards(
    response_paths: list[Path],
    responses_out: Path,
    activation_paths: list[Path] | None = None,
    activations_out: Path | None = None,
) -> None:
    """Concatenate shard files into the run's responses.parquet (and activations.nc)."""
    table = pd.concat([read_responses(p) for p in response_paths], ignore_index=True)
    if table["prompt_id"].duplicated().any():
        raise ContractError(f"{responses_out}: shards overlap (duplicate prompt_id)")
    if activations_out is not None:
        merged = concat_shards([read_activations(p) for p in activation_paths or []])
        write_activations(merged, activations_out)
    write_parquet(table, responses_out)
