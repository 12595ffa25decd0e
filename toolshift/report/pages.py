"""The book's generated pages: `write_book_pages` turns the DAG's result files (tables, figures, vector
files, episodes, prompts, splits, benchmark files, the config) into markdown fragments under
`{book_dir}/_generated/`, which the static chapter pages in `book/` include with MyST `{include}`
directives. It only formats what the files hold; it computes no statistics. Which page shows which figure
is the figure registry's (`toolshift.report.figures.registry`), which table `TABLE_PAGES`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from toolshift.contracts import (
    ACTIVATION_TABLES,
    ASR_COLUMNS,
    OVER_REFUSAL_COLUMNS,
    read_table,
)
from toolshift.datasets.images import save_thumbnail
from toolshift.errors import ContractError
from toolshift.report.environment import (
    git_markdown,
    git_state,
    read_benchmarks,
    runtimes_markdown,
    software_markdown,
)
from toolshift.report.examples import example_episodes_markdown
from toolshift.report.figures.registry import FIGURE_NAMES, FIGURE_PAGES, figures_of
from toolshift.report.figures.style import pick_judge
from toolshift.report.format import (
    DASH,
    NOT_FOR_API_MODELS,
    cell,
    code,
    is_missing,
    markdown_table,
    number_with_ci,
    p_value,
    ref_label,
)
from toolshift.report.outcomes import non_answer_markdown
from toolshift.report.provenance import (
    bundle_markdown,
    config_markdown,
    datasets_markdown,
    engines_markdown,
    judges_markdown,
    models_markdown,
    models_of,
    protocols_markdown,
    splits_markdown,
)
from toolshift.report.revisions import unpinned_markdown
from toolshift.report.tables import (
    PLANTED_LABEL,
    analysis_table_markdown,
    asr_conditions_markdown,
    asr_full_markdown,
    asr_headline_markdown,
    completions_markdown,
    over_refusal_markdown,
)

BOOK_IMAGE_MAX_SIDE = 768
"""The longest side of an example image in the book (attack images, zoom crops): larger ones are shown as
thumbnails of this side (a FigStep image, 760 px, is copied as it is)."""

GENERATED = "_generated"
"""Folder, inside the book, that holds every generated fragment and the copied figures and images."""


CHAPTERS: tuple[str, ...] = (
    "intro",
    "method",
    "behaviour",
    "representation",
    "interventions",
    "validation",
    "provenance",
    "reproduce",
)
"""The book's pages, in reading order (`intro` is the overview)."""


TABLE_PAGES: dict[str, str] = {
    "asr_by_category": "behaviour",
    "free_tool_use": "behaviour",
    "asr_by_judge": "behaviour",
    "judge_agreement": "behaviour",
    "representation": "representation",
    "relative_vectors": "representation",
    "selection": "interventions",
    "tool_gap": "interventions",
    "contrasts": "interventions",
    "asr_by_scale": "behaviour",
    "token_counts": "behaviour",
    "tokens_model": "behaviour",
    "transfer": "interventions",
    "intervention_cost": "interventions",
    "validation_planted": "validation",
    "validation_planted_model": "validation",
    "validation_worlds": "validation",
    "claims": "intro",
    "validation_figstep": "validation",
    "judge_human_agreement": "validation",
}
"""Analysis table name -> the page that shows it (`_generated/table_{name}.md`)."""


FIXTURE_BANNER = (
    "These numbers come from tiny randomly initialised fixture models. "
    "They are noise and say nothing about real models."
)
"""The warning shown at the top of every results-bearing page when a fixture model is in the run."""


PLANTED_BANNER = (
    "The planted worlds are positive controls: their weights were set by hand so that a tool turn, its "
    "text alone, or the tokens after the instruction lower ASR through a known direction. Their effects "
    "were put there on purpose; they show what the pipeline finds and how it tells such effects apart, not "
    "that real models have one."
)
"""Added to the warning when a planted world is in the run."""


OVER_REFUSAL_NEEDED: tuple[str, ...] = tuple(c for c in OVER_REFUSAL_COLUMNS if c != "split")
"""Columns of `tables/over_refusal.csv` the book shows (refusal rate on harmless prompts)."""


def banner_markdown(fixture_models: Sequence[str], planted: Sequence[str] = ()) -> str:
    """The fixture warning admonition, or a MyST comment (renders nothing) when no fixture model is used;
    `planted` are the planted worlds among them (labelled as positive controls)."""
    if not fixture_models:
        return "% No fixture model in this run: no fixture warning.\n"
    names = ", ".join(code(m) + (f" ({PLANTED_LABEL})" if m in planted else "") for m in fixture_models)
    extra = f"\n\n{PLANTED_BANNER}" if any(m in planted for m in fixture_models) else ""
    return f"```{{warning}}\n{FIXTURE_BANNER}{extra}\n\nFixture models in this run: {names}.\n```\n"


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


def vectors_markdown(
    vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset],
    api_models: Sequence[str] = (),
    api_only: bool = False,
) -> str:
    """Per vector file, at its selected layer (``selected_layer``, the layer `tables/selection.csv`
    reports; never the best of all layers): cos(tool vector, refusal direction) with its bootstrap interval
    and permutation p (the file's ``relative_null`` of reference ``direct``, when present) and the tool
    vector's norm. Model and dataset come from the file's attrs (the mapping's key when an attr is absent).
    A study of API models only (`api_only`) has none: the fragment says they are not available for API
    models; the API models of a mixed study are named below the table.
    """
    if api_only:
        return NOT_FOR_API_MODELS + "\n"
    note = (
        f"\nNo vectors for {', '.join(code(m) for m in api_models)}: {NOT_FOR_API_MODELS[0].lower()}"
        f"{NOT_FOR_API_MODELS[1:]}\n"
        if api_models
        else ""
    )
    if not vectors:
        return "No vector files in this run.\n" + note
    rows = []
    for key, source in vectors.items():
        ds = _open_vectors(key, source)
        for name in ("cos_tool_refusal", "norm_tool_vector"):
            if name not in ds.variables:
                raise ContractError(f"vectors for model {key!r}: missing variable {name!r}")
        if "selected_layer" not in ds.attrs:
            raise ContractError(f"vectors for model {key!r}: missing attribute 'selected_layer'")
        layer = int(ds.attrs["selected_layer"])
        cos = float(ds["cos_tool_refusal"].sel(layer=layer))
        norm = float(ds["norm_tool_vector"].sel(layer=layer))
        lo = hi = p = None
        if "relative_null" in ds.variables and "direct" in [str(r) for r in ds["reference"].values]:
            null = ds["relative_null"].sel(reference="direct")
            lo, hi, p = (float(null.sel(quantity=q)) for q in ("ci_low", "ci_high", "p_perm"))
        rows.append(
            [
                code(ds.attrs.get("model", key)),
                code(ds.attrs.get("dataset", "?")),
                str(ds.sizes["layer"]),
                str(layer),
                number_with_ci(cos, lo, hi),
                p_value(p),
                DASH if is_missing(norm) else f"{norm:.3g}",
            ]
        )
    header = [
        "model",
        "dataset",
        "layers",
        "selected layer",
        "cos(tool vector, refusal dir.) [95 % CI]",
        "p (perm.)",
        "norm",
    ]
    return (
        markdown_table(header, rows)
        + "\nInterval: bootstrap over the train harmful prompts; p: the tool and direct labels shuffled "
        "within each prompt.\n" + note
    )


def figure_markdown(name: str, png_rel: str | None, caption: str, has_svg: bool) -> str:
    """A MyST figure (path relative to the book root), or a note that the figure was not produced."""
    if png_rel is None:
        return f"The `{name}` figure was not produced in this run.\n"
    svg = f" {{download}}`SVG </{png_rel[:-4]}.svg>`" if has_svg else ""
    alt = caption.replace("\n", " ").replace('"', "'")
    return (
        f"```{{figure}} /{png_rel}\n:name: {ref_label('fig', name)}\n:alt: {alt}\n:width: 100%\n\n"
        f"{caption}{svg}\n```\n"
    )


def headline_markdown(headline: pd.DataFrame | None) -> str:
    """The headline sentence, from `tables/headline.csv` (toolshift.analysis.headline computes it, only
    there)."""
    if headline is None or headline.empty:
        return "% No headline table was given.\n"
    from toolshift.analysis.headline import headline_sentence

    try:
        return headline_sentence(headline) + "\n"
    except (KeyError, ValueError) as exc:
        return f"The headline could not be stated: {cell(exc)}\n"


FigureSource = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]
"""A figure's PNG, or {dataset: PNG} for a figure drawn once per dataset."""


CaptionSource = str | Mapping[str, str]
"""A figure's caption, or {dataset: caption}."""


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _one_figure(
    name: str, dataset: str | None, png: str | os.PathLike[str], caption: str | None, label: str
) -> tuple[str, list[tuple[Path, str]]]:
    png = Path(png)
    for part in (name, dataset or ""):
        if part and not _NAME_RE.fullmatch(part):
            raise ContractError(f"figures: name {part!r} must be letters, digits, '_', '.' or '-'")
    if not png.is_file():
        raise ContractError(f"{png}: figure {name!r} not found")
    rel = f"{GENERATED}/figures/{dataset}/{name}.png" if dataset else f"{GENERATED}/figures/{name}.png"
    copies = [(png, rel)]
    svg = png.with_suffix(".svg")
    if svg.is_file():
        copies.append((svg, rel[:-4] + ".svg"))
    text = " ".join(str(caption or f"Figure {name}.").split())
    return figure_markdown(label, rel, text, svg.is_file()), copies


def _figure_fragments(
    figures: Mapping[str, FigureSource],
    captions: Mapping[str, CaptionSource],
    missing: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    """The figure fragments and the files to copy; `missing` says why a figure is not there (by name)."""
    missing = dict(missing or {})
    copies: list[tuple[Path, str]] = []
    figure_md: dict[str, str] = {}
    for name, source in figures.items():
        caption = captions.get(name)
        if isinstance(source, Mapping):  # one figure per dataset, in the order given
            blocks = []
            for dataset, png in source.items():
                text = caption.get(dataset) if isinstance(caption, Mapping) else caption
                label = name if len(source) == 1 else f"{name}-{dataset}"
                md, more = _one_figure(name, str(dataset), png, text, label)
                blocks.append(md)
                copies += more
            figure_md[name] = "\n".join(blocks)
        else:
            text = caption if isinstance(caption, str) else None
            md, more = _one_figure(name, None, source, text, name)
            figure_md[name] = md
            copies += more
    fragments = {
        f"fig_{name}.md": figure_md.get(name)
        or (f"{missing[name]}\n" if name in missing else figure_markdown(name, None, "", False))
        for name in FIGURE_NAMES
    }
    others = [md for name, md in figure_md.items() if name not in FIGURE_PAGES]
    fragments["figures_other.md"] = (
        "## Other figures\n\n" + "\n".join(others) if others else "% No further figures.\n"
    )
    return fragments, copies


def collect_figures(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[dict[str, FigureSource], dict[str, CaptionSource]]:
    """The figures rules' files -> (figures, captions) for `write_book_pages`.

    `figures/{name}.png` is a figure of the whole study; `figures/{dataset}/{name}.png` one drawn per
    dataset. Each folder's `captions.json` maps its figure names to their captions."""
    figures: dict[str, Any] = {}
    captions: dict[str, Any] = {}
    for path in map(Path, paths):
        if path.suffix == ".json":
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ContractError(f"{path}: not a JSON object of captions ({exc})") from None
            if not isinstance(loaded, dict):
                raise ContractError(f"{path}: expected a JSON object {{figure name: caption}}")
            dataset = None if path.parent.name == "figures" else path.parent.name
            for name, text in loaded.items():
                if dataset is None:
                    captions[name] = text
                else:
                    captions.setdefault(name, {})[dataset] = text
        elif path.suffix == ".png":
            if path.parent.name == "figures":
                figures[path.stem] = path
            else:
                figures.setdefault(path.stem, {})[path.parent.name] = path
    return figures, captions


def _human_labels_note(config: Mapping[str, Any]) -> str:
    path = (config.get("human_labels") or {}).get("path")
    if path:
        return f"Human labels from {code(path)}; the majority label is the reference.\n"
    return "% No human-labelled file is configured; the table section says so.\n"


def write_book_pages(
    book_dir: str | os.PathLike[str],
    *,
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, FigureSource],
    vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset],
    config: Mapping[str, Any],
    fixture_models: Sequence[str],
    show_completions: bool = False,
    captions: Mapping[str, CaptionSource] | None = None,
    over_refusal_csv: str | os.PathLike[str] | None = None,
    judge: str | None = None,
    judged: pd.DataFrame | None = None,
    headline: pd.DataFrame | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
    episodes: Mapping[str, str | os.PathLike[str]] | None = None,
    results_root: str | os.PathLike[str] | None = None,
    prompts: Mapping[str, pd.DataFrame] | None = None,
    splits: Mapping[str, pd.DataFrame] | None = None,
    benchmarks_dir: str | os.PathLike[str] | None = None,
    repo_dir: str | os.PathLike[str] | None = None,
    bundle_record: Mapping[str, Any] | None = None,
) -> Path:
    """Write the book's generated fragments into `{book_dir}/_generated/` (replaced as a whole).

    `figures` maps a figure name to its PNG, or to {dataset: PNG} for a figure drawn per dataset
    (copied, with the SVG beside it when present); `captions` maps a figure name to the caption its
    plotting function returned (or {dataset: caption}). `vectors` maps a
    label to a vector file (or dataset). `tables` maps an analysis table's name (`tables/{name}.csv`)
    to its frame. `episodes` maps a condition to its episodes JSONL, whose image paths are relative to
    `results_root`; `prompts` and `splits` map a dataset to its prompt and split tables;
    `benchmarks_dir` holds the Snakemake benchmark files and `repo_dir` the workflow's git checkout;
    `bundle_record` is an imported result bundle's record (`bundle/imported.json`), if any.
    `judge` picks the headline judge (default: `keyword` if present, else the first in sorted order).
    Completions to harmful prompts appear only with `show_completions=True`, a few per run and
    truncated (`judged` gives them). Returns the `_generated` folder.
    """
    book = Path(book_dir)
    if not (book / "_config.yml").exists():
        raise ContractError(f"{book}: not a book folder (no _config.yml)")
    api_models = [name for name, entry in models_of(config) if entry.get("backend", "hf") != "hf"]
    api_only = bool(api_models) and len(api_models) == len(models_of(config))
    asr = read_table(asr_csv, ASR_COLUMNS)
    if asr.empty:
        raise ContractError(f"{asr_csv}: no rows")
    judge = pick_judge(asr, judge)
    tables = dict(tables or {})
    over_refusal = None if over_refusal_csv is None else read_table(over_refusal_csv, OVER_REFUSAL_NEEDED)
    harmful_ids = None
    if prompts:
        harmful_ids = [
            str(i) for df in prompts.values() for i in df.loc[df["harmful"].astype(bool), "prompt_id"]
        ]
    if episodes and results_root is None:
        raise ContractError("episodes were given without results_root (their image paths are relative to it)")
    examples, example_copies = (
        example_episodes_markdown(
            episodes,
            results_root,
            f"{GENERATED}/examples",
            harmful_ids=harmful_ids,
            show_completions=show_completions,
        )
        if episodes
        else ("No episode files were given to the book.\n", [])
    )

    fragments: dict[str, str] = {
        "banner.md": banner_markdown(list(fixture_models), planted_models_of(config)),
        "asr_headline.md": asr_headline_markdown(asr, judge, planted_models_of(config)),
        "asr_conditions.md": asr_conditions_markdown(asr, judge),
        "asr_table.md": asr_full_markdown(asr),
        "over_refusal.md": over_refusal_markdown(over_refusal),
        "vectors.md": vectors_markdown(vectors, api_models, api_only),
        "completions.md": completions_markdown(judged, show_completions),
        "headline.md": headline_markdown(headline),
        "non_answers.md": non_answer_markdown(asr, judge),
        "examples.md": examples,
        "models.md": models_markdown(config, list(fixture_models)),
        "protocols.md": protocols_markdown(config),
        "engines.md": engines_markdown(judged),
        "datasets.md": datasets_markdown(prompts or {}, config),
        "splits.md": splits_markdown(splits or {}, config),
        "judges.md": judges_markdown(config),
        "unpinned.md": unpinned_markdown(config),
        "software.md": software_markdown(),
        "git.md": git_markdown(git_state(repo_dir) if repo_dir is not None else {}),
        "runtimes.md": runtimes_markdown(read_benchmarks(benchmarks_dir))
        if benchmarks_dir is not None
        else "No benchmark folder was given to the book.\n",
        "config.md": config_markdown(config),
        "bundle.md": bundle_markdown(bundle_record),
        "human_labels_note.md": _human_labels_note(config),
        "headline_judge.md": f"Figures and main tables use the **{judge}** judge; {{doc}}`method` lists "
        "every judge, and the last section here compares them.\n",
    }
    for name in TABLE_PAGES:
        missing = NOT_FOR_API_MODELS if api_only and name in ACTIVATION_TABLES else None
        fragments[f"table_{name}.md"] = analysis_table_markdown(name, tables.get(name), judge, missing)
    others = [analysis_table_markdown(n, t, judge) for n, t in sorted(tables.items()) if n not in TABLE_PAGES]
    fragments["tables_other.md"] = "\n".join(others) if others else "% No further tables.\n"
    not_drawn = (
        {name: NOT_FOR_API_MODELS for name in figures_of("representation_figures")} if api_only else {}
    )
    figure_fragments, copies = _figure_fragments(figures, dict(captions or {}), not_drawn)
    fragments.update(figure_fragments)

    tmp = Path(tempfile.mkdtemp(prefix=".generated-", dir=book))
    try:
        for fname, text in fragments.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        for src, rel in copies:
            dest = tmp / Path(rel).relative_to(GENERATED)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        for src, rel in example_copies:  # attack images and zoom crops: thumbnails, never full-size copies
            dest = tmp / Path(rel).relative_to(GENERATED)
            dest.parent.mkdir(parents=True, exist_ok=True)
            save_thumbnail(src, dest, BOOK_IMAGE_MAX_SIDE)
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
    return [name for name, entry in models_of(config) if entry.get("source") == "fixture"]


def planted_models_of(config: Mapping[str, Any]) -> list[str]:
    """The config's planted worlds (`fixture.planted` set)."""
    return [
        name
        for name, entry in models_of(config)
        if entry.get("source") == "fixture" and (entry.get("fixture") or {}).get("planted")
    ]
