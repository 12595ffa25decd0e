# Stage 8: ASR (Wilson CIs, Bonett-Price and paired bootstrap CIs, exact McNemar, Holm) on the test
# split; headline; the claims' paired contrasts; analysis tables.


rule asr_table:
    input:
        judged=expand(
            res("judged/{judge}/{model}/{dataset}.parquet"), judge=JUDGES, model=MODELS, dataset=DATASETS
        ),
        splits=expand(res("splits/{dataset}.parquet"), dataset=DATASETS),
    output:
        asr=res("tables/asr.csv"),
        asr_validation=res("tables/asr_validation.csv"),
        asr_by_category=res("tables/asr_by_category.csv"),
        over_refusal=res("tables/over_refusal.csv"),
        over_refusal_validation=res("tables/over_refusal_validation.csv"),
        headline=res("tables/headline.csv"),
        free_tool_use=res("tables/free_tool_use.csv"),
        contrasts=res("tables/contrasts.csv"),
        asr_by_scale=res("tables/asr_by_scale.csv"),
        tool_gap=res("tables/tool_gap.csv"),
        token_counts=res("tables/token_counts.csv"),
        tokens_model=res("tables/tokens_model.csv"),
    log:
        res("logs/stats/asr.log"),
    benchmark:
        res("benchmarks/stats/asr.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    params:
        stats=config["stats"],
        judge=config["headline_judge"],
        interventions=config["interventions"],
        conditions=CONDITIONS,
        families={name: entry.get("family", "") for name, entry in config["models"].items()},
        keyword_list=config["keyword_list"],
    script:
        "../workflow_scripts/asr_table.py"


rule analysis_tables:
    input:
        asr=res("tables/asr.csv"),
        asr_validation=res("tables/asr_validation.csv"),
        over_refusal_validation=res("tables/over_refusal_validation.csv"),
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=HF_MODELS, dataset=DATASETS),
        costs=expand(res("costs/{model}/{dataset}.parquet"), model=HF_MODELS, dataset=DATASETS),
    output:
        selection=res("tables/selection.csv"),
        transfer=res("tables/transfer.csv"),
        cost=res("tables/intervention_cost.csv"),
        representation=res("tables/representation.csv"),
        relative_vectors=res("tables/relative_vectors.csv"),
    log:
        res("logs/stats/analysis.log"),
    benchmark:
        res("benchmarks/stats/analysis.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    params:
        stats=config["stats"],
        judge=config["headline_judge"],
        selection=config["selection"],
        conditions=CONDITIONS,
    script:
        "../workflow_scripts/analysis_tables.py"


rule claims_table:
    input:
        contrasts=res("tables/contrasts.csv"),
        tokens_model=res("tables/tokens_model.csv"),
    output:
        res("tables/claims.csv"),
    log:
        res("logs/stats/claims.log"),
    benchmark:
        res("benchmarks/stats/claims.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    script:
        "../workflow_scripts/claims_table.py"
