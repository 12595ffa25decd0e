# Stage 9: seaborn figures (PNG for the book, SVG beside each): one set per dataset, and the headline.


# Figures drawn per dataset, in two groups: the representation figures read only the vectors, so they are
# drawn while the judges still run; the behaviour figures wait for the tables. The names come from the one
# figure registry (toolshift/report/figures/registry.py), which also says which rule draws each one.
from toolshift.report.figures.registry import figures_of

REPRESENTATION_FIGURES = figures_of("representation_figures")
BEHAVIOUR_FIGURES = figures_of("figures")
# without a model on the hf backend (an API-only study) there are no vectors: no representation figures, and
# the behaviour figures that need the analysis tables say they are not available for API models
DATASET_FIGURES = BEHAVIOUR_FIGURES + (REPRESENTATION_FIGURES if HF_MODELS else [])
(HEADLINE_FIGURE,) = figures_of("headline_figure")
FIGURE_CAPTIONS = ["captions"] + (["representation.captions"] if HF_MODELS else [])
ACTIVATION_TABLE_INPUTS = (
    {"cost": res("tables/intervention_cost.csv"), "selection": res("tables/selection.csv")}
    if HF_MODELS
    else {}
)


rule representation_figures:
    input:
        vectors=expand(res("vectors/{model}/{{dataset}}.nc"), model=HF_MODELS),
    output:
        pngs=expand(res("figures/{{dataset}}/{name}.png"), name=REPRESENTATION_FIGURES),
        svgs=expand(res("figures/{{dataset}}/{name}.svg"), name=REPRESENTATION_FIGURES),
        captions=res("figures/{dataset}/representation.captions.json"),
    log:
        res("logs/figures/{dataset}.representation.log"),
    benchmark:
        res("benchmarks/figures/{dataset}.representation.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/figures.py"


rule figures:
    input:
        **ACTIVATION_TABLE_INPUTS,
        asr=res("tables/asr.csv"),
        asr_by_category=res("tables/asr_by_category.csv"),
        free_tool_use=res("tables/free_tool_use.csv"),
    output:
        pngs=expand(res("figures/{{dataset}}/{name}.png"), name=BEHAVIOUR_FIGURES),
        svgs=expand(res("figures/{{dataset}}/{name}.svg"), name=BEHAVIOUR_FIGURES),
        captions=res("figures/{dataset}/captions.json"),
    log:
        res("logs/figures/{dataset}.log"),
    benchmark:
        res("benchmarks/figures/{dataset}.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    params:
        judge=config["headline_judge"],
    script:
        "../workflow_scripts/figures.py"


rule headline_figure:
    input:
        headline=res("tables/headline.csv"),
    output:
        png=res(f"figures/{HEADLINE_FIGURE}.png"),
        svg=res(f"figures/{HEADLINE_FIGURE}.svg"),
        captions=res("figures/captions.json"),
    log:
        res("logs/figures/headline.log"),
    benchmark:
        res("benchmarks/figures/headline.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/headline_figure.py"
