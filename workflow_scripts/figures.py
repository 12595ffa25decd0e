"""Rules figures and representation_figures: one dataset's seaborn figures (PNG + SVG) and their captions:
the behaviour figures from the tables, the representation figures from the vectors. Which rule draws which
figure, and with which function, is the figure registry's (toolshift.report.figures.registry)."""

import json
from pathlib import Path

from toolshift.analysis.interventions import expand_interventions
from toolshift.analysis.vectors import read_vectors
from toolshift.common.steps import run_step
from toolshift.contracts import (
    ASR_TABLE_COLUMNS,
    COST_TABLE_COLUMNS,
    FREE_TOOL_USE_COLUMNS,
    SELECTION_COLUMNS,
    read_table,
)
from toolshift.files import atomic_path
from toolshift.report.figures.registry import drawing_function, figures_of
from toolshift.report.figures.style import plot_not_drawn


def representation(smk, out: dict[str, str]) -> dict[str, str]:
    """The figures of the vectors: cosines by layer, PCA, probes, projections."""
    vectors = {}
    for path in smk.input.vectors:
        ds = read_vectors(path)
        vectors[f"{ds.attrs['model']} / {ds.attrs['dataset']}"] = ds
    return {name: drawing_function(name)(vectors, out[name]) for name in figures_of("representation_figures")}


def behaviour(smk, out: dict[str, str]) -> dict[str, str]:
    """The figures of the tables: ASR by condition, judge and category, interventions, costs, free use."""
    judge, dataset = smk.params.judge, smk.wildcards.dataset

    def table(path, columns):
        df = read_table(path, columns)
        return df[df["dataset"] == dataset]

    all_judges = table(smk.input.asr, ASR_TABLE_COLUMNS)
    asr = all_judges[all_judges["judge"] == judge]
    cost = table(smk.input.cost, COST_TABLE_COLUMNS)
    selection = table(smk.input.selection, SELECTION_COLUMNS)
    kinds = intervention_kinds(smk.config, dataset)
    plot = {name: drawing_function(name) for name in figures_of("figures")}

    def unless_none(kinds_needed, name, draw):
        """Draw the figure, or say why not: the config runs none of the interventions it shows (None: any)."""
        if kinds & set(kinds_needed or kinds):
            return draw()
        needed = " or ".join(f"`{k}`" for k in kinds_needed) + " " if kinds_needed else ""
        key = f"interventions.{kinds_needed[0]}" if kinds_needed else "interventions"
        return plot_not_drawn(
            out[name],
            f"this run has no {needed}interventions on {dataset} (set {key} in the config, with a model on "
            "the hf backend, to draw it).",
        )

    return {
        "asr_by_condition": plot["asr_by_condition"](asr, out["asr_by_condition"], judge=judge),
        "dose_response": unless_none(
            ["add"], "dose_response", lambda: plot["dose_response"](asr, out["dose_response"])
        ),
        "asr_by_category": plot["asr_by_category"](
            table(smk.input.asr_by_category, ASR_TABLE_COLUMNS), out["asr_by_category"], judge
        ),
        "interventions": unless_none(
            ["add", "subtract", "ablate"],
            "interventions",
            lambda: plot["interventions"](asr, out["interventions"], judge, selection),
        ),
        "asr_by_judge": plot["asr_by_judge"](all_judges, out["asr_by_judge"]),
        "intervention_cost": unless_none(
            None,
            "intervention_cost",
            lambda: plot["intervention_cost"](cost, asr, out["intervention_cost"], judge),
        ),
        "free_tool_use": plot["free_tool_use"](
            table(smk.input.free_tool_use, FREE_TOOL_USE_COLUMNS), out["free_tool_use"]
        ),
    }


def intervention_kinds(config, dataset) -> set[str]:
    """The kinds of intervention the config runs on `dataset` (none without a model on the hf backend)."""
    if not any(entry.get("backend", "hf") == "hf" for entry in config["models"].values()):
        return set()
    return {
        spec.kind for spec in expand_interventions(config["interventions"], dataset, config["conditions"])
    }


DRAW = {"representation_figures": representation, "figures": behaviour}
"""What each rule draws its figures from."""


def main(smk) -> None:
    out = {Path(p).stem: p for p in smk.output.pngs}
    captions = DRAW[smk.rule](smk, out)
    missing = set(out) - set(captions)
    if missing:
        raise RuntimeError(f"figures: no plotting call for {', '.join(sorted(missing))}")
    with atomic_path(smk.output.captions) as tmp:
        tmp.write_text(json.dumps(captions, indent=2), encoding="utf-8")


run_step(snakemake, main)
