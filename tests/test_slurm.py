"""The SLURM path for real: a single-node SLURM cluster on this machine runs a small DAG via profiles/slurm.

The cluster (munged, slurmctld, slurmd as root, all state in a temporary directory) is started by
tests/slurm_cluster.py and stopped by PID. Its node carries the partitions the profile names and two
stand-in GPUs (a GRES with no devices behind it), so the GPU rules' `gpu=1` goes out as a real
`sbatch --gpus=1` and is scheduled as on a GPU cluster, while the model runs on the CPU. Snakemake
runs with `--profile` pointing at a copy of profiles/slurm with only what this small cluster without
accounting needs changed (squeue for status, short waits, one CPU and little memory per job).
Needs `slurm-wlm` and `munge` (Debian) and root; elsewhere it skips and says why. The profile checks
at the bottom need neither.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import skip_or_fail
from slurm_cluster import SlurmCluster, missing_requirements

from toolshift.contracts import (
    RESPONSE_COLUMNS,
    read_episodes,
    read_prompts,
    read_table,
)
from toolshift.models.activations import read_activations

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
LOCAL_PROFILE = REPO / "profiles" / "local" / "config.yaml"
MODEL = "fixture-llava"
CONDITIONS = ("direct", "tool")
PER_CLASS = 2
INTERVENTION = "add_a4"
GPU_RULES = ("infer", "intervene")
# Every job of the DAG except `all` (what the dry runs list).
EXPECTED_RULES = {
    "prompts": 1,
    "episodes": 1,
    "splits": 1,
    "model": 1,
    "prepare_judge": 2,
    "infer": 1,
    "merge_runs": 1,
    "validate_runs": 1,
    "vectors": 1,
    "intervene": 1,
    "merge_interventions": 1,
    "judge": 3,
    "judge_agreement": 1,
    "asr_table": 1,
    "analysis_tables": 1,
    "figures": 1,
    "representation_figures": 1,
    "headline_figure": 1,
    "validate_planted": 1,
    "book": 1,
}
# What goes through SLURM at least: both GPU rules and the CPU rules between them (see slurm_run).
SLURM_RULES = {
    "infer": 1,
    "merge_runs": 1,
    "vectors": 1,
    "intervene": 1,
    "merge_interventions": 1,
}
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")


def slurm_config(work: Path) -> dict:
    """The embedded default cut to one fixture model, two conditions, two prompts per class, one shard."""
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    cfg["results"] = str(work / "results")
    cfg["book_dir"] = str(work / "book")
    cfg["datasets"] = {"mini": {"limit_per_class": PER_CLASS}}
    cfg["models"] = {MODEL: cfg["models"][MODEL]}
    cfg["models"][MODEL]["fixture"].update(num_layers=2, hidden_size=32, num_heads=2)
    cfg["conditions"] = list(CONDITIONS)
    cfg["generation"].update(max_new_tokens=2, batch_size=4, shards=1, device="cpu")
    cfg["interventions"] = {"layer": "auto", "add": {"alphas": [4]}, "subtract": False, "ablate": False}
    cfg["stats"] = {"n_boot": 100, "seed": 0}
    return cfg


def load_profile(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def profile_partitions(profile: dict) -> tuple[str, ...]:
    """Partition names the profile sends jobs to: the default one first, then per-rule ones."""
    names = [profile.get("default-resources", {}).get("slurm_partition", "debug")]
    names += [
        res["slurm_partition"]
        for res in profile.get("set-resources", {}).values()
        if "slurm_partition" in res
    ]
    return tuple(dict.fromkeys(names))


def cluster_profile(profile: dict) -> dict:
    """profiles/slurm with only what a two-CPU test cluster without accounting needs changed."""
    test = dict(profile)
    test.update(
        {
            "slurm-status-command": "squeue",  # sacct hangs without slurmdbd
            "slurm-init-seconds-before-status-checks": 5,  # default 40 s
            "slurm-no-account": True,
            "slurm-keep-successful-logs": True,
            "retries": 0,
            "latency-wait": 5,
            "jobs": 4,
        }
    )
    test["default-resources"] = {**profile["default-resources"], "mem_mb": 500}
    test["set-resources"] = {
        rule: {**res, "cpus_per_task": 1, "mem_mb": 1000} for rule, res in profile["set-resources"].items()
    }
    test["set-threads"] = {rule: 1 for rule in profile.get("set-threads", {})}
    return test


def snakemake_cmd(work: Path, profile: Path, *args: str) -> list[str]:
    return [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        "config.yaml",
        "--profile",
        str(profile),
        *args,
    ]


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    """Prepare inputs through profiles/local, run the rest through SLURM, record every SLURM job.

    Each SLURM job starts Snakemake twice (the jobstep, then the step under srun), about 15 s here, so
    the cheap preparation rules (prompts, episodes, model) run locally first through profiles/local;
    both GPU rules and the CPU rules between them (merges, vectors) then go through SLURM, up to the
    intervention's merged responses; judging, statistics and the book are the e2e test's business.
    """
    reason = missing_requirements()
    if reason:  # .ci/run installs SLURM and munge, so under CI=true this fails
        skip_or_fail(reason)
    profile = load_profile(SLURM_PROFILE)
    work = tmp_path_factory.mktemp("slurm_dag")
    cfg = slurm_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "profile").mkdir()
    (work / "profile" / "config.yaml").write_text(yaml.safe_dump(cluster_profile(profile)))
    results = Path(cfg["results"])
    prepare = [str(results / f"episodes/mini/{c}.jsonl") for c in CONDITIONS] + [
        str(results / f"models/{MODEL}")
    ]
    proc = subprocess.run(
        snakemake_cmd(work, LOCAL_PROFILE.parent, "--cores", "2", *prepare),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    target = str(results / f"interventions/{MODEL}/mini/{INTERVENTION}/responses.parquet")
    cluster_root = Path(tmp_path_factory.mktemp("slurm_cluster"))
    with SlurmCluster(cluster_root, partitions=profile_partitions(profile), gpus=2) as cluster:
        try:
            proc = subprocess.run(
                snakemake_cmd(work, work / "profile", target),
                cwd=work,
                env=cluster.env(),
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"snakemake through SLURM did not finish in 600 s: {exc}\n{cluster.log_tail('slurmctld')}"
            )
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-6000:] + "\n--- slurmctld ---\n" + cluster.log_tail("slurmctld")
        jobs = {job_id: cluster.job(job_id) for job_id in SUBMITTED.findall(log)}
    assert all(p.poll() is not None for p in cluster.procs.values()), "a daemon outlived the teardown"
    return work, cfg, profile, log, jobs


def rule_of(job: dict[str, str]) -> str:
    """The rule a SLURM job ran, from the comment the plugin sets (rule_<name>[_wildcards_...])."""
    match = re.match(r"rule_(.+?)(?:_wildcards_|$)", job["Comment"])
    assert match, job
    return match.group(1)


@pytest.mark.e2e
@pytest.mark.slurm
def test_every_job_ran_through_slurm(slurm_run):
    work, cfg, profile, log, jobs = slurm_run
    submitted = Counter(rule_of(job) for job in jobs.values())
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log))
    local = set(re.findall(r"^localrule (\w+):", log, re.MULTILINE))
    assert submitted == Counter({r: n for r, n in finished.items() if r not in local})  # none ran locally
    assert {r: submitted[r] for r in SLURM_RULES} == SLURM_RULES
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    assert {job["ExitCode"] for job in jobs.values()} == {"0:0"}
    slurm_logs = {path.stem: path for path in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(slurm_logs) == set(jobs)  # one log per SLURM job, named by its job id
    for path in slurm_logs.values():
        assert "--executor slurm-jobstep" in path.read_text()  # the job ran Snakemake's SLURM jobstep


@pytest.mark.e2e
@pytest.mark.slurm
def test_jobs_land_on_the_profile_partitions_and_gpu_rules_get_a_gpu(slurm_run):
    work, cfg, profile, log, jobs = slurm_run
    default_partition = profile["default-resources"]["slurm_partition"]
    for job in jobs.values():
        rule = rule_of(job)
        expected = profile["set-resources"].get(rule, {}).get("slurm_partition", default_partition)
        assert job["Partition"] == expected, (rule, job["Partition"])
        if rule in GPU_RULES:
            assert job.get("TresPerJob") == "gres:gpu:1", (rule, job)  # sbatch --gpus=1
        else:
            assert "gpu" not in job.get("TresPerJob", ""), (rule, job)
    gpu_partitions = {profile["set-resources"][rule]["slurm_partition"] for rule in GPU_RULES}
    assert gpu_partitions != {default_partition}, "the profile should send GPU rules to their own partition"


@pytest.mark.e2e
@pytest.mark.slurm
def test_contract_files_validate(slurm_run):
    work, cfg, profile, log, jobs = slurm_run
    results = Path(cfg["results"])
    prompts = read_prompts(results / "data/mini/prompts.parquet")
    assert prompts["harmful"].sum() == PER_CLASS and (~prompts["harmful"]).sum() == PER_CLASS
    ids = sorted(prompts["prompt_id"])
    for condition in CONDITIONS:
        episodes = read_episodes(results / f"episodes/mini/{condition}.jsonl")
        assert sorted(e["prompt_id"] for e in episodes) == ids
        run = results / f"runs/{MODEL}/mini/{condition}"
        responses = read_table(run / "responses.parquet", RESPONSE_COLUMNS)
        assert sorted(responses["prompt_id"]) == ids
        assert (responses["n_new_tokens"] <= 2).all()
        acts = read_activations(run / "activations.nc")
        assert acts["resid"].shape == (2 * PER_CLASS, 2, 32)
    vectors = xr.open_dataset(results / f"vectors/{MODEL}/mini.nc", engine="h5netcdf")
    assert vectors["tool_vector"].shape == (2, 32)
    intervened = read_table(
        results / f"interventions/{MODEL}/mini/{INTERVENTION}/responses.parquet", RESPONSE_COLUMNS
    )
    splits = pd.read_parquet(results / "splits/mini.parquet")
    steered = set(splits.loc[splits["split"] != "train", "prompt_id"])  # interventions skip train prompts
    assert set(intervened["intervention"]) == {INTERVENTION} and set(intervened["prompt_id"]) == steered
    assert not (results / "judged").exists()  # nothing past the target ran


# -- the profiles themselves (no cluster needed) ----------------------------------------------------------


def test_slurm_profile_maps_gpu_rules_and_defaults():
    profile = load_profile(SLURM_PROFILE)
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(defaults)
    assert set(GPU_RULES) <= set(profile["set-resources"])
    for rule in GPU_RULES:
        res = profile["set-resources"][rule]
        # the rules' own `gpu=1` is what requests the GPU (sbatch --gpus); the profile must not zero it
        assert res.get("gpu", 1) >= 1 and "gres" not in res
        assert res["slurm_partition"] != defaults["slurm_partition"]
    rules_text = "\n".join(path.read_text() for path in sorted((REPO / "rules").glob("*.smk")))
    for rule in GPU_RULES:
        block = re.search(rf"^\s*rule {rule}:\n(.*?)(?=^\s*rule |\Z)", rules_text, re.MULTILINE | re.DOTALL)
        assert block and re.search(r"^\s+gpu=1,", block.group(1), re.MULTILINE), f"rule {rule} lacks gpu=1"


@pytest.mark.e2e
@pytest.mark.parametrize("profile", [LOCAL_PROFILE, SLURM_PROFILE], ids=["local", "slurm"])
def test_profile_is_accepted_by_snakemake(profile, tmp_path):
    """A dry run through each profile builds the DAG (the slurm one with the executor plugin loaded)."""
    cfg = slurm_config(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        "config.yaml",
        "--profile",
        str(profile.parent),
        "--dry-run",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = proc.stdout + proc.stderr
    assert f"Using profile {profile.parent}" in out
    for rule, count in EXPECTED_RULES.items():
        assert re.search(rf"^{rule}\s+{count}$", out, re.MULTILINE), (rule, out[-3000:])
