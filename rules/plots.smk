# Stage 9: seaborn figures (PNG for the book, SVG beside each).


FIGURES = [
    "asr_by_condition",
    "cosine_by_layer",
    "dose_response",
    "pca",
    "probes",
    "projections",
    "asr_by_category",
    "headline",
    "interventions",
    "asr_by_judge",
    "intervention_cost",
    "free_tool_use",
]


rule figures:
    input:
        asr=res("tables/asr.csv"),
        asr_by_category=res("tables/asr_by_category.csv"),
        headline=res("tables/headline.csv"),
        cost=res("tables/intervention_cost.csv"),
        free_tool_use=res("tables/free_tool_use.csv"),
        selection=res("tables/selection.csv"),
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=HF_MODELS, dataset=DATASETS),
    output:
        asr_by_condition=res("figures/asr_by_condition.png"),
        cosine_by_layer=res("figures/cosine_by_layer.png"),
        dose_response=res("figures/dose_response.png"),
        pca=res("figures/pca.png"),
        probes=res("figures/probes.png"),
        projections=res("figures/projections.png"),
        asr_by_category=res("figures/asr_by_category.png"),
        headline=res("figures/headline.png"),
        interventions=res("figures/interventions.png"),
        asr_by_judge=res("figures/asr_by_judge.png"),
        intervention_cost=res("figures/intervention_cost.png"),
        free_tool_use=res("figures/free_tool_use.png"),
        captions=res("figures/captions.json"),
        svgs=expand(res("figures/{name}.svg"), name=FIGURES),
    log:
        res("logs/figures.log"),
    benchmark:
        res("benchmarks/figures.tsv")
    conda:
        ENV
    params:
        judge=config["headline_judge"],
    script:
        "../workflow_scripts/figures.py"
