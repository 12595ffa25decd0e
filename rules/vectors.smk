# Stage 5: tool vector, refusal direction, per-condition shifts and cosines per layer.


rule vectors:
    input:
        activations=expand(res("runs/{{model}}/{{dataset}}/{condition}/activations.nc"), condition=CONDITIONS),
        prompts=res("data/{dataset}/prompts.parquet"),
    output:
        res("vectors/{model}/{dataset}.nc"),
    log:
        res("logs/vectors/{model}/{dataset}.log"),
    benchmark:
        res("benchmarks/vectors/{model}/{dataset}.tsv")
    conda:
        ENV
    params:
        conditions=CONDITIONS,
    script:
        "../workflow_scripts/compute_vectors.py"
