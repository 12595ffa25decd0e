# Stage 6: activation interventions (add, subtract, ablate, norm-matched random), sharded like inference.


rule intervene_shard:
    input:
        model=res("models/{model}"),
        episodes=intervention_episodes,
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
        vectors=intervention_vectors,
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


# The KL cost of every intervention on harmless test prompts (GPU).
rule intervention_cost:
    input:
        model=res("models/{model}"),
        direct=res("episodes/{dataset}/direct.jsonl"),
        tool=res("episodes/{dataset}/tool.jsonl"),
        prompts=res("data/{dataset}/prompts.parquet"),
        splits=res("splits/{dataset}.parquet"),
        images=res("episodes/{dataset}/images"),
        attack_images=res("data/{dataset}/images"),
        vectors=lambda wc: [res(f"vectors/{wc.model}/{d}.nc") for d in cost_vector_datasets(wc.dataset)],
    output:
        res("costs/{model}/{dataset}.parquet"),
    log:
        res("logs/costs/{model}/{dataset}.log"),
    benchmark:
        res("benchmarks/costs/{model}/{dataset}.tsv")
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=lambda wc: max(config["generation"]["gpu_mem_mb"], 2000),
    params:
        results=lambda wc, input: results_root_of(input.prompts, "data/*/prompts.parquet"),
        entry=lambda wc: config["models"][wc.model],
        generation=config["generation"],
        layer=config["interventions"]["layer"],
        interventions=lambda wc: interventions_of(wc.dataset),
        vector_datasets=lambda wc: cost_vector_datasets(wc.dataset),
        cost=config["cost"],
    script:
        "../workflow_scripts/intervention_cost.py"
