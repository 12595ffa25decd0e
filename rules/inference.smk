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
    wildcard_constraints:
        model=one_of(HF_MODELS),
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
        free=config["free"],
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
    wildcard_constraints:
        model=one_of(HF_MODELS),
    conda:
        ENV
    script:
        "../workflow_scripts/merge_shards.py"


# The OpenAI-compatible backend: the same responses.parquet, no activations.nc (see README, "Replace a rule").
rule infer_api:
    input:
        episodes=res("episodes/{dataset}/{condition}.jsonl"),
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
    output:
        responses=res("runs/{model}/{dataset}/{condition}/responses.parquet"),
    log:
        res("logs/infer_api/{model}/{dataset}/{condition}.log"),
    benchmark:
        res("benchmarks/infer_api/{model}/{dataset}/{condition}.tsv")
    wildcard_constraints:
        model=one_of(API_MODELS),
    conda:
        ENV
    resources:
        api=1,
    params:
        results=lambda wc, input: results_root_of(input.prompts, "data/*/prompts.parquet"),
        entry=lambda wc: config["models"][wc.model],
        max_new_tokens=config["generation"]["max_new_tokens"],
        cache_dir=api_cache_dir,
    script:
        "../workflow_scripts/infer_api.py"


rule validate_run:
    input:
        unpack(run_files),
    output:
        res("validated/runs/{model}/{dataset}/{condition}.ok"),
    log:
        res("logs/validate/{model}/{dataset}/{condition}.log"),
    conda:
        ENV
    params:
        require_activations=lambda wc: wc.model in HF_MODELS,
    script:
        "../workflow_scripts/validate_run.py"
