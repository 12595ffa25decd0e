"""Rules infer, intervene and transfer: one (model, dataset, shard) job, one model load, many runs."""

from toolshift.analysis.interventions import expand_interventions
from toolshift.common.steps import run_step
from toolshift.inference.runner import (
    InferenceJob,
    RunOutput,
    is_condition,
    run_episodes,
    run_job,
    shard_costs,
    shard_outputs,
)


def main(smk) -> None:
    params = smk.params.job
    runs = list(smk.params.runs)
    episodes = [smk.input.episodes] if isinstance(smk.input.episodes, str) else list(smk.input.episodes)
    intervenes = not all(is_condition(run) for run in runs)  # interventions also measure their KL cost
    if "shard" in smk.output.keys():  # a shard directory: one responses file (+ states) per run
        outputs = shard_outputs(smk.output.shard, runs)
        costs = str(shard_costs(smk.output.shard)) if intervenes else None
    else:  # an unsharded job writes each run's responses.parquet (and the costs) itself
        outputs = [(responses, None) for responses in smk.output.responses]
        costs = smk.output.costs if intervenes else None
    layer = smk.params.get("layer")
    if layer is None and expand_interventions(smk.config["interventions"], smk.wildcards.dataset):
        # a condition job checks the interventions' layer against the model it loads, before generating
        layer = smk.config["interventions"]["layer"]
    vectors = {}
    if "vectors" in smk.input.keys():
        vectors[smk.wildcards.get("source", smk.wildcards.dataset)] = smk.input.vectors
    job = InferenceJob(
        model=smk.wildcards.model,
        entry=dict(params["entry"]),
        model_dir=smk.input.model,
        dataset=smk.wildcards.dataset,
        prompts=smk.input.prompts,
        results_root=params["results"],
        generation=dict(params["generation"]),
        shard=int(smk.wildcards.get("shard", 0)),
        n_shards=int(params["n_shards"]),
        runs=[
            RunOutput(name=run, episodes=run_episodes(run, episodes), responses=responses, activations=states)
            for run, (responses, states) in zip(runs, outputs, strict=True)
        ],
        vectors=vectors,
        layer=layer,
        free=dict(smk.params.free) if smk.params.get("free") else None,
        splits=smk.input.get("splits"),
        intervention_splits=list(smk.params.get("splits") or ["validation", "test"]),
        costs=costs,
        cost=dict(smk.params.get("cost") or {}),
    )
    run_job(job)


run_step(snakemake, main)
