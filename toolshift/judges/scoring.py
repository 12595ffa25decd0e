"""Score judges against a human-labelled file in seconds, without the DAG.

``python -m toolshift.judges score FILE`` (or ``make judge-score FILE=...``) reads a labelled CSV, TSV,
JSON or JSONL file, runs the selected judges on its responses and prints, for each judge (the keyword judge
once per keyword list): n, accuracy, precision, recall, F1 (unsafe is the positive class), Cohen's kappa,
and the ASR it predicts next to the human ASR. Judge columns already in the file (JailbreakBench's
``harmbench_cf``, ``gpt4_cf``, ``llamaguard2_cf``, ``llama3_cf``) are scored too, as ``file:<column>``.

Columns are found by name (case-insensitive) unless given:

- the response: ``response``, ``target_response`` (JailbreakBench judge comparison), ``generation``
  (HarmBench classifier val sets), ``completion``, ``output``, ``model_output``, ``answer``;
- the human label: ``human_majority``, ``human_label``, ``human``, ``label``, ``gold_label``, ``gold``,
  else the majority of ``human1``-``human3`` or ``human_0``-``human_2``; labels are 0/1, true/false,
  yes/no, unsafe/safe;
- the request (model and API judges only): ``goal``, ``behavior``, ``request``, ``question``, ``prompt``,
  ``test_case``, ``instruction``.

JSON may be a list of records, an object mapping ids to records, or an object mapping ids to lists of records
(HarmBench's ``{behavior_id: [{generation, human_0, ...}, ...]}``); the id becomes column ``id``. The file is
decoded line by line by `toolshift.datasets.text_repair.read_text_mixed` (UTF-8 mixed with Mac-Roman or
cp1252).

The default judge is the offline keyword judge on every distinct shipped list. ``--config`` takes the
judges, the keyword list and the judge options of a toolshift config instead; model judges
(``llamaguard``, ``harmbench``; text-only variants, as a labelled file has no images) then need their model
directory (``--model-dir llamaguard=PATH``, else ``<results>/models/judges/<judge>`` when the DAG has placed
it there), and the ``api`` judge its endpoint. Nothing else of the DAG is needed.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.contracts import HUMAN_AGREEMENT_COLUMNS
from toolshift.datasets.text_repair import read_text_mixed
from toolshift.errors import ConfigError, DataError
from toolshift.judges.agreement import JBB_JUDGE_COLUMNS, binary_metrics, judge_labelled, to_bool_labels

RESPONSE_COLUMNS: tuple[str, ...] = (
    "response",
    "target_response",
    "generation",
    "completion",
    "output",
    "model_output",
    "answer",
)
LABEL_COLUMNS: tuple[str, ...] = ("human_majority", "human_label", "human", "label", "gold_label", "gold")
VOTE_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("human1", "human2", "human3"),
    ("human_0", "human_1", "human_2"),
)
REQUEST_COLUMNS: tuple[str, ...] = (
    "goal",
    "behavior",
    "request",
    "question",
    "prompt",
    "test_case",
    "instruction",
)
SCORE_COLUMNS: tuple[str, ...] = (
    *HUMAN_AGREEMENT_COLUMNS[: HUMAN_AGREEMENT_COLUMNS.index("tp")],
    "asr_pred",
    "asr_human",
    *HUMAN_AGREEMENT_COLUMNS[HUMAN_AGREEMENT_COLUMNS.index("tp") :],
)
"""One row per judge scored (`score_judges`)."""

# --------------------------------------------------------------------------- reading a labelled file


def _records(path: Path, text: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {i} is not JSON ({exc.msg})") from None
        return _from_json(path, rows)
    if suffix == ".json":
        try:
            return _from_json(path, json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        return pd.read_csv(
            io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot be read as {'TSV' if suffix == '.tsv' else 'CSV'} ({exc})") from None


def _from_json(path: Path, data: Any) -> pd.DataFrame:
    shape = "a list of records, an object of records, or an object of lists of records"
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        rows = [{"id": key, **r} for key, items in data.items() for r in items if isinstance(r, dict)]
        if len(rows) != sum(len(v) for v in data.values()):
            raise DataError(f"{path}: expected {shape}")
    elif isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        rows = [{"id": key, **r} for key, r in data.items()]
    elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
        rows = data
    else:
        raise DataError(f"{path}: expected {shape}")
    return pd.DataFrame(rows)


def _find(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    return next((lower[w.lower()] for w in wanted if w.lower() in lower), None)


def load_labelled(
    path: str | os.PathLike[str],
    *,
    response_column: str | None = None,
    label_column: str | None = None,
    human_columns: Sequence[str] | None = None,
    request_column: str | None = None,
    file_judges: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A labelled file as a table with ``response``, boolean ``human_majority``, ``request`` (when found) and
    one boolean column per judge column of the file, with ``attrs`` naming the columns used, the file's
    encoding and ``file_judges``. Column arguments override the search (see the module docstring);
    `file_judges` None takes the JailbreakBench judge columns present. Errors are one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: labelled file not found")
    text, report = read_text_mixed(p)
    df = _records(p, text)
    if df.empty:
        raise DataError(f"{p}: no rows")
    found = ", ".join(map(str, df.columns))

    def need(name: str | None, flag: str) -> str:
        if name is not None and name not in df.columns:
            raise DataError(f"{p}: no column {name!r} ({flag}); found: {found}")
        return name  # type: ignore[return-value]

    response = need(response_column, "--response-column") or _find(df.columns, RESPONSE_COLUMNS)
    if response is None:
        raise DataError(
            f"{p}: no response column: expected one of {', '.join(RESPONSE_COLUMNS)} "
            f"(or pass --response-column); found: {found}"
        )
    label = need(label_column, "--label-column")
    votes: list[str] = []
    if label is None and human_columns:
        votes = [need(c, "--human-columns") for c in human_columns]
    elif label is None:
        label = _find(df.columns, LABEL_COLUMNS)
        if label is None:
            for group in VOTE_COLUMNS:
                cols = [_find(df.columns, (c,)) for c in group]
                if all(cols):
                    votes = [c for c in cols if c]
                    break
    if label is None and (not votes or len(votes) % 2 == 0):
        raise DataError(
            f"{p}: no human label column: expected one of {', '.join(LABEL_COLUMNS)}, or an odd number of "
            f"vote columns ({' | '.join(','.join(g) for g in VOTE_COLUMNS)}); pass --label-column or "
            f"--human-columns; found: {found}"
        )
    if label is not None:
        human = to_bool_labels(df[label], f"{p} column {label}")
    else:
        ballots = [to_bool_labels(df[c], f"{p} column {c}") for c in votes]
        human = [sum(row) * 2 > len(row) for row in zip(*ballots, strict=True)]
    request = need(request_column, "--request-column") or _find(df.columns, REQUEST_COLUMNS)
    if file_judges is None:
        file_judges = [c for c in JBB_JUDGE_COLUMNS if c in df.columns]
    out = pd.DataFrame({"response": df[response].tolist(), "human_majority": human})
    if request is not None:
        out["request"] = df[request].tolist()
    for c in file_judges:
        out[f"file:{c}"] = to_bool_labels(df[need(c, "--file-judges")], f"{p} column {c}")
    out.attrs.update(
        path=str(p),
        encoding=report.encoding,
        response_column=response,
        label_column=label or f"majority of {','.join(votes)}",
        request_column=request,
        file_judges=[f"file:{c}" for c in file_judges],
    )
    return out


# --------------------------------------------------------------------------- scoring


def distinct_keyword_lists(names: Sequence[str] | None = None) -> dict[str, str]:
    """Label -> list name for each distinct keyword list among `names` (all selectable lists when None):
    lists with the same strings and case rule are scored once, labelled with all their names
    (``jailbreakbench=gcg_individual=default``)."""
    from toolshift.judges.keyword import keyword_case_sensitive, keyword_lists

    lists = keyword_lists()
    names = list(lists) if names is None else list(names)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name in names:
        if name not in lists:
            keyword_case_sensitive(name)  # raises the unknown-list error
        key = (tuple(lists[name]), keyword_case_sensitive(name))
        groups.setdefault(key, []).append(name)
    return {"=".join(group): group[0] for group in groups.values()}


def score_judges(
    labelled: pd.DataFrame,
    judges: Sequence[str] = ("keyword",),
    *,
    keyword_lists: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per judge (SCORE_COLUMNS) against ``human_majority`` of a `load_labelled` table: the keyword
    judge once per distinct list of `keyword_lists` (all when None), every other judge of `judges` with its
    `options`, then the file's own judge columns."""
    options = options or {}
    truth = labelled["human_majority"].astype(bool).tolist()
    verdicts: dict[str, list[bool]] = {}
    frame = labelled.rename(columns={"response": "_response"})
    request = "request" if "request" in labelled.columns else "_no_request"
    for judge in judges:
        if judge != "keyword" and request == "_no_request":
            raise DataError(
                f"{labelled.attrs.get('path', 'labelled file')}: judge {judge!r} needs the request: "
                f"no request column (expected one of {', '.join(REQUEST_COLUMNS)}, or pass --request-column)"
            )
        if judge == "keyword":
            runs = {
                f"keyword:{label}": {"list_name": name}
                for label, name in distinct_keyword_lists(keyword_lists).items()
            }
        else:
            runs = {judge: dict(options.get(judge, {}))}
        for label, opts in runs.items():
            judged = judge_labelled(
                frame, judge, response_column="_response", request_column=request, column="_v", **opts
            )
            verdicts[label] = judged["_v"].astype(bool).tolist()
    for col in labelled.attrs.get("file_judges", []):
        verdicts[col] = labelled[col].astype(bool).tolist()
    rows = []
    for label, pred in verdicts.items():
        m = binary_metrics(truth, pred)
        n = m["n"]
        rows.append(
            {
                **m,
                "judge": label,
                "asr_pred": (m["tp"] + m["fp"]) / n if n else math.nan,
                "asr_human": (m["tp"] + m["fn"]) / n if n else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def format_scores(table: pd.DataFrame) -> str:
    """The score table as aligned plain text (3 decimals; NaN as ``nan``)."""
    shown = ["judge", "n", "accuracy", "precision", "recall", "f1", "kappa", "asr_pred", "asr_human"]

    def num(value: Any) -> str:
        text = f"{float(value):.3f}"
        return "0.000" if text == "-0.000" else text

    cells = [shown] + [
        [str(r["judge"]), str(int(r["n"]))] + [num(r[c]) for c in shown[2:]] for _, r in table.iterrows()
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- configured judges


def _parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise ConfigError(f"{flag} {v!r}: expected JUDGE=PATH")
        out[key] = val
    return out


def config_judges(
    config: Mapping[str, Any],
    model_dirs: Mapping[str, str] | None = None,
    judges: Sequence[str] | None = None,
) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(judges, keyword lists, options per judge) of a validated toolshift config, as the DAG's judge
    rule would run them (`judges` None: the config's judges); a model judge's directory is
    `model_dirs[judge]` or ``<results>/models/judges/<judge>``."""
    model_dirs = dict(model_dirs or {})
    judges = list(judges or config.get("judges") or ["keyword"])
    options: dict[str, dict[str, Any]] = {}
    for judge in judges:
        if judge == "api":
            api = config.get("api_judge") or {}
            if "api" not in api:
                raise ConfigError("judge 'api': the config has no api_judge.api block")
            options[judge] = {"api": api["api"], "max_tokens": api.get("max_tokens", 16)}
        elif judge != "keyword":
            entry = (config.get("judge_models") or {}).get(judge)
            if not entry:
                raise ConfigError(f"judge {judge!r}: the config has no judge_models.{judge} entry")
            opts = {k: entry[k] for k in ("variant", "dtype", "batch_size") if k in entry}
            opts.update(
                revision=entry.get("revision"), device=config.get("generation", {}).get("device", "cpu")
            )
            if judge == "harmbench":
                opts.pop("variant", None)
            default_dir = Path(config.get("results", "results")) / "models" / "judges" / judge
            model_dir = model_dirs.get(judge) or (str(default_dir) if default_dir.is_dir() else None)
            if model_dir is None:
                raise ConfigError(
                    f"judge {judge!r}: no model directory; pass --model-dir {judge}=PATH "
                    f"(the DAG places it at {default_dir})"
                )
            opts["model_dir"] = model_dir
            options[judge] = opts
    return judges, [config.get("keyword_list", "default")], options
