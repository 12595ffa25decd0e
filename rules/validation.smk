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
        data_mirror=config["data_mirror"],
        data_cache=config["data_cache"],
        data_lock=config["data_lock"],
        every=config["validation"]["figstep_every"],
    script:
        "../workflow_scripts/validate_figstep.py"
