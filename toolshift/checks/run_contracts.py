"""Validate a run directory written by ANY inference backend against the file contracts.

A replacement inference rule (vLLM, an API, a cluster job of your own) is accepted by the rest of the
DAG exactly when its run directory passes these checks:

- `responses.parquet`: every column of `toolshift.contracts.RESPONSE_COLUMNS` with the right dtype
  (strings; `harmful` and `do_sample` boolean; token counts integer, -1 meaning "not reported", and
  consistent where reported: visual + text tokens = prompt tokens, the tokens after the instruction at
  most the prompt's, its visual tokens at most both);
  one row per prompt, with prompt ids exactly those of the prompts table (or of the episodes file
  when one is given); `model`, `condition` and `intervention` equal to what the path says; `dataset`,
  `category` and `harmful` equal to the prompts table's; no missing `response`.
- `activations.nc` (checked when required, or whenever present): readable netCDF with variable
  `resid` (prompt_id, layer, hidden), the contract attrs, `model` and `condition` attrs matching,
  the same prompt ids as the responses, layers numbered 0..L-1 and finite values.

Command line: `python -m toolshift.checks.run_contracts RUN_DIR --prompts PROMPTS [--activations]` prints `OK
...`
(exit 0) or one problem per line (exit 1). Model, condition and intervention are read from a
`runs/{model}/{dataset}/{condition}` or `interventions/{model}/{dataset}/{intervention}` path unless
given as options.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from toolshift.contracts import RESPONSE_COLUMNS, TOKEN_COLUMNS, read_episodes, read_prompts
from toolshift.errors import ConfigError, ContractError

RESPONSES_FILE = "responses.parquet"
ACTIVATIONS_FILE = "activations.nc"
STRING_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "dataset",
    "category",
    "model",
    "condition",
    "intervention",
    "response",
    "engine",
)
BOOL_COLUMNS: tuple[str, ...] = ("harmful", "do_sample")
INT_COLUMNS: tuple[str, ...] = ("n_prompt_tokens", "n_new_tokens", "max_new_tokens", *TOKEN_COLUMNS)
NO_INTERVENTION = "none"


def _first(values: Sequence[object]) -> str:
    return repr(sorted(str(v) for v in values)[0])


def _plain(value: object) -> object:
    """A numpy scalar as the Python value (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_string_column(series: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return True
    return series.dtype == object and all(isinstance(v, str) for v in series.dropna())


def _token_problems(df: pd.DataFrame, where: str) -> list[str]:
    """The token counts of each row add up (rows with a count not reported, -1, are left out)."""
    columns = ("n_prompt_tokens", *TOKEN_COLUMNS)
    if not all(c in df.columns and pd.api.types.is_integer_dtype(df[c].dtype) for c in columns):
        return []
    known = df[(df[list(columns)] >= 0).all(axis=1)]
    visual, text, after = known["n_visual_tokens"], known["n_text_tokens"], known["n_after_instruction"]
    visual_after = known["n_visual_after_instruction"]
    checks = (
        ("n_visual_tokens + n_text_tokens != n_prompt_tokens", visual + text != known["n_prompt_tokens"]),
        ("n_after_instruction > n_prompt_tokens", after > known["n_prompt_tokens"]),
        ("n_visual_after_instruction > n_after_instruction or n_visual_tokens",
         (visual_after > after) | (visual_after > visual)),
    )  # fmt: skip
    problems = []
    for what, bad in checks:
        if bad.any():
            ids = known.loc[bad, "prompt_id"] if "prompt_id" in known.columns else known.index[bad]
            n = int(bad.sum())
            problems.append(
                f"{where}: token counts do not add up ({what}) in {n} row(s), first {_first(ids)}"
            )
    return problems


def response_problems(
    df: pd.DataFrame,
    expected: pd.DataFrame,
    *,
    where: str,
    condition: str,
    model: str,
    intervention: str = NO_INTERVENTION,
) -> list[str]:
    """Problems of a responses table against the prompts it should cover (`expected`: prompt_id,
    dataset, category, harmful); each problem is one line starting with `where`."""
    problems: list[str] = []
    missing_cols = [c for c in RESPONSE_COLUMNS if c not in df.columns]
    if missing_cols:
        problems.append(f"{where}: missing column(s) {', '.join(missing_cols)}")
    present = set(df.columns)
    for col in STRING_COLUMNS:
        if col in present and col != "response" and df[col].isna().any():
            problems.append(f"{where}: column {col} has missing values")
        elif col in present and not _is_string_column(df[col]):
            problems.append(f"{where}: column {col} must hold strings, got dtype {df[col].dtype}")
    for col in BOOL_COLUMNS:
        if col in present and df[col].dtype != bool:
            problems.append(f"{where}: column {col} must be boolean, got dtype {df[col].dtype}")
    for col in INT_COLUMNS:
        if col in present and df[col].isna().any():
            problems.append(f"{where}: column {col} has missing values")
        elif col in present and not pd.api.types.is_integer_dtype(df[col].dtype):
            problems.append(f"{where}: column {col} must be integer, got dtype {df[col].dtype}")
        elif col in present and (df[col] < (1 if col == "max_new_tokens" else -1)).any():
            low = "1" if col == "max_new_tokens" else "-1 (-1 = not reported)"
            problems.append(f"{where}: column {col} has values below {low}")
    problems += _token_problems(df, where)
    if "zoom_scale" in present:
        if not pd.api.types.is_float_dtype(df["zoom_scale"].dtype):
            problems.append(f"{where}: column zoom_scale must be float, got dtype {df['zoom_scale'].dtype}")
        elif (df["zoom_scale"] < 1).any():
            problems.append(f"{where}: column zoom_scale has values below 1 (a zoom never shrinks)")
    if "response" in present:
        null = df["response"].isna()
        if null.any():
            ids = df.loc[null, "prompt_id"] if "prompt_id" in present else df.index[null]
            problems.append(f"{where}: {int(null.sum())} response(s) missing (NaN/None), first {_first(ids)}")
    for col, want in (("condition", condition), ("model", model), ("intervention", intervention)):
        if col in present:
            wrong = sorted({str(v) for v in df[col].dropna()} - {want})
            if wrong:
                problems.append(
                    f"{where}: column {col} holds {wrong[0]!r}, expected {want!r} (from the path)"
                )
    if "prompt_id" not in present:
        return problems
    ids = df["prompt_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        problems.append(f"{where}: {dup.nunique()} prompt_id(s) appear more than once, first {_first(dup)}")
    want_ids = set(expected["prompt_id"].astype(str))
    missing_ids, extra_ids = want_ids - set(ids), set(ids) - want_ids
    if missing_ids:
        problems.append(f"{where}: {len(missing_ids)} prompt_id(s) missing, first {_first(missing_ids)}")
    if extra_ids:
        problems.append(
            f"{where}: {len(extra_ids)} prompt_id(s) not in the prompts/episodes, first {_first(extra_ids)}"
        )
    reference = (
        expected.assign(prompt_id=expected["prompt_id"].astype(str))
        .drop_duplicates("prompt_id")
        .set_index("prompt_id")
    )
    for col in ("dataset", "category", "harmful"):
        if col not in present or col not in reference.columns:
            continue
        mine = pd.Series(df[col].values, index=ids.values)
        mine = mine[~mine.index.duplicated()]
        common = mine.index.intersection(reference.index)
        differs = [pid for pid in common if mine[pid] != reference.at[pid, col]]
        if differs:
            pid = sorted(differs)[0]
            got, want = _plain(mine[pid]), _plain(reference.at[pid, col])
            problems.append(
                f"{where}: {col} of prompt_id {pid!r} is {got!r}, the prompts table says "
                f"{want!r} ({len(differs)} row(s) differ)"
            )
    return problems


def activation_problems(
    path: str | os.PathLike[str], *, response_ids: Sequence[str], condition: str, model: str
) -> list[str]:
    """Problems of an `activations.nc` (contract, attrs, prompt ids equal to `response_ids`, finite)."""
    from toolshift.models.activations import VARIABLE, read_activations

    try:
        ds = read_activations(path)
    except ContractError as exc:
        return [str(exc)]
    problems: list[str] = []
    for attr, want in (("model", model), ("condition", condition)):
        if str(ds.attrs.get(attr)) != want:
            problems.append(
                f"{path}: attr {attr} is {ds.attrs.get(attr)!r}, expected {want!r} (from the path)"
            )
    ids = [str(p) for p in ds["prompt_id"].values]
    if len(set(ids)) != len(ids):
        problems.append(f"{path}: duplicate prompt_id in the prompt_id coordinate")
    missing, extra = set(response_ids) - set(ids), set(ids) - set(response_ids)
    if missing:
        problems.append(
            f"{path}: {len(missing)} prompt_id(s) of responses.parquet missing, first {_first(missing)}"
        )
    if extra:
        problems.append(f"{path}: {len(extra)} prompt_id(s) not in responses.parquet, first {_first(extra)}")
    n_layers, hidden = ds.sizes["layer"], ds.sizes["hidden"]
    if n_layers < 1 or hidden < 1:
        problems.append(
            f"{path}: {VARIABLE} has {n_layers} layer(s) and hidden size {hidden}; both must be >= 1"
        )
    elif list(np.asarray(ds["layer"].values).tolist()) != list(range(n_layers)):
        problems.append(f"{path}: layer coordinate must be 0..{n_layers - 1}")
    values = np.asarray(ds[VARIABLE].values)
    if values.size and not np.isfinite(values).all():
        problems.append(f"{path}: {VARIABLE} holds {int((~np.isfinite(values)).sum())} non-finite value(s)")
    return problems


def run_problems(
    run_dir: str | os.PathLike[str],
    prompts_path: str | os.PathLike[str],
    *,
    condition: str,
    model: str,
    require_activations: bool,
    intervention: str = NO_INTERVENTION,
    episodes_path: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Every contract problem of a run directory, one line each (empty list: the run is valid)."""
    run = Path(run_dir)
    try:
        prompts = read_prompts(prompts_path)
    except ContractError as exc:
        return [f"prompts: {exc}"]
    expected = prompts
    if episodes_path is not None:
        try:
            episode_ids = [str(e["prompt_id"]) for e in read_episodes(episodes_path)]
        except ContractError as exc:
            return [f"episodes: {exc}"]
        unknown = set(episode_ids) - set(prompts["prompt_id"].astype(str))
        if unknown:
            return [f"{episodes_path}: prompt_id {_first(unknown)} is not in {prompts_path}"]
        expected = prompts[prompts["prompt_id"].astype(str).isin(episode_ids)]
    responses_path = run / RESPONSES_FILE
    if not responses_path.is_file():
        return [f"{responses_path}: file not found"]
    try:
        df = pd.read_parquet(responses_path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        return [f"{responses_path}: cannot be read as parquet ({type(exc).__name__})"]
    problems = response_problems(
        df, expected, where=str(responses_path), condition=condition, model=model, intervention=intervention
    )
    activations_path = run / ACTIVATIONS_FILE
    if require_activations and not activations_path.is_file():
        problems.append(f"{activations_path}: file not found (this backend must write activations)")
    elif activations_path.is_file():
        ids = df["prompt_id"].astype(str).tolist() if "prompt_id" in df.columns else []
        problems += activation_problems(activations_path, response_ids=ids, condition=condition, model=model)
    return problems


def validate_run(
    run_dir: str | os.PathLike[str],
    prompts_path: str | os.PathLike[str],
    *,
    condition: str,
    model: str,
    require_activations: bool,
    intervention: str = NO_INTERVENTION,
    episodes_path: str | os.PathLike[str] | None = None,
) -> None:
    """Raise ContractError with the first problem of `run_problems` (and how many more) if there is any."""
    problems = run_problems(
        run_dir,
        prompts_path,
        condition=condition,
        model=model,
        require_activations=require_activations,
        intervention=intervention,
        episodes_path=episodes_path,
    )
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ContractError(problems[0] + more)


def identity_from_path(run_dir: str | os.PathLike[str]) -> tuple[str, str, str]:
    """(model, condition, intervention) of `.../runs/{model}/{dataset}/{condition}` or
    `.../interventions/{model}/{dataset}/{intervention}` (whose condition is the intervention's base)."""
    run = Path(run_dir).resolve()
    parents = run.parents
    if len(parents) < 3 or parents[2].name not in ("runs", "interventions"):
        raise ConfigError(
            f"{run_dir}: not a runs/{{model}}/{{dataset}}/{{condition}} or interventions/... directory; "
            "give --model and --condition"
        )
    model = parents[1].name
    if parents[2].name == "runs":
        return model, run.name, NO_INTERVENTION
    from toolshift.analysis.interventions import parse_intervention_id

    return model, str(parse_intervention_id(run.name).base_condition), run.name


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m toolshift.checks.run_contracts`: print OK or the problems of one run directory."""
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.checks.run_contracts",
        description="Check a run directory (responses.parquet, activations.nc) against the file contracts.",
    )
    parser.add_argument("run_dir", help="runs/{model}/{dataset}/{condition} or interventions/.../{id}")
    parser.add_argument("--prompts", required=True, help="the dataset's prompts.parquet")
    parser.add_argument("--episodes", help="the episodes JSONL the run used (default: every prompt)")
    parser.add_argument("--activations", action="store_true", help="require activations.nc")
    parser.add_argument("--model", help="expected model (default: from the path)")
    parser.add_argument("--condition", help="expected condition (default: from the path)")
    parser.add_argument("--intervention", help="expected intervention (default: from the path)")
    args = parser.parse_args(argv)
    try:
        if args.model and args.condition:
            model, condition, intervention = args.model, args.condition, args.intervention or NO_INTERVENTION
        else:
            model, condition, intervention = identity_from_path(args.run_dir)
            model = args.model or model
            condition = args.condition or condition
            intervention = args.intervention or intervention
    except ConfigError as exc:
        parser.error(str(exc))
    problems = run_problems(
        args.run_dir,
        args.prompts,
        condition=condition,
        model=model,
        require_activations=args.activations,
        intervention=intervention,
        episodes_path=args.episodes,
    )
    if problems:
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1
    extra = " and activations.nc" if (Path(args.run_dir) / ACTIVATIONS_FILE).is_file() else ""
    identity = f"model {model}, condition {condition}, intervention {intervention}"
    print(f"OK: {args.run_dir}: responses.parquet{extra} meet the contracts ({identity})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
