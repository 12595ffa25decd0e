"""One inference job end to end: load the model once, generate every run of the job, write the contracts.

A job is a (model, dataset, shard) and either every condition (rule `infer`, residual capture on) or a set of
interventions (rules `intervene` and `transfer`, a hook per run, no capture). The model is loaded once into
the job's engine (`generation.engine`, or the model entry's `engine`: `hf` or `vllm`,
toolshift.models.engines) and serves all its runs; each run still writes its own shard files, which
`merge_runs` concatenates into `runs/…/responses.parquet` + `activations.nc` and
`interventions/…/responses.parquet`. An intervention the engine cannot apply exactly falls back to the `hf`
engine in the same job; the `engine` column of every responses table says which engine ran it. An intervention
job also writes the KL cost of its interventions on its harmless validation and test prompts
(`InferenceJob.costs`, toolshift.inference.intervention_cost) with the same load; the cost reads logits, so
under `vllm` the job closes the vLLM engine first and loads the model into `hf` for it.

A job whose engine is `vllm` while vLLM cannot be imported here is run, whole, by the vLLM environment's
interpreter (`python -m toolshift.inference.runner JOB.json`, toolshift.models.engines.environment), its
output streamed into this job's log. Writing goes through atomic helpers, so a killed job leaves nothing that
Snakemake would take as complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolshift import REPO_ROOT, __version__
from toolshift.analysis.interventions import (
    parse_intervention_id,
    resolve_layer,
    vectors_dataset,
)
from toolshift.analysis.steering import residual_edit
from toolshift.contracts import RESPONSE_COLUMNS, read_episodes, read_prompts, read_responses, write_parquet
from toolshift.episodes.build import FREE_CONDITION
from toolshift.errors import ConfigError, ContractError, ToolshiftError
from toolshift.models.activations import concat_shards, read_activations, to_dataset, write_activations
from toolshift.models.engines.base import Engine, RunRequest, RunResult
from toolshift.models.engines.loader import engine_name, open_engine
from toolshift.models.generation import shard as shard_of
from toolshift.models.gpus import job_device
from toolshift.processes import child_dies_with_parent

log = logging.getLogger(__name__)

PROMPT_FIELDS: tuple[str, ...] = ("prompt_id", "dataset", "category", "harmful")
LOADED_LINE = "%s loaded once into the %s engine for %d runs of %s, shard %d"
"""What a job logs when its model is loaded (tests count it)."""


def attach_prompt_fields(
    responses: pd.DataFrame,
    prompts: pd.DataFrame,
    model: str,
    intervention: str,
    engine: str = "hf",
    episodes: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Complete a generation table into the responses contract (dataset, category, harmful, model, ...;
    `zoom_scale` from the `episodes` the table was generated from, NaN without them)."""
    missing = set(responses["prompt_id"]) - set(prompts["prompt_id"])
    if missing:
        raise ContractError(f"episodes name prompt_id {sorted(missing)[0]!r} that prompts.parquet lacks")
    out = responses.merge(prompts[list(PROMPT_FIELDS)], on="prompt_id", how="left", validate="one_to_one")
    out["model"] = model
    out["intervention"] = intervention
    out["engine"] = engine
    scales = {ep["prompt_id"]: (ep.get("meta") or {}).get("zoom_scale") for ep in episodes or []}
    out["zoom_scale"] = [
        float(s) if s is not None else float("nan") for s in map(scales.get, out["prompt_id"])
    ]
    extra = [c for c in out.columns if c not in RESPONSE_COLUMNS]
    return out[list(RESPONSE_COLUMNS) + extra]


# --------------------------------------------------------------------------- the job


@dataclass
class RunOutput:
    """One run of a job: its name (a condition or an intervention id), episodes file and output files."""

    name: str
    episodes: str
    responses: str
    activations: str | None = None


@dataclass
class InferenceJob:
    """Everything one inference job needs; JSON-serialisable, so another interpreter can run it."""

    model: str
    entry: dict[str, Any]
    model_dir: str
    dataset: str
    prompts: str
    results_root: str
    generation: dict[str, Any]
    shard: int
    n_shards: int
    runs: list[RunOutput]
    vectors: dict[str, str] = field(default_factory=dict)
    """Interventions: dataset name -> its vectors file (the job's own dataset, and transfer sources)."""
    layer: int | str | None = None
    free: dict[str, Any] | None = None
    splits: str | None = None
    """Interventions: the splits file; their runs generate on the prompts of `intervention_splits` only."""
    intervention_splits: list[str] = field(default_factory=lambda: ["validation", "test"])
    costs: str | None = None
    """Interventions: where to write the KL cost rows of the job's interventions (None: no costs)."""
    cost: dict[str, Any] = field(default_factory=dict)
    """The config's `cost` settings (prompt_positions, n_generated) for `costs`."""

    def to_json(self) -> str:
        """The job as a JSON document."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InferenceJob:
        """The job of a JSON document written by `to_json`."""
        data = json.loads(text)
        data["runs"] = [RunOutput(**run) for run in data["runs"]]
        return cls(**data)


def run_episodes(run: str, episode_files: Sequence[str]) -> str:
    """The episodes file a run reads among `episode_files` (`{condition}.jsonl`): a condition's own, an
    intervention's base condition's."""
    condition = run if is_condition(run) else parse_intervention_id(run).base_condition
    for path in episode_files:
        if Path(path).name == f"{condition}.jsonl":
            return str(path)
    raise ConfigError(
        f"run {run!r} reads {condition}.jsonl, which is not among its inputs {list(episode_files)}"
    )


def run_job(job: InferenceJob) -> None:
    """Run `job` here, or in the vLLM environment if its engine is `vllm` and vLLM is not importable here."""
    from toolshift.models.engines.environment import vllm_importable, vllm_python

    engine = engine_name(job.entry, job.generation)
    if engine == "vllm" and not vllm_importable():
        run_in_interpreter(job, vllm_python(job.generation.get("vllm_python")))
    else:
        run_job_here(job)


def run_in_interpreter(job: InferenceJob, python: str) -> None:
    """Run `job` with another Python interpreter (`python -m toolshift.inference.runner JOB.json`); its output
    lines
    go to this process's log; a failure ends with its last line."""
    fd, path = tempfile.mkstemp(prefix="toolshift-job-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(job.to_json())
    repo = str(REPO_ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    log.info("%s: running the job in %s", job.model, python)
    last = ""
    try:
        with subprocess.Popen(
            [python, "-m", "toolshift.inference.runner", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=child_dies_with_parent,  # the vLLM process goes with a killed job
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    last = line
                    log.info("[%s] %s", Path(python).parent.parent.name, line)
            status = proc.wait()
    finally:
        os.unlink(path)
    if status != 0:
        reason = last.removeprefix("toolshift error: ")
        raise ToolshiftError(f"inference job of {job.model}/{job.dataset} failed in {python}: {reason}")


def run_job_here(job: InferenceJob) -> None:
    """Open the job's engine once and generate every run of the job (module docstring)."""
    prompts = read_prompts(job.prompts)
    name = engine_name(job.entry, job.generation)
    device = job_device(job.generation.get("device", "auto"))
    engine = open_engine(name, job.model_dir, job.entry, job.generation, device=device)
    log.info(LOADED_LINE, job.model, engine.name, len(job.runs), job.dataset, job.shard)
    fallback: Engine | None = None
    try:
        if isinstance(job.layer, int) and not isinstance(job.layer, bool):  # before any generation
            try:
                resolve_layer(job.layer, engine.n_layers)
            except ConfigError as exc:
                raise ConfigError(f"model {job.model} ({job.model_dir}): {exc}") from None
        files: dict[str, Any] = {}
        plans = [_plan(job, run, engine, files) for run in job.runs]
        free = [p for p in plans if p.free]
        single = [p for p in plans if not p.free]
        native = [p for p in single if engine.supports(p.request.intervention)]
        others = [p for p in single if not engine.supports(p.request.intervention)]
        results: dict[str, RunResult] = {}
        max_new = int(job.generation["max_new_tokens"])
        if native:
            done = engine.generate([p.request for p in native], job.results_root, max_new_tokens=max_new)
            results.update({p.run.name: r for p, r in zip(native, done, strict=True)})
        if others:
            log.info(
                "engine %s cannot apply %s: running them on hf", engine.name, [p.run.name for p in others]
            )
            fallback = open_engine("hf", job.model_dir, job.entry, job.generation, device=device)
            done = fallback.generate([p.request for p in others], job.results_root, max_new_tokens=max_new)
            results.update({p.run.name: r for p, r in zip(others, done, strict=True)})
        for plan in free:
            results[plan.run.name] = _run_free(job, plan, engine)
        for plan in plans:
            _write_run(job, plan, results[plan.run.name], prompts, engine)
        if job.costs is not None:
            if engine.name != "hf" and fallback is None:
                engine.close()  # free the accelerator for the hf load the logits need
                fallback = open_engine("hf", job.model_dir, job.entry, job.generation, device=device)
            hf = engine if engine.name == "hf" else fallback
            _write_costs(job, [p for p in plans if not p.free], prompts, hf, files)
    finally:
        engine.close()
        if fallback is not None:
            fallback.close()


@dataclass
class _Plan:
    run: RunOutput
    request: RunRequest
    free: bool
    intervention_id: str
    shard_episodes: list[dict[str, Any]] = field(default_factory=list)
    """The run's episodes of this shard before the split filter (the KL cost picks its own prompts)."""
    cost_layer: int = -1
    """The layer a cost row records: the hook's, -1 for `ablate`/`ablate_refusal` (every layer)."""


def _read_once(files: dict[str, Any], path: str, read: Any) -> Any:
    """`read(path)`, read once per job: the runs of a job share episodes, splits and vectors files."""
    if path not in files:
        files[path] = read(path)
    return files[path]


def _plan(job: InferenceJob, run: RunOutput, engine: Engine, files: dict[str, Any]) -> _Plan:
    """The engine request of one run: its shard of episodes, capture for conditions, the hook otherwise.
    `files` holds the job's files already read (`_read_once`)."""
    episodes = shard_of(_read_once(files, run.episodes, read_episodes), job.n_shards, job.shard)
    shard_episodes = episodes
    capture = is_condition(run.name)
    if capture and run.activations is None:
        raise ConfigError(f"run {run.name!r}: a condition run needs an activations output")
    free = bool(episodes) and episodes[0]["condition"] == FREE_CONDITION
    hook = None
    intervention_id = "none"
    cost_layer = -1
    if not capture:
        if job.splits is not None:
            from toolshift.datasets.splits import read_splits, split_of

            splits = _read_once(files, job.splits, read_splits)
            labels = split_of(splits, [str(e["prompt_id"]) for e in episodes], job.dataset)
            episodes = [e for e, s in zip(episodes, labels, strict=True) if s in job.intervention_splits]
        spec = parse_intervention_id(run.name)
        source = vectors_dataset(run.name, job.dataset)
        if source not in job.vectors:
            raise ContractError(f"intervention {run.name!r} needs the vectors file of dataset {source!r}")
        from toolshift.analysis.vectors import read_vectors

        vectors = _read_once(files, job.vectors[source], read_vectors)
        at_layer = resolve_layer(job.layer if job.layer is not None else "auto", engine.n_layers, vectors)
        hook = residual_edit(spec, vectors, at_layer)
        intervention_id = run.name
        cost_layer = -1 if hook.layer is None else at_layer  # ablations act at every layer
        log.info("intervention %s at layer %d", run.name, at_layer)
    log.info(
        "%s/%s: %s, %d episodes in shard %d/%d",
        job.model,
        job.dataset,
        run.name,
        len(episodes),
        job.shard,
        job.n_shards,
    )
    request = RunRequest(name=run.name, episodes=episodes, capture=capture, intervention=hook)
    return _Plan(
        run=run,
        request=request,
        free=free,
        intervention_id=intervention_id,
        shard_episodes=shard_episodes,
        cost_layer=cost_layer,
    )


def _write_costs(
    job: InferenceJob, plans: Sequence[_Plan], prompts: pd.DataFrame, engine: Engine, files: dict[str, Any]
) -> None:
    """The KL cost of the job's interventions on its harmless prompts of the splits it generates on
    (validation and test: toolshift.inference.intervention_cost), on the job's loaded hf model, into
    `job.costs`."""
    from toolshift.datasets.splits import read_splits
    from toolshift.inference.intervention_cost import cost_rows

    interventions = [p for p in plans if p.request.intervention is not None]
    episodes: dict[str, list[dict[str, Any]]] = {}
    for plan in interventions:
        episodes.setdefault(parse_intervention_id(plan.run.name).base_condition, plan.shard_episodes)
    table = cost_rows(
        engine.loaded,  # type: ignore[attr-defined]
        model_name=job.model,
        dataset=job.dataset,
        hooks={
            p.run.name: (
                parse_intervention_id(p.run.name).base_condition,
                p.request.intervention,
                p.cost_layer,
            )
            for p in interventions
        },
        episodes=episodes,
        harmless=set(prompts.loc[~prompts["harmful"].astype(bool), "prompt_id"].astype(str)),
        splits=_read_once(files, job.splits, read_splits) if job.splits is not None else None,
        results_root=job.results_root,
        batch_size=int(job.generation.get("batch_size", 8)),
        cost_splits=tuple(job.intervention_splits),
        **{k: int(v) for k, v in job.cost.items() if k in ("prompt_positions", "n_generated")},
    )
    write_parquet(table, job.costs)


def _run_free(job: InferenceJob, plan: _Plan, engine: Engine) -> RunResult:
    """The `free` condition: the bounded tool loop (toolshift.inference.free_loop) on the job's engine. Its
    crops
    are written beside the run, under `runs/{model}/{dataset}/free/images/`."""
    from toolshift.inference.free_loop import run_free

    free = job.free or {}
    run_dir = Path(plan.run.responses).resolve().parent.parent
    table, states = run_free(
        engine,
        plan.request.episodes,
        job.results_root,
        images_dir=str(run_dir.relative_to(Path(job.results_root).resolve()) / "images"),
        max_turns=free.get("max_turns", 4),
        max_calls_per_turn=free.get("max_calls_per_turn", 4),
        max_new_tokens=free.get("max_new_tokens") or job.generation["max_new_tokens"],
        capture=plan.request.capture,
        intervention=plan.request.intervention,
    )
    return RunResult(table=table, states=states, engine=engine.name)


def _write_run(
    job: InferenceJob, plan: _Plan, result: RunResult, prompts: pd.DataFrame, engine: Engine
) -> None:
    table = attach_prompt_fields(
        result.table, prompts, job.model, plan.intervention_id, result.engine, plan.request.episodes
    )
    if plan.run.activations is not None:
        if result.states is None:
            raise ContractError(f"{plan.run.name}: the engine captured no states")
        attrs = {
            "model": job.model,
            "revision": job.entry.get("revision") or "fixture",
            "condition": plan.run.name,
            "position": "first_turn_last_prompt_token" if plan.free else "last_prompt_token",
            "dtype": str(np.asarray(result.states).dtype),
            "toolshift_version": __version__,
            "engine": result.engine,
        }
        ids = list(result.table["prompt_id"])
        write_activations(to_dataset(result.states, ids, attrs), plan.run.activations)
    write_parquet(table, plan.run.responses)


# --------------------------------------------------------------------------- merging shards


def merge_shards(
    response_paths: list[Path],
    responses_out: Path,
    activation_paths: list[Path] | None = None,
    activations_out: Path | None = None,
) -> None:
    """Concatenate shard files into the run's responses.parquet (and activations.nc)."""
    table = pd.concat([read_responses(p) for p in response_paths], ignore_index=True)
    if table["prompt_id"].duplicated().any():
        raise ContractError(f"{responses_out}: shards overlap (duplicate prompt_id)")
    if activations_out is not None:
        merged = concat_shards([read_activations(p) for p in activation_paths or []])
        write_activations(merged, activations_out)
    write_parquet(table, responses_out)


def is_condition(run: str) -> bool:
    """Whether a run name is a condition (its runs capture activations) rather than an intervention id."""
    from toolshift import is_controlled_condition

    return run == FREE_CONDITION or is_controlled_condition(run)


def shard_outputs(shard_dir: str | os.PathLike[str], runs: Sequence[str]) -> list[tuple[str, str | None]]:
    """The files a job writes into its shard directory, per run: `{run}.parquet`, and `{run}.nc` for a
    condition (interventions capture nothing)."""
    folder = Path(shard_dir)
    return [
        (str(folder / f"{run}.parquet"), str(folder / f"{run}.nc") if is_condition(run) else None)
        for run in runs
    ]


COSTS_FILE = "costs.parquet"
"""The KL cost rows an intervention job writes into its shard directory."""


def shard_costs(shard_dir: str | os.PathLike[str]) -> Path:
    """The costs file of an intervention shard directory."""
    return Path(shard_dir) / COSTS_FILE


def merge_costs(
    shard_dirs: Sequence[str | os.PathLike[str]],
    extra: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
) -> None:
    """Concatenate the shards' cost rows and `extra` cost files (transfer jobs) into `out`; each
    (intervention, prompt) once. No inputs at all give an empty table."""
    from toolshift.analysis.intervention_cost import read_costs
    from toolshift.contracts import COST_COLUMNS

    frames = [read_costs(shard_costs(d)) for d in shard_dirs] + [read_costs(p) for p in extra]
    frames = [f for f in frames if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COST_COLUMNS))
    duplicated = table.duplicated(["intervention", "prompt_id"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise ContractError(f"{out}: cost of {row['intervention']} on {row['prompt_id']} appears twice")
    write_parquet(table[list(COST_COLUMNS)], out)


def merge_runs(
    shard_dirs: Sequence[str | os.PathLike[str]],
    runs: Sequence[str],
    responses_out: Sequence[str | os.PathLike[str]],
    activations_out: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Merge every run's files of the shard directories (`shard_outputs`) into the run's contract files:
    `responses_out[i]` (and `activations_out[i]`, when given) for `runs[i]`."""
    if len(runs) != len(responses_out) or (activations_out and len(activations_out) != len(runs)):
        raise ConfigError(f"merge_runs: {len(runs)} runs for {len(responses_out)} responses files")
    for i, run in enumerate(runs):
        files = [shard_outputs(folder, [run])[0] for folder in shard_dirs]
        if activations_out:
            merge_shards(
                [Path(r) for r, _ in files],
                Path(responses_out[i]),
                [Path(a) for _, a in files if a is not None],
                Path(activations_out[i]),
            )
        else:
            merge_shards([Path(r) for r, _ in files], Path(responses_out[i]))


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m toolshift.inference.runner JOB.json`: run an inference job written by
    `InferenceJob.to_json`."""
    parser = argparse.ArgumentParser(prog="python -m toolshift.inference.runner", description=main.__doc__)
    parser.add_argument("job", type=Path, help="the job file (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        run_job_here(InferenceJob.from_json(args.job.read_text(encoding="utf-8")))
    except ToolshiftError as exc:
        print(f"toolshift error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
