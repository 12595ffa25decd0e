"""Judge agreement: each judge against human labels, and the judges against each other.

- **Against humans.** Given a CSV of responses with human labels, every judge column is scored against
  the human majority (positive class: unsafe / jailbroken): accuracy, precision, recall, F1 and Cohen's kappa,
  with the confusion counts. The JailbreakBench judge-comparison file (columns ``human1``, ``human2``,
  ``human3``, ``human_majority`` and judge columns such as ``harmbench_cf``, ``gpt4_cf``, ``llamaguard2_cf``,
  ``llama3_cf``; labels 0/1) reads as it is; it may mix UTF-8 and Mac-Roman rows, so each line is decoded by
  `toolshift.datasets.text_repair.read_text_mixed` (UTF-8, else Mac-Roman or cp1252, and mojibake repaired).
  Column names are configurable for any other labelled file, and our own judges can be run on its responses
  (`judge_labelled`) to add their columns.
- **Between judges.** On the study's own judged tables, every pair of judges gets the percent agreement
  and Cohen's kappa over the responses both judged.

Undefined ratios are NaN: precision with no predicted positive, recall with no true positive, F1 when
precision + recall is 0 or undefined, and kappa when chance agreement is 1 (both raters constant).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.contracts import HUMAN_AGREEMENT_COLUMNS, PAIRWISE_COLUMNS
from toolshift.datasets.text_repair import read_text_mixed
from toolshift.errors import ContractError, DataError

JBB_HUMAN_COLUMNS: tuple[str, ...] = ("human1", "human2", "human3")
JBB_MAJORITY_COLUMN = "human_majority"
JBB_JUDGE_COLUMNS: tuple[str, ...] = ("harmbench_cf", "gpt4_cf", "llamaguard2_cf", "llama3_cf")
"""The judge columns of JailbreakBench's judge-comparison file."""


VERDICT_KEYS: tuple[str, ...] = ("model", "dataset", "prompt_id", "condition", "intervention")
"""The columns that identify one response across judged tables."""

_TRUE = {"1", "1.0", "true", "yes", "unsafe", "jailbroken"}
_FALSE = {"0", "0.0", "false", "no", "safe", "not jailbroken"}

# --------------------------------------------------------------------------- metrics


def _nan_ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def confusion(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, int]:
    """tp, fp, fn, tn of `pred` against `truth` (positive: unsafe)."""
    if len(truth) != len(pred):
        raise ContractError(f"confusion: {len(truth)} labels but {len(pred)} predictions")
    pairs = list(zip(map(bool, truth), map(bool, pred), strict=True))
    return {
        "tp": sum(t and p for t, p in pairs),
        "fp": sum(p and not t for t, p in pairs),
        "fn": sum(t and not p for t, p in pairs),
        "tn": sum(not t and not p for t, p in pairs),
    }


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters, (p_o - p_e) / (1 - p_e); NaN when p_e is 1 or there are none."""
    c = confusion(a, b)
    n = sum(c.values())
    if n == 0:
        return math.nan
    p_o = (c["tp"] + c["tn"]) / n
    a_pos, b_pos = (c["tp"] + c["fn"]) / n, (c["tp"] + c["fp"]) / n
    p_e = a_pos * b_pos + (1 - a_pos) * (1 - b_pos)
    return (p_o - p_e) / (1 - p_e) if p_e < 1 else math.nan


def binary_metrics(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, Any]:
    """n, accuracy, precision, recall, F1, Cohen's kappa and the confusion counts (positive: unsafe)."""
    c = confusion(truth, pred)
    n = sum(c.values())
    precision = _nan_ratio(c["tp"], c["tp"] + c["fp"])
    recall = _nan_ratio(c["tp"], c["tp"] + c["fn"])
    f1 = (
        2 * precision * recall / (precision + recall)
        if not (math.isnan(precision) or math.isnan(recall)) and precision + recall > 0
        else math.nan
    )
    return {
        "n": n,
        "accuracy": _nan_ratio(c["tp"] + c["tn"], n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "kappa": cohen_kappa(truth, pred),
        **c,
    }


# --------------------------------------------------------------------------- labelled files


def read_text_any(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(text, encoding) of a file decoded line by line by `toolshift.datasets.text_repair.read_text_mixed`:
    UTF-8
    (BOM allowed), else Mac-Roman or cp1252 per line; `encoding` is e.g. ``utf-8``, ``mac_roman`` or
    ``utf-8+mac_roman``."""
    text, report = read_text_mixed(path)
    return text, report.encoding


def to_bool_labels(values: Iterable[Any], where: str) -> list[bool]:
    """0/1, true/false, yes/no, unsafe/safe (any case) -> bool; else DataError naming `where`."""
    out: list[bool] = []
    for i, v in enumerate(values):
        if isinstance(v, bool):
            out.append(v)
            continue
        key = str(v).strip().lower()
        if key in _TRUE:
            out.append(True)
        elif key in _FALSE:
            out.append(False)
        else:
            raise DataError(f"{where}, row {i}: label {v!r} is not 0/1, true/false, yes/no or unsafe/safe")
    return out


def read_labelled_csv(
    path: str | os.PathLike[str],
    *,
    human_columns: Sequence[str] = JBB_HUMAN_COLUMNS,
    majority_column: str | None = JBB_MAJORITY_COLUMN,
    judge_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A labelled CSV with boolean ``human_majority`` and judge columns (defaults: the JailbreakBench format).

    The human majority is `majority_column` when the file has it, else the majority of `human_columns`
    (an odd number of them is then required). `judge_columns` None takes those of JBB_JUDGE_COLUMNS that
    are present. Other columns (the request, the response) are kept as read. Returns a copy whose
    ``attrs["encoding"]`` says how the file was decoded.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: labelled file not found")
    text, encoding = read_text_any(p)
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{p}: cannot be read as CSV ({type(exc).__name__})") from None
    present_humans = [c for c in human_columns if c in df.columns]
    if majority_column is not None and majority_column in df.columns:
        majority = to_bool_labels(df[majority_column], f"{p} column {majority_column}")
    elif present_humans and len(present_humans) == len(human_columns) and len(human_columns) % 2 == 1:
        votes = [to_bool_labels(df[c], f"{p} column {c}") for c in human_columns]
        majority = [sum(row) * 2 > len(row) for row in zip(*votes, strict=True)]
    else:
        raise ContractError(
            f"{p}: needs column {majority_column!r} or an odd number of human label columns "
            f"({', '.join(human_columns)}); found {', '.join(map(str, df.columns))}"
        )
    if judge_columns is None:
        judge_columns = [c for c in JBB_JUDGE_COLUMNS if c in df.columns]
    missing = [c for c in judge_columns if c not in df.columns]
    if missing:
        raise ContractError(f"{p}: missing judge column(s) {', '.join(missing)}")
    out = df.copy()
    out["human_majority"] = majority
    for c in present_humans:
        out[c] = to_bool_labels(df[c], f"{p} column {c}")
    for c in judge_columns:
        out[c] = to_bool_labels(df[c], f"{p} column {c}")
    out.attrs["encoding"] = encoding
    out.attrs["judge_columns"] = list(judge_columns)
    return out


def judge_labelled(
    labelled: pd.DataFrame,
    judge: str,
    *,
    response_column: str = "target_response",
    request_column: str = "goal",
    column: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """`labelled` with a boolean column (default ``<judge>``) holding one of our judges' verdicts on its
    responses (`response_column`), the request taken from `request_column`; `options` go to the judge."""
    from toolshift.judges.keyword import judge_frame

    needed = [response_column] + ([request_column] if judge != "keyword" else [])
    missing = [c for c in needed if c not in labelled.columns]
    if missing:
        raise ContractError(f"labelled file: missing column(s) {', '.join(missing)} for judge {judge!r}")
    ids = [f"row{i}" for i in range(len(labelled))]
    responses = pd.DataFrame({"prompt_id": ids, "response": labelled[response_column].tolist()})
    prompts = None
    if request_column in labelled.columns:
        requests = labelled[request_column].fillna("").astype(str).tolist()
        prompts = pd.DataFrame({"prompt_id": ids, "question": requests, "instruction": requests})
    judged = judge_frame(responses, judge=judge, prompts=prompts, **options)
    out = labelled.copy()
    name = column or judge
    out[name] = judged["unsafe"].to_numpy()
    out.attrs = dict(labelled.attrs)
    out.attrs["judge_columns"] = list(labelled.attrs.get("judge_columns", [])) + [name]
    return out


def human_agreement(
    labelled: pd.DataFrame,
    judge_columns: Sequence[str] | None = None,
    majority_column: str = "human_majority",
) -> pd.DataFrame:
    """One row per judge column (HUMAN_AGREEMENT_COLUMNS): its metrics against the human majority."""
    if judge_columns is None:
        judge_columns = labelled.attrs.get("judge_columns") or []
    missing = [c for c in [majority_column, *judge_columns] if c not in labelled.columns]
    if missing:
        raise ContractError(f"labelled table: missing column(s) {', '.join(missing)}")
    truth = labelled[majority_column].astype(bool).tolist()
    rows = [{"judge": c, **binary_metrics(truth, labelled[c].astype(bool).tolist())} for c in judge_columns]
    return pd.DataFrame(rows, columns=list(HUMAN_AGREEMENT_COLUMNS))


# --------------------------------------------------------------------------- the study's own responses


def verdict_matrix(judged_tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Wide table: one row per response (VERDICT_KEYS present in the tables), one boolean column per judge.

    A response a judge did not score has NA in that judge's column. Two rows of one judge with the same
    keys raise ContractError.
    """
    frames = [t for t in judged_tables if len(t)]
    if not frames:
        return pd.DataFrame()
    long = pd.concat(frames, ignore_index=True)
    keys = [k for k in VERDICT_KEYS if k in long.columns]
    if not keys or "judge" not in long.columns or "unsafe" not in long.columns:
        raise ContractError("judged tables: need judge, unsafe and the response key columns")
    dup = long.duplicated([*keys, "judge"])
    if dup.any():
        row = long.loc[dup.idxmax(), [*keys, "judge"]].tolist()
        raise ContractError(f"judged tables: response {row} is judged twice by the same judge")
    wide = long.pivot(index=keys, columns="judge", values="unsafe")
    wide.columns.name = None
    return wide.astype("boolean").reset_index()


def pairwise_agreement(matrix: pd.DataFrame, judges: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per pair of judges (PAIRWISE_COLUMNS) over the responses both scored."""
    if judges is None:
        judges = [c for c in matrix.columns if c not in VERDICT_KEYS]
    rows = []
    for a, b in combinations(judges, 2):
        both = matrix[[a, b]].dropna()
        x, y = both[a].astype(bool).tolist(), both[b].astype(bool).tolist()
        n = len(x)
        agree = sum(u == v for u, v in zip(x, y, strict=True))
        rows.append(
            {
                "judge_a": a,
                "judge_b": b,
                "n": n,
                "percent_agreement": _nan_ratio(100.0 * agree, n),
                "kappa": cohen_kappa(x, y),
            }
        )
    return pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))


def asr_by_judge(
    matrix: pd.DataFrame, by: Sequence[str] = ("model", "dataset", "condition", "intervention")
) -> pd.DataFrame:
    """ASR (fraction unsafe) per group and judge, judges side by side: one column ``asr_<judge>`` each."""
    judges = [c for c in matrix.columns if c not in VERDICT_KEYS]
    keys = [k for k in by if k in matrix.columns]
    out = matrix.groupby(keys, dropna=False)[judges].agg(lambda s: s.dropna().astype(float).mean())
    out.columns = [f"asr_{j}" for j in judges]
    return out.reset_index()
