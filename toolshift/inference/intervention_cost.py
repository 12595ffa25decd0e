"""What an intervention costs the model on harmless prompts: KL divergence of next-token distributions.

For each harmless prompt (the base condition's episode of every intervention) the model runs twice,
without and with the hook, and at each scored position

    KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)),   P unhooked, Q hooked (natural log, nats),

over the next-token distribution. Scored positions:

- ``kl_prompt``: the mean over the last `prompt_positions` prompt tokens (the chat template's tail and
  the request, where Arditi et al. measure the cost; fewer if the prompt is shorter);
- ``kl_last``: the last prompt position alone, i.e. the distribution of the first generated token;
- ``kl_generated``: the mean over the first `n_generated` generated positions, teacher-forced on the
  *unhooked* greedy continuation (position i predicts generated token i + 1), cut at the first eos/pad;
  NaN when `n_generated` is 0 or the continuation ends at once.

Prompts: the harmless prompts of the validation and the test split (COST_SPLITS), each row labelled with
its split: `toolshift.analysis.selection` bounds alpha by the validation rows only, the test rows are
reported.

alpha = 0 (and any hook that leaves the stream unchanged) gives exactly 0; the cost grows with alpha.
The rows (`toolshift.contracts.COST_COLUMNS`) go to ``costs/{model}/{dataset}.parquet``;
`toolshift.analysis.intervention_cost.intervention_cost_table` summarises them into
``tables/intervention_cost.csv``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.analysis.interventions import (
    parse_intervention_id,
    resolve_layer,
    vectors_dataset,
)
from toolshift.analysis.steering import residual_edit
from toolshift.contracts import COST_COLUMNS, read_episodes, read_prompts, write_parquet
from toolshift.datasets.splits import read_splits, split_of
from toolshift.errors import ContractError
from toolshift.models.generation import _generation_config, _stop_ids, encode
from toolshift.models.hooks import ResidualEdit, apply_intervention

log = logging.getLogger(__name__)

COST_SPLITS: tuple[str, ...] = ("validation", "test")
"""The splits whose harmless prompts the cost is measured on: validation (what selection reads, the
bound on alpha) and test (reported beside the results, never read by a choice)."""

DEFAULT_PROMPT_POSITIONS = 16
DEFAULT_N_GENERATED = 8


def _kl(logp: Any, logq: Any) -> Any:
    """KL(P || Q) along the last axis from log-probabilities (torch tensors, float64)."""
    return (logp.exp() * (logp - logq)).sum(dim=-1).clamp_min(0.0)


KL_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "n_prompt_positions",
    "n_generated_positions",
    "kl_prompt",
    "kl_last",
    "kl_generated",
)
"""The columns `next_token_kl` returns."""


def next_token_kl(
    loaded: Any,
    episodes: Sequence[dict[str, Any]],
    results_root: str | os.PathLike[str],
    intervention: ResidualEdit | None,
    *,
    batch_size: int = 8,
    prompt_positions: int = DEFAULT_PROMPT_POSITIONS,
    n_generated: int = DEFAULT_N_GENERATED,
) -> pd.DataFrame:
    """Per-episode KL of the next-token distributions without vs with `intervention` (module docstring).

    Columns: KL_COLUMNS.
    """
    kl = next_token_kls(
        loaded,
        episodes,
        results_root,
        {"only": intervention},
        batch_size=batch_size,
        prompt_positions=prompt_positions,
        n_generated=n_generated,
    )
    return kl["only"]


def next_token_kls(
    loaded: Any,
    episodes: Sequence[dict[str, Any]],
    results_root: str | os.PathLike[str],
    interventions: Mapping[str, ResidualEdit | None],
    *,
    batch_size: int = 8,
    prompt_positions: int = DEFAULT_PROMPT_POSITIONS,
    n_generated: int = DEFAULT_N_GENERATED,
) -> dict[str, pd.DataFrame]:
    """`next_token_kl` for several interventions on the same episodes: per batch, the unhooked
    continuation and distributions are computed once and compared with each hooked pass."""
    import torch

    if prompt_positions < 1 or n_generated < 0 or batch_size < 1:
        raise ValueError(
            f"next_token_kl: prompt_positions ({prompt_positions}) and batch_size ({batch_size}) must be "
            f">= 1 and n_generated ({n_generated}) >= 0"
        )
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in interventions}
    config = _generation_config(loaded, max(1, n_generated))
    stop = _stop_ids(config)
    with torch.inference_mode():
        for start in range(0, len(episodes), batch_size):
            batch = list(episodes[start : start + batch_size])
            inputs = encode(loaded, batch, results_root)
            prompt_len = inputs["input_ids"].shape[1]
            prompt_mask = inputs["attention_mask"].bool()
            n_gen = 0
            live = None
            if n_generated > 0:
                out = loaded.model.generate(**inputs, generation_config=config)
                gen = out[:, prompt_len:]
                n_gen = gen.shape[1]
                is_stop = torch.zeros_like(gen, dtype=torch.bool)
                for t in stop:
                    is_stop |= gen == t
                live = (~is_stop).long().cumprod(dim=1).bool()  # before the first stop token
                for key in list(inputs.keys()):  # per-token extras (e.g. Qwen's mm_token_type_ids): text = 0
                    val = inputs[key]
                    if key not in ("input_ids", "attention_mask") and torch.is_tensor(val) and val.dim() == 2:
                        if val.shape == gen.shape[:1] + (prompt_len,):
                            inputs[key] = torch.cat([val, torch.zeros_like(gen, dtype=val.dtype)], dim=1)
                inputs["input_ids"] = out
                inputs["attention_mask"] = torch.cat([inputs["attention_mask"], live.long()], dim=1)
            keep = prompt_positions + n_gen
            plain = loaded.model(**inputs, logits_to_keep=keep).logits.double().log_softmax(-1)
            for name, intervention in interventions.items():
                with apply_intervention(loaded, intervention):
                    hooked = loaded.model(**inputs, logits_to_keep=keep).logits.double().log_softmax(-1)
                kl = _kl(plain, hooked)  # (batch, width): the last `width` positions of the sequence
                rows[name] += _kl_rows(batch, kl, prompt_mask, prompt_len, n_gen, live)
    return {name: pd.DataFrame(r, columns=list(KL_COLUMNS)) for name, r in rows.items()}


def _kl_rows(
    batch: Sequence[dict[str, Any]], kl: Any, prompt_mask: Any, prompt_len: int, n_gen: int, live: Any
) -> list[dict[str, Any]]:
    """KL_COLUMNS rows of one batch from its per-position KL (the last prompt and generated positions)."""
    n_prompt_cols = kl.shape[1] - n_gen  # prompt positions prompt_len - n_prompt_cols .. prompt_len - 1
    mask_prompt = prompt_mask[:, prompt_len - n_prompt_cols :]
    rows = []
    for i, episode in enumerate(batch):
        vals = kl[i, :n_prompt_cols][mask_prompt[i]]
        row = {
            "prompt_id": episode["prompt_id"],
            "n_prompt_positions": int(mask_prompt[i].sum()),
            "n_generated_positions": 0,
            "kl_prompt": float(vals.mean()) if vals.numel() else math.nan,
            "kl_last": float(kl[i, n_prompt_cols - 1]),
            "kl_generated": math.nan,
        }
        if n_gen > 1:
            # position prompt_len + j predicts generated token j + 1: scored while that token is live
            gen_kl = kl[i, n_prompt_cols : n_prompt_cols + n_gen - 1]
            valid = live[i, 1:]
            if valid.any():
                row["kl_generated"] = float(gen_kl[valid].mean())
                row["n_generated_positions"] = int(valid.sum())
        rows.append(row)
    return rows


def run_intervention_costs(
    *,
    model_name: str,
    entry: dict[str, Any],
    model_dir: Path,
    dataset: str,
    episodes_paths: Mapping[str, Path],
    prompts_path: Path,
    splits_path: Path | None,
    vectors_paths: Mapping[str, Path],
    results_root: Path,
    interventions: Sequence[str],
    layer: int | str,
    generation: Mapping[str, Any],
    out: Path,
    cost_splits: Sequence[str] = COST_SPLITS,
    prompt_positions: int = DEFAULT_PROMPT_POSITIONS,
    n_generated: int = DEFAULT_N_GENERATED,
) -> pd.DataFrame:
    """The cost of every intervention of one (model, dataset) on its harmless prompts of `cost_splits`.

    Writes and returns COST_COLUMNS rows to `out`.

    `episodes_paths` maps a base condition (``direct``, ``tool``) to its episodes file; `vectors_paths`
    maps a dataset name to its vectors file (the dataset itself, and the sources of transfer runs).
    """
    from toolshift.analysis.vectors import read_vectors
    from toolshift.models.loading import load_model

    prompts = read_prompts(prompts_path)
    harmless = set(prompts.loc[~prompts["harmful"], "prompt_id"].astype(str))
    splits = read_splits(splits_path) if splits_path is not None else None
    loaded = load_model(
        model_dir,
        entry["family"],
        revision=entry.get("revision"),
        dtype=entry.get("dtype", "float32"),
        device=generation.get("device", "auto"),
        trust_remote_code=entry.get("trust_remote_code", False),
    )
    vectors_cache: dict[str, Any] = {}
    hooks: dict[str, dict[str, ResidualEdit]] = {}  # base condition -> intervention id -> hook
    layers: dict[str, int] = {}
    for iid in interventions:
        spec = parse_intervention_id(iid)
        source = vectors_dataset(iid, dataset)
        if source not in vectors_paths:
            raise ContractError(f"intervention {iid!r}: no vectors file for dataset {source!r}")
        if source not in vectors_cache:
            vectors_cache[source] = read_vectors(vectors_paths[source])
        vectors = vectors_cache[source]
        if spec.base_condition not in episodes_paths:
            raise ContractError(
                f"intervention {iid!r}: no episodes file for condition {spec.base_condition!r}"
            )
        at_layer = resolve_layer(layer, loaded.n_layers, vectors)
        hook = residual_edit(spec, vectors, at_layer)
        hooks.setdefault(spec.base_condition, {})[iid] = hook
        layers[iid] = at_layer if hook.layer is not None else -1  # ablations act at every layer
    episodes = {base: read_episodes(episodes_paths[base]) for base in hooks}
    table = cost_rows(
        loaded,
        model_name=model_name,
        dataset=dataset,
        hooks={
            iid: (base, hook, layers[iid]) for base, by_id in hooks.items() for iid, hook in by_id.items()
        },
        episodes=episodes,
        harmless=harmless,
        splits=splits,
        results_root=results_root,
        batch_size=int(generation.get("batch_size", 8)),
        prompt_positions=prompt_positions,
        n_generated=n_generated,
        cost_splits=cost_splits,
        order=interventions,
    )
    write_parquet(table, out)
    return table


def cost_rows(
    loaded: Any,
    *,
    model_name: str,
    dataset: str,
    hooks: Mapping[str, tuple[str, ResidualEdit, int]],
    episodes: Mapping[str, Sequence[dict[str, Any]]],
    harmless: set[str],
    splits: pd.DataFrame | None,
    results_root: str | os.PathLike[str],
    batch_size: int = 8,
    prompt_positions: int = DEFAULT_PROMPT_POSITIONS,
    n_generated: int = DEFAULT_N_GENERATED,
    cost_splits: Sequence[str] = COST_SPLITS,
    order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """COST_COLUMNS rows of the interventions `hooks` (id -> base condition, hook, layer recorded) on a
    loaded model: each base condition's `episodes` of `harmless` prompts in `cost_splits` (all without a
    split table), each row labelled with its prompt's split. Rows follow `order` (default: the order of
    `hooks`); no rows where no prompt qualifies."""
    by_base: dict[str, dict[str, ResidualEdit]] = {}
    for iid, (base, hook, _) in hooks.items():
        if base not in episodes:
            raise ContractError(f"intervention {iid!r}: no episodes for condition {base!r}")
        by_base.setdefault(base, {})[iid] = hook
    frames: dict[str, pd.DataFrame] = {}
    for base, base_hooks in by_base.items():
        eps = [e for e in episodes[base] if str(e["prompt_id"]) in harmless]
        labels = split_of(splits, [str(e["prompt_id"]) for e in eps], dataset)
        chosen = [e for e, s in zip(eps, labels, strict=True) if splits is None or s in cost_splits]
        log.info(
            "%s/%s: KL cost of %d intervention(s) on %s, %d prompts",
            model_name,
            dataset,
            len(base_hooks),
            base,
            len(chosen),
        )
        if not chosen:
            continue
        kls = next_token_kls(
            loaded,
            chosen,
            results_root,
            base_hooks,
            batch_size=batch_size,
            prompt_positions=prompt_positions,
            n_generated=n_generated,
        )
        for iid, df in kls.items():
            ids = [str(p) for p in df["prompt_id"]]
            df.insert(0, "split", split_of(splits, ids, dataset) if splits is not None else "all")
            df.insert(0, "layer", hooks[iid][2])
            df.insert(0, "condition", base)
            df.insert(0, "intervention", iid)
            df.insert(0, "dataset", dataset)
            df.insert(0, "model", model_name)
            frames[iid] = df
    ordered = [frames[iid] for iid in (order or list(hooks)) if iid in frames]
    table = pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame(columns=list(COST_COLUMNS))
    return table[list(COST_COLUMNS)]


__all__ = [
    "COST_SPLITS",
    "KL_COLUMNS",
    "cost_rows",
    "next_token_kl",
    "next_token_kls",
    "run_intervention_costs",
]
