"""Snakemake's own report (`snakemake --report report.zip`) beside the book: which outputs it shows and their
captions (rules/report.smk flags them with `report()`).

Every table (`{results}/tables/*.csv`) and every figure (`{results}/figures/**.png`) any rule declares goes
into the report, in the category `Tables` or `Figures` and the subcategory of the book page that shows it
(the figure registry's pages; `toolshift.report.pages.TABLE_PAGES`). A figure's caption is the one its
drawing function wrote into the figure rule's `captions.json` (the text the book shows), per dataset; before
the figures exist it names the figure's rule and page from the registry. A table is labelled with its
section title in the book (`toolshift.report.columns.TABLE_TITLES`).

The workflow imports this module at every load, so it reads only the stdlib figure registry; the book's
page and title tables are imported when Snakemake builds the report (the labels and subcategories of tables
are functions it calls then). Caption files are Jinja2 templates Snakemake renders with the job's wildcards;
they are written into Snakemake's temporary directory, so nothing is added to the repository.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolshift.report.figures.registry import FIGURES

TABLE_TITLES_MAIN: dict[str, str] = {
    "asr": "Attack success rate per model, dataset, condition or intervention and judge (test split)",
    "asr_validation": "Attack success rate on the validation split (the layer and α are selected on it)",
    "over_refusal": "Over-refusal: refusals of the harmless prompts per run",
    "over_refusal_validation": "Over-refusal on the validation split",
    "headline": "The headline: relative reduction of ASR from direct to tool per model and their mean",
}
"""Titles of the main tables, which the book shows in sections of their own rather than as analysis tables."""

_RST_SPECIAL = re.compile(r"([\\`*_|])")


@dataclass(frozen=True)
class ReportItem:
    """One output shown in the report: its kind, name, category, subcategory (text, or a function of the
    job's wildcards Snakemake calls when it builds the report) and labels (likewise)."""

    kind: str
    name: str
    category: str
    subcategory: str | Callable[..., str]
    labels: dict[str, str] | Callable[..., dict[str, str]]


def table_page(name: str) -> str:
    """The book page that shows table `name` (`behaviour` for the main tables, `other` for one it lacks)."""
    from toolshift.report.pages import TABLE_PAGES

    return TABLE_PAGES.get(name, "behaviour" if name in TABLE_TITLES_MAIN else "other")


def table_title(name: str) -> str:
    """The title of table `name`'s section in the book."""
    from toolshift.report.columns import TABLE_TITLES

    return TABLE_TITLES.get(name) or TABLE_TITLES_MAIN.get(name) or name


def report_item(path: str, results: str) -> ReportItem | None:
    """What `path` (a rule's declared output pattern) is in the report, or None when it is not shown."""
    prefix = f"{str(results).rstrip('/')}/"
    if not path.startswith(prefix):
        return None
    rel = path[len(prefix) :]
    if rel.startswith("tables/") and rel.endswith(".csv") and rel.count("/") == 1:
        name = rel[len("tables/") : -len(".csv")]

        def subcategory(wildcards: Any) -> str:
            return table_page(name)

        def labels(wildcards: Any) -> dict[str, str]:
            return {"table": name, "title": table_title(name)}

        return ReportItem("table", name, "Tables", subcategory, labels)
    if rel.startswith("figures/") and rel.endswith(".png"):
        name = Path(rel).stem
        page = next((f.page for f in FIGURES if f.name == name), "other")
        per_dataset = re.search(r"\{dataset\b", rel) is not None  # the pattern may carry its constraint
        labels = {"figure": name, "dataset": "{dataset}" if per_dataset else "all"}
        return ReportItem("figure", name, "Figures", page, labels)
    return None


def rst_text(text: str) -> str:
    """`text` with reStructuredText's inline markup characters escaped, on one line."""
    return _RST_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _raw(text: str) -> str:
    return "{% raw %}" + rst_text(text) + "{% endraw %}"


def figure_caption(name: str, by_dataset: Mapping[str, str]) -> str:
    """The caption template of figure `name`: the drawing function's caption of the job's dataset (or the
    study-wide one, key `all`), else what the registry says about the figure."""
    entry = next((f for f in FIGURES if f.name == name), None)
    fallback = (
        f"Figure {name}, drawn by rule {entry.rule} (toolshift.report.figures.{entry.function}); the book "
        f"shows it on its {entry.page} page."
        if entry
        else f"Figure {name}."
    )
    if set(by_dataset) == {"all"}:
        return _raw(by_dataset["all"]) + "\n"
    branches = [
        f'{"{% if" if i == 0 else "{% elif"} snakemake.wildcards.dataset == "{d}" %}}{_raw(c)}'
        for i, (d, c) in enumerate(sorted(by_dataset.items()))
    ]
    if not branches:
        return _raw(fallback) + "\n"
    return "".join(branches) + "{% else %}" + _raw(fallback) + "{% endif %}\n"


def read_captions(results: str | os.PathLike[str], datasets: Iterable[str]) -> dict[str, dict[str, str]]:
    """Figure name -> {dataset (or `all`): caption} from every `captions.json` written so far."""
    root = Path(results) / "figures"
    files = [("all", root / "captions.json")]
    for dataset in datasets:
        files += [
            (dataset, root / dataset / "captions.json"),
            (dataset, root / dataset / "representation.captions.json"),
        ]
    found: dict[str, dict[str, str]] = {}
    for dataset, path in files:
        try:
            captions = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name, caption in captions.items() if isinstance(captions, dict) else ():
            found.setdefault(str(name), {})[dataset] = str(caption)
    return found


def write_figure_captions(
    folder: str | os.PathLike[str], results: str | os.PathLike[str], datasets: Iterable[str]
) -> dict[str, Path]:
    """Write the caption template of every figure of the registry into `folder`: figure name -> file."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    captions = read_captions(results, datasets)
    files = {}
    for entry in FIGURES:
        path = out / f"figure_{entry.name}.rst"
        path.write_text(figure_caption(entry.name, captions.get(entry.name, {})), encoding="utf-8")
        files[entry.name] = path
    return files
