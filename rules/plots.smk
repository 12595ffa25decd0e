# Stage 9: seaborn figures (PNG for the book, SVG beside each): one set per dataset, and the headline.


DATASET_FIGURES = [
    "asr_by_condition",
    "cosine_by_layer",
    "dose_response",
    "pca",
    "probes",
    "projections",
    "asr_by_category",
    "interventions",
    "asr_by_judge",
    "intervention_cost",
    "free_tool_use",
]


rule figures:
    input:
        asr=res("tables/asr.csv"),
        asr_by_category=res("tables/asr_by_category.csv"),
        cost=res("tables/intervention_cost.csv"),
        free_tool_use=res("tables/free_tool_use.csv"),
        selection=res("tables/selection.csv"),
        vectors=expand(res("vectors/{model}/{{dataset}}.nc"), model=HF_MODELS),
    output:
        pngs=expand(res("figures/{{dataset}}/{name}.png"), name=DATASET_FIGURES),
        svgs=expand(res("figures/{{dataset}}/{name}.svg"), name=DATASET_FIGURES),
        captions=res("figures/{dataset}/captions.json"),
    log:
        res("logs/figures/{dataset}.log"),
    benchmark:
        res("benchmarks/figures/{dataset}.tsv")
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
        png=res("figures/headline.png"),
        svg=res("figures/headline.svg"),
        captions=res("figures/captions.json"),
    log:
        res("logs/figures/headline.log"),
    benchmark:
        res("benchmarks/figures/headline.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/headline_figure.py"
