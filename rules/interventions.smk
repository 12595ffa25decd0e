# Stage 6: activation interventions (add, subtract, ablate, norm-matched random), sharded like inference.


rule intervene_shard:
    input:
        model=res("models/{model}"),
        episodes=intervention_episodes,
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
        vectors=res("vectors/{model}/{dataset}.nc"),
    output:
        responses=res("interventions/{model}/{dataset}/{intervention}/shards/{shard}.parquet"),
    log:
        res("logs/intervene/{model}/{dataset}/{intervention}/{shard}.log"),
    benchmark:
        res("benchmarks/intervene/{model}/{dataset}/{intervention}/{shard}.tsv")
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
        layer=config["interventions"]["layer"],
    script:
        "../workflow_scripts/infer.py"


rule merge_intervention:
    input:
        responses=expand(
            res("interventions/{{model}}/{{dataset}}/{{intervention}}/shards/{shard}.parquet"),
            shard=SHARDS,
        ),
    output:
        responses=res("interventions/{model}/{dataset}/{intervention}/responses.parquet"),
    log:
        res("logs/merge/{model}/{dataset}/{intervention}.log"),
    benchmark:
        res("benchmarks/merge/{model}/{dataset}/{intervention}.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/merge_shards.py"
