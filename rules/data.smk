# Stage 1: datasets -> prompts.parquet + attack images (FigStep typography).


rule prompts:
    output:
        prompts=res("data/{dataset}/prompts.parquet"),
        images=directory(res("data/{dataset}/images")),
        skipped=res("data/{dataset}/skipped.csv"),
        changes=res("data/{dataset}/changes.csv"),
    log:
        res("logs/prompts/{dataset}.log"),
    benchmark:
        res("benchmarks/prompts/{dataset}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        results=results_above_output_prompts,
        options=dataset_options,
    script:
        "../workflow_scripts/prompts.py"


rule splits:
    input:
        prompts=res("data/{dataset}/prompts.parquet"),
    output:
        res("splits/{dataset}.parquet"),
    log:
        res("logs/splits/{dataset}.log"),
    benchmark:
        res("benchmarks/splits/{dataset}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        splits=config["splits"],
    script:
        "../workflow_scripts/splits.py"
