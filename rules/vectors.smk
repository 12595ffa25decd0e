# Stage 5: tool vector, refusal direction, shifts, cosines, probes and PCA; layer selection on validation.


rule vectors:
    input:
        unpack(refusal_source_vectors),
        activations=expand(res("runs/{{model}}/{{dataset}}/{condition}/activations.nc"), condition=CONDITIONS),
        prompts=res("data/{dataset}/prompts.parquet"),
        splits=res("splits/{dataset}.parquet"),
    output:
        res("vectors/{model}/{dataset}.nc"),
    log:
        res("logs/vectors/{model}/{dataset}.log"),
    benchmark:
        res("benchmarks/vectors/{model}/{dataset}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        conditions=CONDITIONS,
        exclude_last_frac=config["interventions"]["exclude_last_frac"],
        probes=config["probes"],
        seed=config["stats"]["seed"],
        n_boot=config["stats"]["n_boot"],
    script:
        "../workflow_scripts/vectors.py"
