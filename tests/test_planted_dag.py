"""The positive control end to end: the DAG, unchanged, recovers the planted mechanism of the planted
fixture (toolshift.models.fixture_models.planted), and a broken step makes the matching recovery row fail.

One module-scoped run: the planted model and one random fixture (the negative control), every harmful
and harmless `mini` prompt, the conditions and interventions the recovery rows need, the keyword judge;
Snakemake is asked for the recovery table only (no figures, no book).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import yaml

from toolshift.checks.planted_model import planted_recovery_tables, recovery_table
from toolshift.contracts import PLANTED_MODEL_COLUMNS
from toolshift.models.fixtures import read_fixture_marker

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PLANTED = "planted-qwen2_5_vl"
CONTROL = "fixture-llava"
CHECKS = {
    "asr_drop",
    "rel_reduction",
    "tool_vector_cos",
    "selected_layer",
    "add_monotone",
    "random_flat",
    "add_below_random",
    "removing_shift_subtract",
    "removing_shift_ablate",
    "negative_control",
}


def planted_config(work: Path) -> dict:
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    cfg["results"] = str(work / "results")
    cfg["book_dir"] = str(work / "book")
    cfg["models"] = {m: cfg["models"][m] for m in (PLANTED, CONTROL)}
    cfg["datasets"] = {"mini": {"limit_per_class": 50}}
    cfg["conditions"] = ["direct", "tool_offered", "tool"]
    cfg["generation"].update(max_new_tokens=6, batch_size=25, shards=1, device="cpu")
    cfg["interventions"] = {
        "layer": "auto",
        "add": {"alphas": [0, 1, 2, 4]},
        "subtract": True,
        "ablate": True,
        "random": {"alphas": [1, 4], "seeds": [0, 1, 2]},
        "ablate_refusal": ["direct"],
    }
    cfg["judges"] = ["keyword"]
    cfg["stats"] = {"n_boot": 1000, "seed": 0}
    lock = work / "datasets.lock.yaml"
    shutil.copyfile(REPO / "config" / "datasets.lock.yaml", lock)
    cfg["data_lock"] = str(lock)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("planted_dag")
    cfg = planted_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = str(Path(cfg["results"]) / "tables/validation_planted_model.csv")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--configfile",
           "config.yaml", "--cores", "2", target]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=work)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return Path(cfg["results"])


def recovery(results: Path, **override) -> pd.DataFrame:
    """The recovery table recomputed from the run's files (or from broken versions of them)."""
    record = read_fixture_marker(results / "models" / PLANTED)["planted"]
    with xr.open_dataset(results / f"vectors/{PLANTED}/mini.nc", engine="h5netcdf") as ds:
        vectors = ds.load()
    inputs = {
        "asr": pd.read_csv(results / "tables/asr.csv"),
        "contrasts": pd.read_csv(results / "tables/contrasts.csv"),
        "vectors": vectors,
        **override,
    }
    return recovery_table(model=PLANTED, record=record, dataset="mini", judge="keyword",
                          negative_controls=[CONTROL], **inputs)  # fmt: skip


def test_the_dag_recovers_every_planted_row(run):
    table = pd.read_csv(run / "tables/validation_planted_model.csv")
    assert list(table.columns) == list(PLANTED_MODEL_COLUMNS)
    assert set(table["check"]) == CHECKS
    failed = table.loc[~table["passed"], ["check", "description", "recovered"]]
    assert failed.empty, failed.to_string()
    row = table.set_index("check")
    assert row.loc["tool_vector_cos", "recovered"] >= 0.9 and row.loc["selected_layer", "recovered"] == 2
    assert row.loc["rel_reduction", "ci_low"] <= 0.3 <= row.loc["rel_reduction", "ci_high"]
    assert row.loc["asr_drop", "ci_low"] > 0
    # the table the DAG wrote is the library's recovery of the same files
    again = planted_recovery_tables(
        models={PLANTED: str(run / "models" / PLANTED)},
        vectors=[str(run / f"vectors/{PLANTED}/mini.nc")],
        datasets=["mini"],
        judge="keyword",
        asr_csv=str(run / "tables/asr.csv"),
        contrasts_csv=str(run / "tables/contrasts.csv"),
        negative_controls=[CONTROL],
    )
    assert again["check"].tolist() == table["check"].tolist()
    assert again["passed"].tolist() == table["passed"].tolist()
    pd.testing.assert_series_equal(again["recovered"], table["recovered"], check_dtype=False)


def test_the_positive_control_intervention_and_tool_offered(run):
    asr = pd.read_csv(run / "tables/asr.csv")
    rows = asr[(asr["model"] == PLANTED) & (asr["judge"] == "keyword")].set_index(
        ["condition", "intervention"]
    )
    direct = rows.loc[("direct", "none"), "asr"]
    assert rows.loc[("direct", "ablate_refusal_direct"), "asr"] > direct  # ablating the refusal direction
    assert rows.loc[("tool_offered", "none"), "asr"] == direct  # being offered the tool is not the mechanism


def test_capture_at_the_wrong_layer_fails_the_vector_row(run):
    """A capture one layer early: the tool vector at L is what layer L-1 holds (nothing)."""
    with xr.open_dataset(run / f"vectors/{PLANTED}/mini.nc", engine="h5netcdf") as ds:
        broken = ds.load()
    broken["tool_vector"] = broken["tool_vector"].shift(layer=1, fill_value=0.0)
    table = recovery(run, vectors=broken).set_index("check")
    assert not table.loc["tool_vector_cos", "passed"]
    assert table.drop(index="tool_vector_cos")["passed"].all()


def test_a_judge_with_the_verdicts_flipped_fails_the_behaviour_rows(run):
    """The contrast and ASR tables of a judge that inverts its verdicts: the drop becomes a rise."""
    contrasts = pd.read_csv(run / "tables/contrasts.csv")
    flipped = contrasts.assign(diff=-contrasts["diff"], diff_ci_low=-contrasts["diff_ci_high"],
                               diff_ci_high=-contrasts["diff_ci_low"])  # fmt: skip
    table = recovery(run, contrasts=flipped).set_index("check")
    assert not table.loc["asr_drop", "passed"]
    assert table.loc["tool_vector_cos", "passed"]


def test_a_sign_flipped_tool_vector_fails_the_dose_response_rows(run, tmp_path):
    """The add step with the tool vector's sign flipped, run for real through the runner on the planted
    model (its add runs regenerated from a vectors file holding -v), judged and tabled by the library:
    ASR no longer falls with alpha, and the dose-response rows fail."""
    from toolshift.analysis.tables import asr_table
    from toolshift.datasets.splits import read_splits
    from toolshift.inference.runner import InferenceJob, RunOutput, run_job_here
    from toolshift.judges.keyword import judge_frame

    cfg = yaml.safe_load((run.parent / "config.yaml").read_text())
    with xr.open_dataset(run / f"vectors/{PLANTED}/mini.nc", engine="h5netcdf") as ds:
        flipped = ds.load()
    flipped["tool_vector"] = -flipped["tool_vector"]
    flipped.to_netcdf(tmp_path / "flipped.nc", engine="h5netcdf")
    adds = [f"add_a{a:g}" for a in cfg["interventions"]["add"]["alphas"]]
    job = InferenceJob(
        model=PLANTED,
        entry=cfg["models"][PLANTED],
        model_dir=str(run / "models" / PLANTED),
        dataset="mini",
        prompts=str(run / "data/mini/prompts.parquet"),
        results_root=str(run),
        generation=cfg["generation"],
        shard=0,
        n_shards=1,
        runs=[
            RunOutput(
                name=a,
                episodes=str(run / "episodes/mini/direct.jsonl"),
                responses=str(tmp_path / a / "responses.parquet"),
            )
            for a in adds
        ],  # fmt: skip
        vectors={"mini": str(tmp_path / "flipped.nc")},
        layer="auto",
        splits=str(run / "splits/mini.parquet"),
    )
    run_job_here(job)
    responses = pd.concat([pd.read_parquet(tmp_path / a / "responses.parquet") for a in adds])
    judged = judge_frame(responses, "keyword")
    plain = pd.read_parquet(run / f"judged/keyword/{PLANTED}/mini.parquet")
    plain = plain[plain["intervention"] == "none"]
    broken = asr_table(pd.concat([plain, judged], ignore_index=True), n_boot=200, seed=0,
                       splits=read_splits(run / "splits/mini.parquet"))  # fmt: skip
    asr = pd.read_csv(run / "tables/asr.csv")
    asr = pd.concat(
        [asr[~asr["intervention"].str.startswith("add_a")], broken[broken["intervention"].isin(adds)]]
    )
    table = recovery(run, asr=asr).set_index("check")
    assert not table.loc["add_monotone", "passed"] and not table.loc["add_below_random", "passed"]
    assert table.loc["tool_vector_cos", "passed"] and table.loc["asr_drop", "passed"]
