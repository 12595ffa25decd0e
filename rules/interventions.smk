# Stage 6: activation interventions (add, subtract, ablate, norm-matched random), sharded like inference:
# one job per (model, dataset, shard) loads the model once, runs every intervention on its prompts and
# measures their KL cost on its harmless validation and test prompts with the same load; transfer runs (another dataset's
# tool vector) get one job per (model, dataset, source). merge_interventions writes the contract files.


if COMMON_INTERVENTIONS:  # none when the config turns every intervention off

    rule intervene:
        input:
            model=res("models/{model}"),
            episodes=intervention_base_episodes,
            prompts=res("data/{dataset}/prompts.parquet"),
            images=res("episodes/{dataset}/images"),
            attack_images=res("data/{dataset}/images"),
            vectors=res("vectors/{model}/{dataset}.nc"),
            splits=res("splits/{dataset}.parquet"),
        output:
            shard=directory(res("interventions/{model}/{dataset}/shards/{shard}")),
        log:
            res("logs/intervene/{model}/{dataset}/{shard}.log"),
        benchmark:
            res("benchmarks/intervene/{model}/{dataset}/{shard}.tsv")
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
            runs=COMMON_INTERVENTIONS,
            layer=config["interventions"]["layer"],
            splits=config["interventions"]["splits"],
            cost=config["cost"],
        script:
            "../workflow_scripts/infer.py"


rule merge_interventions:
    input:
        shards=expand(
            res("interventions/{{model}}/{{dataset}}/shards/{shard}"),
            shard=SHARDS if COMMON_INTERVENTIONS else [],
        ),
        transfer_costs=transfer_cost_files,
    output:
        responses=expand(
            res("interventions/{{model}}/{{dataset}}/{intervention}/responses.parquet"),
            intervention=COMMON_INTERVENTIONS,
        ),
        costs=res("costs/{model}/{dataset}.parquet"),
    log:
        res("logs/merge/{model}/{dataset}/interventions.log"),
    benchmark:
        res("benchmarks/merge/{model}/{dataset}/interventions.tsv")
    wildcard_constraints:
        model=one_of(HF_MODELS),
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        runs=COMMON_INTERVENTIONS,
    script:
        "../workflow_scripts/merge_runs.py"


if TRANSFER_RUNS:  # transfer runs exist only with interventions.transfer.pairs

    # One job per (model, target dataset, source dataset), unsharded: a few direct runs, no merge.
    rule transfer:
        input:
            model=res("models/{model}"),
            episodes=res("episodes/{dataset}/direct.jsonl"),
            prompts=res("data/{dataset}/prompts.parquet"),
            images=res("episodes/{dataset}/images"),
            attack_images=res("data/{dataset}/images"),
            vectors=res("vectors/{model}/{source}.nc"),
            splits=res("splits/{dataset}.parquet"),
        output:
            responses=expand(
                res("interventions/{{model}}/{{dataset}}/{run}/responses.parquet"), run=TRANSFER_RUNS
            ),
            costs=res("costs/{model}/{dataset}/transfer/{source}.parquet"),
        log:
            res("logs/transfer/{model}/{dataset}/{source}.log"),
        benchmark:
            res("benchmarks/transfer/{model}/{dataset}/{source}.tsv")
        wildcard_constraints:
            model=one_of(HF_MODELS),
        conda:
            INFERENCE_ENV
        resources:
            gpu=1,
            mem_mb=gpu_job_mem_mb,
        params:
            job=transfer_job_params,
            runs=transfer_run_ids,
            layer=config["interventions"]["layer"],
            splits=config["interventions"]["splits"],
            cost=config["cost"],
        script:
            "../workflow_scripts/infer.py"
