# Stage 7: judge every response of one model on one dataset (conditions and interventions).


rule judge:
    input:
        runs=lambda wc: run_outputs(wc.model, wc.dataset),
        validated=lambda wc: validated_runs(wc.model, wc.dataset),
    output:
        res("judged/{judge}/{model}/{dataset}.parquet"),
    log:
        res("logs/judge/{judge}/{model}/{dataset}.log"),
    benchmark:
        res("benchmarks/judge/{judge}/{model}/{dataset}.tsv")
    conda:
        ENV
    script:
        "../workflow_scripts/judge.py"
