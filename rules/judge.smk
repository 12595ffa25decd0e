# Stage 7: judge every response (conditions and interventions) of every model on a dataset with one judge:
# a model judge is loaded once per (judge, dataset). Then how far the judges agree with each other and
# with human labels.


rule prepare_judge:
    output:
        directory(res("models/judges/{judge}")),
    log:
        res("logs/models/judges/{judge}.log"),
    benchmark:
        res("benchmarks/models/judges/{judge}.tsv")
    wildcard_constraints:
        judge=one_of(MODEL_JUDGES),
    priority: CRITICAL_PATH
    conda:
        ENV
    params:
        entry=judge_entry,
    script:
        "../workflow_scripts/prepare_judge.py"


rule judge:
    input:
        unpack(judge_inputs),
    output:
        expand(res("judged/{{judge}}/{model}/{{dataset}}.parquet"), model=MODELS),
    log:
        res("logs/judge/{judge}/{dataset}.log"),
    benchmark:
        res("benchmarks/judge/{judge}/{dataset}.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    resources:
        gpu=judge_gpus,
    params:
        options=judge_options,
        models=MODELS,
        runs=judged_runs,
    script:
        "../workflow_scripts/judge.py"


rule judge_agreement:
    input:
        judged=expand(
            res("judged/{judge}/{model}/{dataset}.parquet"), judge=JUDGES, model=MODELS, dataset=DATASETS
        ),
        labels=[config["human_labels"]["path"]] if config["human_labels"]["path"] else [],
        judge_models=[res(f"models/judges/{j}") for j in MODEL_JUDGES],
    output:
        pairwise=res("tables/judge_agreement.csv"),
        human=res("tables/judge_human_agreement.csv"),
        asr_by_judge=res("tables/asr_by_judge.csv"),
    log:
        res("logs/stats/judge_agreement.log"),
    benchmark:
        res("benchmarks/stats/judge_agreement.tsv")
    conda:
        ENV
    params:
        labels=config["human_labels"],
        judges=JUDGES,
        options={j: judge_options_for(j, None) for j in JUDGES},
    script:
        "../workflow_scripts/judge_agreement.py"
