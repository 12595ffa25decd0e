"""The file contracts between DAG stages: column lists, validators and atomic writers.

Every rule reads and writes files through these helpers, so a replacement rule (another inference
backend, another judge) only has to write files that pass the same validators.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.errors import ContractError
from toolshift.files import atomic_path

PROMPT_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "dataset",
    "category",
    "harmful",
    "question",
    "instruction",
    "image",
)
"""`prompts.parquet`: one row per prompt; `image` is a path relative to the results root."""

TOKEN_COLUMNS: tuple[str, ...] = (
    "n_images", "n_visual_tokens", "n_text_tokens", "n_after_instruction", "n_visual_after_instruction"
)  # fmt: skip
"""How a response's prompt splits into tokens (toolshift.models.token_counts: images, their tokens, the rest,
the tokens after the end of the attack text T and its visual tokens); -1 where the backend cannot count."""

RESPONSE_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "dataset",
    "category",
    "harmful",
    "model",
    "condition",
    "intervention",
    "response",
    "n_prompt_tokens",
    "n_new_tokens",
    "max_new_tokens",
    "do_sample",
    "engine",
    "zoom_scale",
    *TOKEN_COLUMNS,
)
"""`responses.parquet`: one row per generation; `intervention` is `none` or the intervention id; `engine`
the inference engine that generated it (`hf`, `vllm`, `api`); `zoom_scale` the episode's zoom
magnification (`meta.zoom_scale`; NaN in conditions without a zoom box); then TOKEN_COLUMNS."""

JUDGED_COLUMNS = RESPONSE_COLUMNS + ("judge", "unsafe", "judge_raw", "outcome", "non_answer_reason")
"""Judged tables: a responses table plus the verdict, its `toolshift.OUTCOMES` value, why a non-answer."""

ASR_KEYS: tuple[str, ...] = ("model", "dataset", "condition", "intervention", "judge")
"""The group an ASR or over-refusal row describes: one run of one judge."""

ASR_COLUMNS: tuple[str, ...] = (
    *ASR_KEYS,
    "n",
    "n_unsafe",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "rel_reduction",
    "rel_reduction_ci_low",
    "rel_reduction_ci_high",
    "mcnemar_p",
)
"""`tables/asr.csv`: ASR per (model, dataset, condition, intervention, judge) on harmful prompts."""

ASR_EXTRA_COLUMNS: tuple[str, ...] = (
    "split",
    "category",
    "holm_p",
    "asr_ref_paired",
    "paired_subset",
    "rel_reduction_ci_method",
    "rel_reduction_boot_ci_low",
    "rel_reduction_boot_ci_high",
    "n_boot",
    "n_boot_used",
    "low_boot_share",
) + ("n_non_answer", "non_answer_rate", "asr_non_answer_as_safe", "asr_non_answer_excluded",
     "asr_non_answer_excluded_ci_low", "asr_non_answer_excluded_ci_high")  # fmt: skip
"""Columns `toolshift.analysis.tables.asr_table` writes after ASR_COLUMNS (its docstring says what they
mean)."""

ASR_TABLE_COLUMNS: tuple[str, ...] = ASR_COLUMNS + ASR_EXTRA_COLUMNS
"""Every column of `tables/asr.csv`, `tables/asr_validation.csv` and `tables/asr_by_category.csv`."""

OVER_REFUSAL_COLUMNS: tuple[str, ...] = (
    *ASR_KEYS,
    "n",
    "n_refused",
    "refusal_rate",
    "refusal_ci_low",
    "refusal_ci_high",
    "split",
) + ("n_non_answer", "detector")
"""`tables/over_refusal.csv`, `_validation`: refusal rate on harmless prompts by a refusal ``detector``."""

FREE_TOOL_USE_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "used_tool",
    "n",
    "n_unsafe",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "mean_tool_calls",
    "n_malformed_calls",
    "n_stopped_at_max_turns",
    "split",
)
"""`tables/free_tool_use.csv`: ASR of the `free` condition split by whether the model called the tool."""

TRANSFER_COLUMNS: tuple[str, ...] = (
    "model",
    "judge",
    "split",
    "source_dataset",
    "target_dataset",
    "alpha",
    "intervention",
    "layer",
    "n",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "rel_reduction",
    "rel_reduction_ci_low",
    "rel_reduction_ci_high",
    "mcnemar_p",
    "holm_p",
    "direct_asr",
    "in_dataset_add_asr",
    "cos_tool_vectors",
)
"""`tables/transfer.csv`: the tool vector of one dataset added to ``direct`` runs of another."""

REPRESENTATION_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "condition",
    "layer",
    "split",
    "n_harmful",
    "cos_shift_tool",
    "cos_shift_refusal",
    "shift_norm_ratio",
    "refusal_position",
    "refusal_position_ci_low",
    "refusal_position_ci_high",
    "probe_accuracy",
    "probe_test_accuracy",
    "cos_shift_refusal_ci_low", "cos_shift_refusal_ci_high", "cos_shift_refusal_p",
    "refusal_shift", "refusal_shift_ci_low", "refusal_shift_ci_high", "refusal_shift_p",
    "probe_test_accuracy_ci_low", "probe_test_accuracy_ci_high", "probe_test_accuracy_p",
    "probe_accuracy_change", "probe_accuracy_change_ci_low", "probe_accuracy_change_ci_high",
    "probe_accuracy_change_p",
)  # fmt: skip
"""`tables/representation.csv`: per condition, at each file's selected layer: the cosine of its shift
from ``direct`` with the tool vector and the refusal direction, the shift's norm over the tool vector's,
the mean position of the harmful evaluation prompts along the refusal direction (0 = harmless direct,
1 = harmful direct; 95 % normal CI of the mean) and the direct probe's CV and test accuracy; `_ci_low`,
`_ci_high`, `_p`: the file's ``shift_null`` (toolshift.analysis.representation_nulls)."""

COST_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "intervention",
    "condition",
    "layer",
    "prompt_id",
    "split",
    "n_prompt_positions",
    "n_generated_positions",
    "kl_prompt",
    "kl_last",
    "kl_generated",
)
"""``costs/{model}/{dataset}.parquet``: one row per (intervention, harmless prompt)."""

COST_TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "intervention",
    "condition",
    "layer",
    "split",
    "n",
    "kl_mean",
    "kl_ci_low",
    "kl_ci_high",
    "kl_last_mean",
    "kl_generated_mean",
)
"""``tables/intervention_cost.csv``: mean ``kl_prompt`` per intervention with a 95 % bootstrap CI over
prompts, and the means of ``kl_last`` and ``kl_generated``."""

PLANTED_COLUMNS: tuple[str, ...] = (
    "check",
    "description",
    "planted",
    "recovered",
    "criterion",
    "passed",
    "ci_low",
    "ci_high",
)
"""`tables/validation_planted.csv`, one row per planted-truth check (``ci_low``/``ci_high``: the
recovered CI where there is one); `tables/validation_planted_model.csv` has these after ``model``."""

FIDELITY_COLUMNS: tuple[str, ...] = (
    "dataset_row",
    "image",
    "category_id",
    "task_id",
    "category",
    "n_pixels",
    "n_differing_pixels",
    "agreement",
    "identical",
)
"""`tables/validation_figstep.csv`, one row per compared SafeBench image (``category`` empty where the
CSV has no ``category_name``)."""

EPISODE_KEYS: tuple[str, ...] = ("prompt_id", "condition", "messages", "meta")
"""`episodes/{dataset}/{condition}.jsonl`: the keys of every line."""

MESSAGE_ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})

ACTIVATION_DIMS: tuple[str, ...] = ("prompt_id", "layer", "hidden")
"""`activations.nc`: variable `resid` with these dims."""

ACTIVATION_ATTRS: tuple[str, ...] = (
    "model",
    "revision",
    "condition",
    "position",
    "dtype",
    "toolshift_version",
)


# --------------------------------------------------------------------------- writing tables


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a CSV table atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a malformed line is reported with its file and line number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ContractError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return records


# --------------------------------------------------------------------------- validation


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: str | os.PathLike[str]) -> None:
    """Raise a one-line ContractError naming the file and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"{path}: missing column(s) {', '.join(missing)}")


def read_table(path: str | os.PathLike[str], columns: Iterable[str]) -> pd.DataFrame:
    """Read a parquet or CSV contract table and check that it has the given columns."""
    p = Path(path)
    if not p.exists():
        raise ContractError(f"{p}: file not found")
    try:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        raise ContractError(f"{p}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    require_columns(df, columns, p)
    return df


def check_prompts(df: pd.DataFrame, where: str | os.PathLike[str]) -> None:
    """A prompts table's rows: at least one, unique `prompt_id`, boolean `harmful` (ContractError naming
    `where`)."""
    if df.empty:
        raise ContractError(f"{where}: no prompts")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(dup):
        raise ContractError(f"{where}: duplicate prompt_id {dup.iloc[0]!r}")
    if df["harmful"].dtype != bool:
        raise ContractError(f"{where}: column harmful must be boolean, got {df['harmful'].dtype}")


def read_prompts(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read `prompts.parquet` and check its contract (columns, unique ids, boolean `harmful`)."""
    df = read_table(path, PROMPT_COLUMNS)
    check_prompts(df, path)
    return df


def read_responses(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a `responses.parquet` and check its columns."""
    return read_table(path, RESPONSE_COLUMNS)


def validate_episode(record: dict[str, Any], where: str) -> None:
    """Check one episode object against the episodes contract; `where` names file and line."""
    missing = [k for k in EPISODE_KEYS if k not in record]
    if missing:
        raise ContractError(f"{where}: episode lacks key(s) {', '.join(missing)}")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ContractError(f"{where}: messages must be a non-empty list")
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in MESSAGE_ROLES:
            raise ContractError(
                f"{where}: message {i} has role {role!r}, expected one of {sorted(MESSAGE_ROLES)}"
            )
        for part in msg.get("content", []):
            if part.get("type") not in ("text", "image"):
                raise ContractError(f"{where}: message {i} has a content part of type {part.get('type')!r}")
            if part["type"] == "image" and "path" not in part:
                raise ContractError(f"{where}: message {i} has an image part without a path")
        for call in msg.get("tool_calls", []) or []:
            if not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), dict):
                raise ContractError(f"{where}: message {i} has a malformed tool call {call!r}")


def read_episodes(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an episodes JSONL file."""
    records = read_jsonl(path)
    if not records:
        raise ContractError(f"{path}: no episodes")
    for lineno, record in enumerate(records, start=1):
        validate_episode(record, f"{path}:{lineno}")
    return records


# --------------------------------------------------------------------------- the other result tables

PLANTED_MODEL_COLUMNS: tuple[str, ...] = ("model", *PLANTED_COLUMNS)
"""`tables/validation_planted_model.csv`."""

HUMAN_AGREEMENT_COLUMNS: tuple[str, ...] = (
    "judge",
    "n",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "kappa",
    "tp",
    "fp",
    "fn",
    "tn",
)
"""`tables/judge_human_agreement.csv`: one row per judge."""

PAIRWISE_COLUMNS: tuple[str, ...] = ("judge_a", "judge_b", "n", "percent_agreement", "kappa")
"""`tables/judge_agreement.csv`: one row per pair of judges."""

FREE_COLUMNS: tuple[str, ...] = (
    "n_tool_calls",
    "n_malformed_calls",
    "n_turns",
    "used_tool",
    "stop_reason",
    "transcript",
)
"""The columns a `free` run adds to the responses table."""

SKIPPED_COLUMNS: tuple[str, ...] = ("prompt_id", "harmful", "category", "reason")
"""Columns of `data/{dataset}/skipped.csv`: the prompts left out because their image cannot carry them."""

ACTIVATION_TABLES: tuple[str, ...] = (
    "selection", "transfer", "intervention_cost", "representation", "relative_vectors",
)  # fmt: skip
"""The tables (`tables/{name}.csv`) built from activations (vector files, KL costs): a study whose models are
all API models (backend openai: text only) has none; the book says they are not available for API models."""

PROMPT_CHANGES_COLUMNS: tuple[str, ...] = ("prompt_id", "source", "change", "detail")
"""Columns of `data/{dataset}/changes.csv`: what the prompts rule changed in a prompt it kept (`change`:
`id_rewritten` with the source id in `detail`, `image_downscaled` with the factor); `source` names the row
of the dataset file."""

SPLIT_COLUMNS: tuple[str, ...] = ("prompt_id", "dataset", "category", "harmful", "split")
"""`splits/{dataset}.parquet`: one row per prompt of the dataset."""

ASR_BY_SCALE_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "split",
    "condition",
    "scale_bin",
    "scale_min",
    "scale_max",
    "n",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "reference_asr",
    "reference_asr_ci_low",
    "reference_asr_ci_high",
    "mcnemar_p",
    "trend_rho",
    "trend_p",
)
"""`tables/asr_by_scale.csv`: one row per (model, dataset, judge, zoom condition, scale bin); the trend
columns (over all the condition's paired prompts) repeat on every bin of a condition."""

CONTRASTS_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "split",
    "claim",
    "contrast",
    "condition_a",
    "intervention_a",
    "condition_b",
    "intervention_b",
    "n",
    "n_unpaired",
    "n_unsafe_a",
    "n_unsafe_b",
    "asr_a",
    "asr_b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "n_only_a",
    "n_only_b",
    "mcnemar_p",
    "holm_p",
    "expected",
    "verdict",
    "test", "test_p", "asr_a_base", "asr_b_base",
    "margin", "tost_p", "tost_ci_low", "tost_ci_high", "verdict_non_answers_excluded",
)  # fmt: skip
"""`tables/contrasts.csv`: one row per (model, dataset, judge, split, claim, pair of runs); ``test`` names
the test of ``test_p`` (Holm's input): ``mcnemar_exact`` or ``did_permutation_exact`` (analysis.mechanism),
or ``tost`` (an equivalence row within ``margin``, its own ``tost_p``; ``test_p`` its McNemar p:
toolshift.analysis.contrasts); ``verdict_non_answers_excluded`` the verdict without the prompts any run of
the row did not answer."""

CLAIMS_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "split",
    "claim",
    "verdict",
    "n_rows",
    "components",
    "missing",
)
"""`tables/claims.csv`: one verdict per (model, dataset, judge, split, claim) from the contrast rows
(`toolshift.analysis.claims`); ``components`` lists each contrast id's verdict, ``missing`` the ids the run
has no rows for."""

WORLD_CLAIM_COLUMNS: tuple[str, ...] = (
    "model",
    "world",
    "dataset",
    "judge",
    "claim",
    "expected",
    "verdict",
    "passed",
    "components",
)
"""`tables/validation_worlds.csv`: each planted world's (and each random fixture's, the null world) claim
verdicts against its planted truth (``expected``: the verdicts allowed, joined by `` or ``)."""

TOKEN_COUNT_COLUMNS: tuple[str, ...] = (
    "model", "family", "dataset", "split", "condition", "n", *TOKEN_COLUMNS,
    "n_after_instruction_min", "n_after_instruction_max",
)  # fmt: skip
"""`tables/token_counts.csv`: per (model, dataset, condition) the mean token counts of the harmful prompts
without intervention, and the range of `n_after_instruction` (toolshift.analysis.tokens)."""

TOKENS_MODEL_COLUMNS: tuple[str, ...] = (
    "model", "dataset", "judge", "split", "term", "coef", "se", "z", "p", "ci_low", "ci_high",
    "n", "n_unsafe", "reference", "dropped_levels", "converged", "note",
)  # fmt: skip
"""`tables/tokens_model.csv`: one row per term of the logistic model unsafe ~ level + n_after_instruction per
(model, dataset, judge); the tokens term is `n_after_instruction` (per token; toolshift.analysis.tokens)."""

HEADLINE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "model",
    "judge",
    "split",
    "condition",
    "reference",
    "n_models",
    "n",
    "reference_asr",
    "asr",
    "rel_reduction",
    "rel_reduction_ci_low",
    "rel_reduction_ci_high",
    "conf",
    "n_boot",
    "n_boot_used",
    "low_boot_share",
    "excluded",
) + ("abs_reduction", "abs_reduction_ci_low", "abs_reduction_ci_high", "estimator")
"""`tables/headline.csv`: per reference, (dataset, model) rows, then the mean-over-models and the pooled rows
per dataset and over all (``all``); relative and absolute reductions (`toolshift.analysis.headline`)."""

SELECTION_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "n_layers",
    "exclude_last_frac",
    "layer",
    "layer_criterion",
    "layer_score",
    "alpha",
    "alpha_criterion",
    "alpha_validation_asr",
    "direct_validation_asr",
    "tool_validation_asr",
)
"""`tables/selection.csv`: the layer (from the vectors file) and alpha chosen on validation prompts."""
