# Result bundles (docs/bundles.md). `snakemake bundle` (`make bundle`) packs the generation side of a run into
# one RO-Crate zip with a checked manifest; `--config bundle=PATH_OR_URL` imports one instead of generating, so
# that only the rules after generation run: judges, vectors, tables, figures and the book.
from toolshift.bundles.layout import GenerationSide

# The generation side of the DAG: every rule up to and including generation, with the wildcards of each of
# its jobs this config runs. A bundle carries those jobs' declared outputs that the rules after generation
# read; an import puts them in place instead of running these rules. A rule that joins the generation side
# (another inference backend, another merge) is added here; its outputs then travel with every bundle.
GENERATION_JOBS = {
    "prompts": [{"dataset": d} for d in DATASETS],
    "splits": [{"dataset": d} for d in DATASETS],
    "episodes": [{"dataset": d} for d in DATASETS],
    "merge_runs": [{"model": m, "dataset": d} for m in HF_MODELS for d in DATASETS],
    "infer_api": [
        {"model": m, "dataset": d, "condition": c} for m in API_MODELS for d in DATASETS for c in CONDITIONS
    ],
    "merge_interventions": [{"model": m, "dataset": d} for m in HF_MODELS for d in DATASETS],
    "transfer": [
        {"model": m, "dataset": d, "source": s}
        for m in HF_MODELS
        for d in DATASETS
        for s in transfer_sources(config["interventions"], d)
    ],
    "vectors": [{"model": m, "dataset": d} for m in HF_MODELS for d in DATASETS],
    "model": [{"model": m} for m in PLANTED_MODELS],  # the model folders a rule after generation reads
}
# Jobs whose outputs only their merge rules read (the shards): not in a bundle; their benchmark files are, as
# what the generation cost (the GPU seconds a re-run needs).
SHARD_JOBS = {
    "infer": [{"model": m, "dataset": d, "shard": s} for m in HF_MODELS for d in DATASETS for s in SHARDS],
    "intervene": [
        {"model": m, "dataset": d, "shard": s} for m in HF_MODELS for d in DATASETS for s in SHARDS
    ],
    "model": [{"model": m} for m in HF_MODELS],
}
RECOMPUTED_ON_IMPORT = ("vectors",)
"""Generation-side rules an import reruns from the bundle's files (vectors from the activations) unless the
bundle stores activations as float16: then it imports the run's own vectors, which the interventions used."""


BENCHMARK_JOBS = {**SHARD_JOBS, **{k: v for k, v in GENERATION_JOBS.items() if k != "model"}}


GENERATION = GenerationSide(workflow, GENERATION_JOBS, BENCHMARK_JOBS, RESULTS)


rule bundle:
    input:
        lambda wildcards: [res(rel) for rel, _, _ in GENERATION.files],
    output:
        res("bundle/toolshift-bundle.zip"),
    log:
        res("logs/bundle/bundle.log"),
    benchmark:
        res("benchmarks/bundle/bundle.tsv")
    conda:
        ENV
    params:
        files=lambda wildcards: [(rel, step) for rel, _, step in GENERATION.files],
        float16=config["bundle_float16"],
        benchmarks=lambda wildcards: GENERATION.benchmarks(),
        gpu_benchmarks=lambda wildcards: GENERATION.benchmarks(gpu_only=True),
        data_lock=config["data_lock"],
        datasets=DATASETS,
        repo=workflow.basedir,
    script:
        "../workflow_scripts/bundle.py"


if config["bundle"]:
    # imported only here: reading a bundle needs pooch and xarray, which a plain DAG build does without
    from toolshift.bundles.importer import check_holds, open_for_import, stage_for_import

    try:
        BUNDLE, BUNDLE_MISMATCH = open_for_import(config)
        IMPORTS_VECTORS = BUNDLE.manifest["activations_dtype"] == "float16"
        IMPORTED = [
            (rel, is_dir)
            for rel, is_dir, step in GENERATION.files
            if step not in RECOMPUTED_ON_IMPORT or IMPORTS_VECTORS
        ]
        check_holds(BUNDLE, IMPORTED, config["bundle"])
    except ToolshiftError as exc:
        raise WorkflowError(str(exc)) from None
    if BUNDLE_MISMATCH:
        logger.warning(
            f"bundle {config['bundle']}: importing it anyway (bundle_accept_mismatch): {BUNDLE_MISMATCH}"
        )

    # before the first job: check the whole bundle and unpack it into its staging folder
    BEFORE_FIRST_JOB.append(lambda: stage_for_import(BUNDLE, RESULTS, config["bundle_sha256"]))

    # The import puts the generation side's files in place; Snakemake then takes them from this rule rather
    # than from the rules that would generate them, and never schedules those.
    rule import_bundle:
        output:
            [directory(res(rel)) if is_dir else res(rel) for rel, is_dir in IMPORTED],
            record=BUNDLE_RECORD[0],
        log:
            res("logs/bundle/import.log"),
        benchmark:
            res("benchmarks/bundle/import.tsv")
        priority: INFERENCE_FIRST
        conda:
            ENV
        params:
            bundle=BUNDLE.manifest_sha256,
            imported=IMPORTED,
            recomputed=[] if IMPORTS_VECTORS else list(RECOMPUTED_ON_IMPORT),
        script:
            "../workflow_scripts/import_bundle.py"

    for _name in GENERATION_JOBS:
        if _name in GENERATION.rules():
            workflow.ruleorder("import_bundle", _name)
