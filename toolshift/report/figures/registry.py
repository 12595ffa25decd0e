"""The one figure registry: every figure the DAG draws, the function that draws it, the book page that
shows it and the rule that draws it. `rules/plots.smk` (the rules' outputs), `rules/book.smk` (the book's
inputs), `workflow_scripts/figures.py` (what each rule draws), `toolshift.report.pages` (which page
includes which figure) and the tests read it; nothing else lists figure names.

Stdlib only: the Snakefile imports this module for every DAG build, so the drawing functions are named
here and imported only when `draw` is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

RULES: tuple[str, ...] = ("figures", "representation_figures", "headline_figure")
"""The rules that draw figures (rules/plots.smk): `figures` draws the behaviour figures of one dataset
from the tables, `representation_figures` those of one dataset from the vector files (while the judges
still run), `headline_figure` the study's one headline figure."""


@dataclass(frozen=True)
class FigureEntry:
    """One figure: `figures/{dataset}/{name}.png` (or `figures/{name}.png` for the `headline_figure` rule),
    drawn by `function` (`module.function` under toolshift.report.figures), shown on the book page `page`
    (`_generated/fig_{name}.md`)."""

    name: str
    function: str
    page: str
    rule: str


FIGURES: tuple[FigureEntry, ...] = (
    FigureEntry("headline", "headline.plot_headline", "intro", "headline_figure"),
    FigureEntry("asr_by_condition", "behaviour.plot_asr_by_condition", "behaviour", "figures"),
    FigureEntry("asr_by_category", "behaviour.plot_category_heatmap", "behaviour", "figures"),
    FigureEntry("free_tool_use", "behaviour.plot_free_tool_use", "behaviour", "figures"),
    FigureEntry("asr_by_judge", "behaviour.plot_asr_by_judge", "behaviour", "figures"),
    FigureEntry(
        "cosine_by_layer", "representation.plot_cosine_by_layer", "representation", "representation_figures"
    ),
    FigureEntry("projections", "representation.plot_projections", "representation", "representation_figures"),
    FigureEntry("pca", "representation.plot_pca", "representation", "representation_figures"),
    FigureEntry("probes", "representation.plot_probes", "representation", "representation_figures"),
    FigureEntry("dose_response", "interventions.plot_dose_response", "interventions", "figures"),
    FigureEntry("interventions", "interventions.plot_interventions", "interventions", "figures"),
    FigureEntry("intervention_cost", "intervention_cost.plot_intervention_cost", "interventions", "figures"),
)
"""Every figure, in the order the book shows them."""

FIGURE_PAGES: dict[str, str] = {f.name: f.page for f in FIGURES}
"""Figure name -> the book page that shows it."""

FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_PAGES)
"""Every figure's name, in the order the book shows them."""


def figures_of(rule: str) -> list[str]:
    """The names of the figures `rule` draws (one of RULES), in registry order."""
    if rule not in RULES:
        raise ValueError(f"no figure rule {rule!r}; the rules are {', '.join(RULES)}")
    return [f.name for f in FIGURES if f.rule == rule]


def drawing_function(name: str) -> Callable[..., str]:
    """The function that draws figure `name` (imported on first use)."""
    entry = next((f for f in FIGURES if f.name == name), None)
    if entry is None:
        raise KeyError(f"no figure {name!r} in the registry; figures: {', '.join(FIGURE_NAMES)}")
    module, _, function = entry.function.rpartition(".")
    return getattr(importlib.import_module(f"toolshift.report.figures.{module}"), function)
