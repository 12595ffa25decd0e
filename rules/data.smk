# Stage 1: datasets -> prompts.parquet + attack images (FigStep typography).


rule prompts:
    output:
        prompts=res("data/{dataset}/prompts.parquet"),
        images=directory(res("data/{dataset}/images")),
        skipped=res("data/{dataset}/skipped.csv"),
    log:
        res("logs/prompts/{dataset}.log"),
    benchmark:
        res("benchmarks/prompts/{dataset}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        results=lambda wc, output: results_root_of(output.prompts, "data/*/prompts.parquet"),
        options=lambda wc: {
            **config["datasets"][wc.dataset],
            "data_mirror": config["data_mirror"],
            "data_cache": config["data_cache"],
            "data_lock": config["data_lock"],
        },
    script:
        "../workflow_scripts/build_prompts.py"


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
        "../workflow_scripts/make_splits.py"
