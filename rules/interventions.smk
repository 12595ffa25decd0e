# Stage 6: activation interventions (add, subtract, ablate, norm-matched random), sharded like inference.


def intervention_episodes(wildcards):
    """The episodes an intervention runs on: its base condition (direct for add/random, tool otherwise)."""
    from toolshift.interventions import parse_intervention_id

    base = parse_intervention_id(wildcards.intervention).base_condition
    return res(f"episodes/{wildcards.dataset}/{base}.jsonl")


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
        results=RESULTS,
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
