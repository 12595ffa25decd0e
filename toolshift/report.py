"""The Jupyter Book report: generated markdown fragments from result files, and the offline build.

`write_book_sources` turns result files (`tables/asr.csv`, figures, vector files, the config) into
markdown fragments under `{book_dir}/_generated/`, which the static pages in `book/` include with
MyST `{include}` directives. It only formats what the files hold; it computes no statistics.
`build_book` runs Jupyter Book 1.x (Sphinx) with warnings as errors and no network access needed.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
import yaml

import toolshift
from toolshift.contracts import ASR_COLUMNS, JUDGED_COLUMNS, read_table
from toolshift.errors import ContractError, ToolshiftError
from toolshift.plots import pick_judge
from toolshift.tables import OVER_REFUSAL_COLUMNS

GENERATED = "_generated"
"""Folder, inside the book, that holds every generated fragment and the copied figures."""

FIGURE_NAMES: tuple[str, ...] = ("asr_by_condition", "cosine_by_layer", "dose_response")
"""Figures the static pages include (`_generated/fig_{name}.md`); any others go to `figures_other.md`."""

FIXTURE_BANNER = (
    "These numbers come from tiny randomly initialised fixture models. "
    "They are noise and say nothing about real models."
)
"""The warning shown at the top of every results-bearing page when a fixture model is in the run."""

GENERATED_FILES: tuple[str, ...] = (
    "banner.md",
    "asr_headline.md",
    "asr_table.md",
    "over_refusal.md",
    "vectors.md",
    "provenance.md",
    "figures_other.md",
    "completions.md",
    "headline.md",
    "analysis_tables.md",
) + tuple(f"fig_{name}.md" for name in FIGURE_NAMES)
"""Every fragment `write_book_sources` writes (the static pages include these)."""

OVER_REFUSAL_NEEDED: tuple[str, ...] = tuple(c for c in OVER_REFUSAL_COLUMNS if c != "split")
"""Columns of `tables/over_refusal.csv` the book shows (refusal rate on harmless prompts)."""

_VERSION_PACKAGES = (
    "torch",
    "transformers",
    "numpy",
    "pandas",
    "xarray",
    "snakemake",
    "jupyter-book",
    "sphinx",
    "myst-parser",
)
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_DASH = "—"


# --------------------------------------------------------------------------- formatting


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and pd.isna(x))


def _pct(x: Any) -> str:
    return _DASH if _is_missing(x) else f"{100 * float(x):.1f}"


def _with_ci(x: Any, lo: Any, hi: Any) -> str:
    if _is_missing(x):
        return _DASH
    if _is_missing(lo) or _is_missing(hi):
        return _pct(x)
    return f"{_pct(x)} [{_pct(lo)}, {_pct(hi)}]"


def _p(x: Any) -> str:
    if _is_missing(x):
        return _DASH
    x = float(x)
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _code(x: Any) -> str:
    return f"`{_cell(x)}`"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub/MyST pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- fragments


def banner_markdown(fixture_models: Sequence[str]) -> str:
    """The fixture warning admonition, or a MyST comment (renders nothing) when no fixture model is used."""
    if not fixture_models:
        return "% No fixture model in this run: no fixture warning.\n"
    names = ", ".join(_code(m) for m in fixture_models)
    return f"```{{warning}}\n{FIXTURE_BANNER}\n\nFixture models in this run: {names}.\n```\n"


def asr_headline_markdown(asr: pd.DataFrame, judge: str) -> str:
    """Per model and dataset: ASR without and with the tool, the relative reduction and McNemar p."""
    rows = asr[(asr["intervention"] == "none") & (asr["judge"] == judge)]
    out = []
    for (model, dataset), sub in rows.groupby(["model", "dataset"], sort=False):
        by = sub.set_index("condition")
        if "direct" not in by.index or "tool" not in by.index:
            continue
        d, t = by.loc["direct"], by.loc["tool"]
        out.append(
            [
                _code(model),
                _code(dataset),
                str(int(t["n"])),
                _with_ci(d["asr"], d["asr_ci_low"], d["asr_ci_high"]),
                _with_ci(t["asr"], t["asr_ci_low"], t["asr_ci_high"]),
                _with_ci(t["rel_reduction"], t["rel_reduction_ci_low"], t["rel_reduction_ci_high"]),
                _p(t["mcnemar_p"]),
            ]
        )
    if not out:
        return f"No model has both a `direct` and a `tool` row for the {judge} judge in this run.\n"
    header = [
        "model",
        "dataset",
        "n",
        "ASR direct, % [95 % CI]",
        "ASR tool, % [95 % CI]",
        "relative reduction, % [95 % CI]",
        "McNemar p",
    ]
    note = (
        f"\nASR is the share of harmful prompts judged unsafe by the {judge} judge, with 95 % Wilson "
        "intervals; the relative reduction of `tool` against `direct` has a paired bootstrap interval, "
        "and p is the exact McNemar test of the paired verdicts.\n"
    )
    return markdown_table(header, out) + note


def asr_full_markdown(asr: pd.DataFrame) -> str:
    """Every row of `tables/asr.csv`, formatted."""
    header = [
        "model",
        "dataset",
        "judge",
        "condition",
        "intervention",
        "n",
        "unsafe",
        "ASR, % [95 % CI]",
        "relative reduction vs direct, % [95 % CI]",
        "McNemar p",
    ]
    rows = [
        [
            _code(r.model),
            _code(r.dataset),
            _cell(r.judge),
            _code(r.condition),
            _code(r.intervention),
            str(int(r.n)),
            str(int(r.n_unsafe)),
            _with_ci(r.asr, r.asr_ci_low, r.asr_ci_high),
            _with_ci(r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high),
            _p(r.mcnemar_p),
        ]
        for r in asr.itertuples(index=False)
    ]
    note = (
        "\nIntervention rows (`add_a…`, `random_a…_s…`, `subtract`, `ablate`) are runs of their base "
        "condition with the intervention applied; their relative reduction and p compare them with "
        "`direct`. A dash marks a value that does not apply.\n"
    )
    return markdown_table(header, rows) + note


def over_refusal_markdown(table: pd.DataFrame | None) -> str:
    """Every row of `tables/over_refusal.csv` (refusal rate on harmless prompts), formatted."""
    if table is None:
        return "The over-refusal table was not produced in this run.\n"
    if table.empty:
        return "The over-refusal table has no rows in this run.\n"
    header = [
        "model",
        "dataset",
        "judge",
        "condition",
        "intervention",
        "n",
        "refused",
        "refusal rate, % [95 % CI]",
    ]
    rows = [
        [
            _code(r.model),
            _code(r.dataset),
            _cell(r.judge),
            _code(r.condition),
            _code(r.intervention),
            str(int(r.n)),
            str(int(r.n_refused)),
            _with_ci(r.refusal_rate, r.refusal_ci_low, r.refusal_ci_high),
        ]
        for r in table.itertuples(index=False)
    ]
    note = (
        "\nThe share of *harmless* prompts the model refuses, with 95 % Wilson intervals: a safety "
        "intervention that lowers ASR only by refusing everything shows up here.\n"
    )
    return markdown_table(header, rows) + note


def _open_vectors(model: str, source: str | os.PathLike[str] | xr.Dataset) -> xr.Dataset:
    if isinstance(source, xr.Dataset):
        return source
    path = Path(source)
    if not path.exists():
        raise ContractError(f"{path}: vector file for model {model!r} not found")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        raise ContractError(
            f"{path}: cannot be read as a vector file ({type(exc).__name__}: {exc})"
        ) from None


def vectors_markdown(vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset]) -> str:
    """Per vector file: the layer of largest |cos(tool vector, refusal direction)|, that cosine and the norm.

    Model and dataset come from the file's attrs (the mapping's key when an attr is absent).
    """
    if not vectors:
        return "No vector files in this run.\n"
    rows = []
    for key, source in vectors.items():
        ds = _open_vectors(key, source)
        if "cos_tool_refusal" not in ds.variables:
            raise ContractError(f"vectors for model {key!r}: missing variable 'cos_tool_refusal'")
        cos = ds["cos_tool_refusal"]
        layers = list(cos["layer"].values) if "layer" in cos.coords else list(range(cos.sizes["layer"]))
        values = [float(v) for v in cos.values]
        finite = [i for i, v in enumerate(values) if not math.isnan(v)]
        row = [_code(ds.attrs.get("model", key)), _code(ds.attrs.get("dataset", "?")), str(len(values))]
        if not finite:
            rows.append(row + [_DASH, _DASH, _DASH])
            continue
        best = max(finite, key=lambda i: abs(values[i]))
        norm = ds["norm_tool_vector"].values[best] if "norm_tool_vector" in ds.variables else None
        norm_text = _DASH if _is_missing(norm) else f"{float(norm):.3g}"
        rows.append(row + [str(layers[best]), f"{values[best]:+.3f}", norm_text])
    header = [
        "model",
        "dataset",
        "layers",
        "layer of largest abs(cos)",
        "cos(tool vector, refusal dir.)",
        "norm",
    ]
    return markdown_table(header, rows)


def figure_markdown(name: str, png_rel: str | None, caption: str, has_svg: bool) -> str:
    """A MyST figure (path relative to the book root), or a note that the figure was not produced."""
    if png_rel is None:
        return f"The `{name}` figure was not produced in this run.\n"
    label = "fig-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    svg = f" {{download}}`SVG </{png_rel[:-4]}.svg>`" if has_svg else ""
    alt = caption.replace("\n", " ").replace('"', "'")
    return f"```{{figure}} /{png_rel}\n:name: {label}\n:alt: {alt}\n:width: 100%\n\n{caption}{svg}\n```\n"


def _models_of(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    models = config.get("models") or {}
    if isinstance(models, Mapping):
        return [(str(k), v if isinstance(v, Mapping) else {}) for k, v in models.items()]
    out = []
    for i, entry in enumerate(models):
        entry = entry if isinstance(entry, Mapping) else {"id": entry}
        out.append((str(entry.get("name") or entry.get("id") or f"model {i}"), entry))
    return out


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def provenance_markdown(config: Mapping[str, Any], fixture_models: Sequence[str]) -> str:
    """Models with their revisions (unpinned ones flagged), software versions and the config as YAML."""
    parts = ["## Models\n"]
    models = _models_of(config)
    api_models: list[str] = []
    if models:
        rows = []
        for name, entry in models:
            if name in fixture_models:
                rows.append([_code(name), "fixture (built offline from a seed)", _DASH, "n/a"])
                continue
            if entry.get("backend") == "openai":
                api = entry.get("api") or {}
                source = (
                    f"OpenAI-compatible endpoint: {_code(api.get('model'))} at {_code(api.get('base_url'))}"
                )
                rows.append([_code(name), source, _DASH, "n/a (remote)"])
                api_models.append(name)
                continue
            rev = entry.get("revision")
            pinned = isinstance(rev, str) and bool(_COMMIT_RE.match(rev))
            rows.append(
                [
                    _code(name),
                    _cell(entry.get("hub_id") or entry.get("path") or entry.get("id") or "hub model"),
                    _DASH if _is_missing(rev) or rev == "" else _code(rev),
                    "yes" if pinned else "**no: unpinned**",
                ]
            )
        parts.append(markdown_table(["model", "source", "revision", "pinned to a commit"], rows))
        if api_models:
            parts.append(
                "\n"
                + ", ".join(_code(m) for m in api_models)
                + " ran through an OpenAI-compatible endpoint: behaviour only. A remote model exposes no "
                "residual stream, so it has no tool vector, no refusal direction and no interventions; it "
                "appears in the ASR tables and figures only. Token counts are the provider's (-1 = not "
                "reported). Answers come from the response cache; temperature-0 API output is not guaranteed "
                "identical across provider updates, so the cache, not the endpoint, makes these rows "
                "reproducible.\n"
            )
    else:
        parts.append("The config names no models.\n")
    parts.append("\n## Software\n")
    versions = [["toolshift", toolshift.__version__], ["python", platform.python_version()]]
    versions += [[p, _version(p)] for p in _VERSION_PACKAGES]
    parts.append(markdown_table(["package", "version"], [[_code(a), _cell(b)] for a, b in versions]))
    parts.append("\nVersions are those of the environment that built this book.\n")
    plain = json.loads(json.dumps(dict(config), default=str))
    parts.append(
        "\n## Configuration\n\n```yaml\n"
        + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
        + "```\n"
    )
    return "".join(parts)


ANALYSIS_TITLES = {
    "asr_by_category": "ASR by category (test split)",
    "selection": "Layer and α selected on the validation split",
    "transfer": "Transfer of the tool vector between datasets",
    "intervention_cost": "KL cost of each intervention on harmless test prompts",
    "representation": "Each condition's shift at the selected layer",
    "free_tool_use": "The free condition: ASR by whether the model chose to call the tool (correlational)",
    "asr_by_judge": "ASR under every judge, side by side",
    "judge_agreement": "How far the judges agree with each other (percent agreement and Cohen's κ)",
    "judge_human_agreement": "Each judge against the human majority of the labelled file",
}
"""Section titles of the analysis tables the book shows (any other table is titled by its name)."""


def headline_markdown(headline: pd.DataFrame | None) -> str:
    """The headline sentence, from `tables/headline.csv` (toolshift.headline computes it, only there)."""
    if headline is None or headline.empty:
        return "% No headline table was given.\n"
    from toolshift.headline import headline_sentence

    try:
        return headline_sentence(headline) + "\n"
    except (KeyError, ValueError) as exc:
        return f"The headline could not be stated: {_cell(exc)}\n"


def _format_value(x: Any) -> str:
    if isinstance(x, float):
        return _DASH if math.isnan(x) else f"{x:.3g}"
    return _cell(x)


def _table_order(name: str) -> tuple[int, str]:
    return (list(ANALYSIS_TITLES).index(name) if name in ANALYSIS_TITLES else len(ANALYSIS_TITLES), name)


def analysis_tables_markdown(tables: Mapping[str, pd.DataFrame]) -> str:
    """Each analysis table as a titled markdown table, in a stable order."""
    parts = []
    for name in sorted(tables, key=_table_order):
        table = tables[name]
        parts.append(f"### {ANALYSIS_TITLES.get(name, name)}\n")
        if table.empty:
            parts.append("No rows in this run.\n")
            continue
        rows = [[_format_value(v) for v in row] for row in table.itertuples(index=False)]
        parts.append(markdown_table([_cell(c) for c in table.columns], rows))
    return "\n".join(parts) if parts else "% No analysis tables were given.\n"


COMPLETION_CHARS = 160
"""Completions shown in the book (only with `book.show_completions: true`) are cut to this length."""
COMPLETIONS_PER_RUN = 2
"""How many harmful prompts' completions the book shows per model and condition."""


def completions_markdown(judged: pd.DataFrame | None, show: bool) -> str:
    """Example completions to harmful prompts, truncated, or a note that they are redacted.

    Only plain condition runs are sampled (the first prompts by id, so the choice is stable).
    """
    if not show:
        return (
            "Model completions to harmful prompts are redacted from this book. Set "
            "`book.show_completions: true` in the config to show a few, truncated to "
            f"{COMPLETION_CHARS} characters. All of them are in the judged tables, "
            "`judged/{judge}/{model}/{dataset}.parquet`.\n"
        )
    if judged is None or judged.empty:
        return "No judged responses were given to the book.\n"
    runs = judged[judged["harmful"].astype(bool) & (judged["intervention"] == "none")]
    rows = []
    for (model, condition), group in runs.groupby(["model", "condition"], sort=True):
        for _, row in group.sort_values("prompt_id").head(COMPLETIONS_PER_RUN).iterrows():
            text = " ".join(str(row["response"]).split())
            cut = text[:COMPLETION_CHARS] + ("…" if len(text) > COMPLETION_CHARS else "")
            rows.append(
                [
                    _code(model),
                    _code(condition),
                    _code(row["prompt_id"]),
                    str(bool(row["unsafe"])),
                    _cell(cut),
                ]
            )
    header = [
        "model",
        "condition",
        "prompt",
        "judged unsafe",
        f"completion (first {COMPLETION_CHARS} characters)",
    ]
    return markdown_table(header, rows)


def write_book_sources(
    book_dir: str | os.PathLike[str],
    *,
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, str | os.PathLike[str]],
    vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset],
    config: Mapping[str, Any],
    fixture_models: Sequence[str],
    show_completions: bool = False,
    captions: Mapping[str, str] | None = None,
    over_refusal_csv: str | os.PathLike[str] | None = None,
    judge: str | None = None,
    judged: pd.DataFrame | None = None,
    headline: pd.DataFrame | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """Write the book's generated fragments into `{book_dir}/_generated/` (replaced as a whole).

    `figures` maps a figure name to its PNG (copied, with the SVG beside it when present);
    `captions` maps a figure name to the caption its plotting function returned. `vectors` maps a
    label to a vector file (or dataset). `judge` picks the headline judge (default: `keyword` if
    present, else the first in sorted order). Completions to harmful prompts appear only with
    `show_completions=True`, a few per run and truncated (`judged` gives them). Returns the
    `_generated` folder.
    """
    book = Path(book_dir)
    if not (book / "_config.yml").exists():
        raise ContractError(f"{book}: not a book folder (no _config.yml)")
    asr = read_table(asr_csv, ASR_COLUMNS)
    if asr.empty:
        raise ContractError(f"{asr_csv}: no rows")
    judge = pick_judge(asr, judge)
    captions = dict(captions or {})
    over_refusal = None if over_refusal_csv is None else read_table(over_refusal_csv, OVER_REFUSAL_NEEDED)

    fragments: dict[str, str] = {
        "banner.md": banner_markdown(list(fixture_models)),
        "asr_headline.md": asr_headline_markdown(asr, judge),
        "asr_table.md": asr_full_markdown(asr),
        "over_refusal.md": over_refusal_markdown(over_refusal),
        "vectors.md": vectors_markdown(vectors),
        "provenance.md": provenance_markdown(config, list(fixture_models)),
        "completions.md": completions_markdown(judged, show_completions),
        "headline.md": headline_markdown(headline),
        "analysis_tables.md": analysis_tables_markdown(tables or {}),
    }
    copies: list[tuple[Path, str]] = []
    figure_md: dict[str, str] = {}
    for name, png in figures.items():
        png = Path(png)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ContractError(f"figures: name {name!r} must be letters, digits, '_', '.' or '-'")
        if not png.is_file():
            raise ContractError(f"{png}: figure {name!r} not found")
        rel = f"{GENERATED}/figures/{name}.png"
        copies.append((png, rel))
        svg = png.with_suffix(".svg")
        if svg.is_file():
            copies.append((svg, rel[:-4] + ".svg"))
        caption = " ".join(str(captions.get(name) or f"Figure {name}.").split())
        figure_md[name] = figure_markdown(name, rel, caption, svg.is_file())
    for name in FIGURE_NAMES:
        fragments[f"fig_{name}.md"] = figure_md.get(name) or figure_markdown(name, None, "", False)
    others = [md for name, md in figure_md.items() if name not in FIGURE_NAMES]
    fragments["figures_other.md"] = "\n".join(others) if others else "% No further figures.\n"

    tmp = Path(tempfile.mkdtemp(prefix=".generated-", dir=book))
    try:
        for fname, text in fragments.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        for src, rel in copies:
            dest = tmp / Path(rel).relative_to(GENERATED)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        tmp.chmod(0o755)
        target = book / GENERATED
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def fixture_models_of(config: Mapping[str, Any]) -> list[str]:
    """The config's models with `source: fixture`."""
    return [name for name, entry in _models_of(config) if entry.get("source") == "fixture"]


def build_report(
    *,
    book_dir: str | os.PathLike[str],
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, str | os.PathLike[str]],
    captions_json: str | os.PathLike[str] | None,
    vectors: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    index_out: str | os.PathLike[str],
    over_refusal_csv: str | os.PathLike[str] | None = None,
    sources: str | os.PathLike[str] | None = None,
    judged: Sequence[str | os.PathLike[str]] = (),
    headline_csv: str | os.PathLike[str] | None = None,
    tables: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """The book rule in one call: fragments from the result files, then the HTML build.

    `sources` is the repository's static book folder; when `book_dir` is elsewhere (a test's temporary
    directory, a results folder per config) the static pages are copied there first.

    Fixture models (`source: fixture`), `book.show_completions` and `headline_judge` come from the
    config; captions from the JSON object {figure name: caption} the figures rule writes. Returns
    `index_out`, which must be `{book_dir}/_build/html/index.html`.
    """
    if sources is not None and Path(sources).resolve() != Path(book_dir).resolve():
        shutil.copytree(
            sources, book_dir, ignore=shutil.ignore_patterns("_build", "_generated"), dirs_exist_ok=True
        )
    captions: dict[str, str] = {}
    if captions_json is not None:
        try:
            captions = json.loads(Path(captions_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ContractError(f"{captions_json}: not a JSON object of captions ({exc})") from None
        if not isinstance(captions, dict):
            raise ContractError(f"{captions_json}: expected a JSON object {{figure name: caption}}")
    labelled: dict[str, str | os.PathLike[str]] = {}
    for path in vectors:
        labelled[f"{Path(path).parent.name} / {Path(path).stem}"] = path  # vectors/{model}/{dataset}.nc
    write_book_sources(
        book_dir,
        asr_csv=asr_csv,
        figures=figures,
        vectors=labelled,
        config=config,
        fixture_models=fixture_models_of(config),
        show_completions=bool((config.get("book") or {}).get("show_completions", False)),
        captions=captions,
        over_refusal_csv=over_refusal_csv,
        judge=config.get("headline_judge"),
        judged=pd.concat([read_table(p, JUDGED_COLUMNS) for p in judged], ignore_index=True)
        if judged
        else None,
        headline=None if headline_csv is None else pd.read_csv(headline_csv),
        tables={name: pd.read_csv(path) for name, path in (tables or {}).items()},
    )
    index = build_book(book_dir)
    if index != Path(index_out).resolve():
        raise ContractError(f"{index_out}: the book builds to {index}, not to this path")
    return index


# --------------------------------------------------------------------------- build

_JB_MAIN = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_PATTERNS = (
    r"\bSphinx\w*(Warning|Error)\b: \S",
    r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b",
    r"\b\w+(Error|Exception): \S",
)


def _last_error_line(output: str) -> str:
    """The most telling line of a failed build's output (Sphinx warning or error, else the last line)."""
    lines = [ln.strip() for ln in _ANSI_RE.sub("", output).splitlines() if ln.strip()]
    for pattern in _ERROR_PATTERNS:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1]
    lines = [ln for ln in lines if not set(ln) <= {"="}]
    return lines[-1] if lines else "no output"


def build_book(book_dir: str | os.PathLike[str], *, timeout: float = 900) -> Path:
    """Build the book to HTML with Jupyter Book 1.x, every warning an error; return `_build/html/index.html`.

    `_build/` is removed first, so a failed build (ToolshiftError naming the last error line) leaves
    no `index.html` behind. Runs Jupyter Book from the current interpreter; needs no network.
    """
    book = Path(book_dir).resolve()
    if not (book / "_config.yml").is_file() or not (book / "_toc.yml").is_file():
        raise ContractError(f"{book}: not a book folder (needs _config.yml and _toc.yml)")
    build = book / "_build"
    html = build / "html"
    if build.exists():
        shutil.rmtree(build)
    cmd = [
        sys.executable,
        "-c",
        _JB_MAIN,
        "build",
        str(book),
        "--builder",
        "html",
        "--warningiserror",
        "--all",
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(html, ignore_errors=True)
        raise ToolshiftError(f"jupyter-book build of {book} timed out after {timeout:g} s") from None
    output = proc.stdout + "\n" + proc.stderr
    index = html / "index.html"
    failed = (
        proc.returncode != 0 or not index.is_file() or "There was an error in building your book" in output
    )
    if failed:
        shutil.rmtree(html, ignore_errors=True)
        raise ToolshiftError(f"jupyter-book build of {book} failed: {_last_error_line(output)}")
    return index
