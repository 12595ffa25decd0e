# Stage 4: generation with residual-stream capture, sharded by prompts so a crash loses one shard.


rule infer_shard:
    input:
        model=res("models/{model}"),
        episodes=res("episodes/{dataset}/{condition}.jsonl"),
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
    output:
        responses=res("runs/{model}/{dataset}/{condition}/shards/{shard}.parquet"),
        activations=res("runs/{model}/{dataset}/{condition}/shards/{shard}.nc"),
    log:
        res("logs/infer/{model}/{dataset}/{condition}/{shard}.log"),
    benchmark:
        res("benchmarks/infer/{model}/{dataset}/{condition}/{shard}.tsv")
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=lambda wc: max(config["generation"]["gpu_mem_mb"], 2000),
    params:
        results=lambda wc, input: results_root_of(input.prompts, "data/*/prompts.parquet"),
        entry=lambda wc: config["models"][wc.model],
        generation=config["generation"],
        n_shards=len(SHARDS),
    script:
        "../workflow_scripts/infer.py"


rule merge_run:
    input:
        responses=expand(res("runs/{{model}}/{{dataset}}/{{condition}}/shards/{shard}.parquet"), shard=SHARDS),
        activations=expand(res("runs/{{model}}/{{dataset}}/{{condition}}/shards/{shard}.nc"), shard=SHARDS),
    output:
        responses=res("runs/{model}/{dataset}/{condition}/responses.parquet"),
        activations=res("runs/{model}/{dataset}/{condition}/activations.nc"),
    log:
        res("logs/merge/{model}/{dataset}/{condition}.log"),
    benchmark:
        res("benchmarks/merge/{model}/{dataset}/{condition}.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/merge_shards.py"
