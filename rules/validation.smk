# Stage 9b: validation of the pipeline itself: planted-truth recovery and FigStep pixel fidelity.


rule validate_planted:
    output:
        res("tables/validation_planted.csv"),
    log:
        res("logs/validation/planted.log"),
    benchmark:
        res("benchmarks/validation/planted.tsv")
    conda:
        ENV
    params:
        seed=config["validation"]["planted_seed"],
    script:
        "../workflow_scripts/validate_planted.py"


rule validate_figstep:
    output:
        res("tables/validation_figstep.csv"),
    log:
        res("logs/validation/figstep.log"),
    benchmark:
        res("benchmarks/validation/figstep.tsv")
    conda:
        ENV
    params:
        results=results_above_table,
        data_mirror=config["data_mirror"],
        data_cache=config["data_cache"],
        data_lock=config["data_lock"],
        every=config["validation"]["figstep_every"],
    script:
        "../workflow_scripts/validate_figstep.py"


rule validate_planted_model:
    input:
        asr=res("tables/asr.csv"),
        contrasts=res("tables/contrasts.csv"),
        claims=res("tables/claims.csv"),
        models=expand(res("models/{model}"), model=PLANTED_MODELS),
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=PLANTED_MODELS, dataset=DATASETS),
    output:
        recovery=res("tables/validation_planted_model.csv"),
        worlds=res("tables/validation_worlds.csv"),
    log:
        res("logs/validation/planted_model.log"),
    benchmark:
        res("benchmarks/validation/planted_model.tsv")
    conda:
        ENV
    params:
        models=PLANTED_MODELS,
        negative_controls=RANDOM_FIXTURES,
        datasets=DATASETS,
        judge=config["headline_judge"],
        worlds_must_pass=config["validation"]["worlds_must_pass"],
    script:
        "../workflow_scripts/validate_planted_model.py"
