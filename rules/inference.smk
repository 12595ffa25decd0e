# Stage 4: generation with residual-stream capture. One job per (model, dataset, shard) loads the model
# once and generates every condition of its prompts; a crash loses one shard.


rule infer:
    input:
        model=res("models/{model}"),
        episodes=expand(res("episodes/{{dataset}}/{condition}.jsonl"), condition=CONDITIONS),
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
    output:
        shard=directory(res("runs/{model}/{dataset}/shards/{shard}")),
    log:
        res("logs/infer/{model}/{dataset}/{shard}.log"),
    benchmark:
        res("benchmarks/infer/{model}/{dataset}/{shard}.tsv")
    wildcard_constraints:
        model=one_of(HF_MODELS),
    priority: INFERENCE_FIRST
    conda:
        INFERENCE_ENV
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
    params:
        job=inference_job_params,
        runs=CONDITIONS,
        free=config["free"],
    script:
        "../workflow_scripts/infer.py"


rule merge_runs:
    input:
        shards=expand(res("runs/{{model}}/{{dataset}}/shards/{shard}"), shard=SHARDS),
    output:
        responses=expand(
            res("runs/{{model}}/{{dataset}}/{condition}/responses.parquet"), condition=CONDITIONS
        ),
        activations=expand(res("runs/{{model}}/{{dataset}}/{condition}/activations.nc"), condition=CONDITIONS),
    log:
        res("logs/merge/{model}/{dataset}/runs.log"),
    benchmark:
        res("benchmarks/merge/{model}/{dataset}/runs.tsv")
    wildcard_constraints:
        model=one_of(HF_MODELS),
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        runs=CONDITIONS,
    script:
        "../workflow_scripts/merge_runs.py"


# The OpenAI-compatible backend: the same responses.parquet, no activations.nc (docs/models.md, "Replace a rule").
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
        results=results_above_prompts,
        entry=model_entry,
        max_new_tokens=config["generation"]["max_new_tokens"],
        cache_dir=api_cache_dir,
    script:
        "../workflow_scripts/infer_api.py"


rule validate_runs:
    input:
        unpack(run_files),
    output:
        res("validated/runs/{model}/{dataset}.ok"),
    log:
        res("logs/validate/{model}/{dataset}.log"),
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        conditions=CONDITIONS,
        require_activations=has_activations,
    script:
        "../workflow_scripts/validate_runs.py"
