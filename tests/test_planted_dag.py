"""The planted worlds end to end: the DAG, unchanged, gives every claim of every world the verdict the world's
truth allows (the world x claim table), recovers what each world planted, and a broken stage turns the
matching cell or row wrong.

One module-scoped run: the three worlds (built once per session by conftest's `planted_world_dirs` and
handed to the run as built) and one random fixture (the null world), every harmful and harmless `mini`
prompt, the controlled conditions the claims compare, the interventions their contrasts need, the keyword
judge; Snakemake is asked for the validation tables only (no figures, no book).
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
from conftest import PLANTED_WORLDS

from toolshift.analysis.claims import claims_table
from toolshift.checks.planted_model import planted_recovery_tables, recovery_table
from toolshift.checks.planted_worlds import world_claim_table, world_claim_tables
from toolshift.contracts import PLANTED_MODEL_COLUMNS, WORLD_CLAIM_COLUMNS
from toolshift.models.fixtures import read_fixture_marker

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WORLDS = {model: world for world, model in PLANTED_WORLDS.items()}
TOOL = PLANTED_WORLDS["tool"]
CONTROL = "fixture-llava"
CONDITIONS = [
    "direct", "tool_offered", "tool", "tool_blank", "text_trail", "text_prior", "image_no_tool",
    "image_after", "image_turn", "text_trail_long",
]  # fmt: skip
"""The controlled conditions the claims read, with one override (`tool_blank`: the claims read every override
the same way) and no size dose or `free`."""
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
    cfg["models"] = {m: cfg["models"][m] for m in (*WORLDS, CONTROL)}
    cfg["models"][CONTROL]["fixture"].update(num_layers=3, hidden_size=32)  # the null world: any size
    cfg["datasets"] = {"mini": {"limit_per_class": 50}}
    cfg["conditions"] = CONDITIONS
    cfg["generation"].update(max_new_tokens=6, batch_size=25, shards=1, device="cpu")
    cfg["interventions"] = {
        "layer": "auto",
        "add": {"alphas": [1, 4]},
        "subtract": ["tool", "direct"],
        "ablate": ["tool", "direct"],
        "random": {"alphas": [1], "seeds": [0, 1, 2]},
        "covrandom": {"alphas": [1], "seeds": [0, 1]},
        "control_shift": {"conditions": ["text_trail", "tool_offered"], "alphas": [1]},
        "relative": {"conditions": ["text_trail", "tool_offered"], "alphas": [1]},
        "add_orth": {"alphas": [1]},
        "covrandom_remove": {"seeds": [0]},
        "ablate_refusal": ["tool"],
    }
    cfg["judges"] = ["keyword"]
    cfg["stats"].update(n_boot=500)
    lock = work / "datasets.lock.yaml"
    shutil.copyfile(REPO / "config" / "datasets.lock.yaml", lock)
    cfg["data_lock"] = str(lock)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory, planted_world_dirs) -> Path:
    work = tmp_path_factory.mktemp("planted_dag")
    cfg = planted_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    results = Path(cfg["results"])
    built = {}
    for world, model in PLANTED_WORLDS.items():  # the session's builds of the same entries
        shutil.copytree(planted_world_dirs[world], results / "models" / model)
        built[model] = (results / "models" / model / "model.safetensors").stat().st_mtime_ns
    targets = [str(results / f"tables/{t}.csv") for t in ("validation_planted_model", "validation_worlds")]
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--configfile",
           "config.yaml", "--cores", "2", "--rerun-triggers=mtime", *targets]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=work)
    assert proc.returncode == 0, proc.stderr[-6000:]
    for model, mtime in built.items():  # taken as built, not built again
        assert (results / "models" / model / "model.safetensors").stat().st_mtime_ns == mtime
    return results


def worlds_of(results: Path) -> dict:
    return {m: read_fixture_marker(results / "models" / m)["planted"] for m in WORLDS}


def world_table(results: Path, contrasts: pd.DataFrame, tokens: pd.DataFrame | None = None) -> pd.DataFrame:
    """The world x claim table recomputed from a contrasts table (the run's or a broken one)."""
    tokens = pd.read_csv(results / "tables/tokens_model.csv") if tokens is None else tokens
    return world_claim_table(claims_table(contrasts, tokens), worlds=worlds_of(results),
                             null_models=[CONTROL], judge="keyword")  # fmt: skip


def test_every_world_claim_cell_is_right(run):
    table = pd.read_csv(run / "tables/validation_worlds.csv", keep_default_na=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print("\n", table.drop(columns="components"))
    assert list(table.columns) == list(WORLD_CLAIM_COLUMNS)
    assert table["world"].unique().tolist() == ["tool", "trace", "dilution", "null"] and len(table) == 20
    wrong = table.loc[~table["passed"], ["model", "claim", "verdict", "expected", "components"]]
    assert wrong.empty, wrong.to_string()
    verdict = table.set_index(["world", "claim"])["verdict"]
    assert verdict["tool"].tolist() == ["supported"] * 4 + ["not shown"]
    assert verdict[("trace", "controls")] == "contradicted" and verdict[("dilution", "dose")] == "supported"
    # the table the DAG wrote is the library's, from the same files
    again = world_claim_tables(models={m: str(run / "models" / m) for m in WORLDS}, null_models=[CONTROL],
                               datasets=["mini"], judge="keyword",
                               claims_csv=str(run / "tables/claims.csv"))  # fmt: skip
    assert again["verdict"].tolist() == table["verdict"].tolist()


def test_the_dag_recovers_every_planted_row(run):
    table = pd.read_csv(run / "tables/validation_planted_model.csv")
    assert list(table.columns) == list(PLANTED_MODEL_COLUMNS)
    assert set(table["model"]) == set(WORLDS) and set(table["check"]) == CHECKS
    failed = table.loc[~table["passed"], ["model", "check", "description", "recovered"]]
    assert failed.empty, failed.to_string()
    row = table[table["model"] == TOOL].set_index("check")
    assert row.loc["tool_vector_cos", "recovered"] >= 0.9 and row.loc["selected_layer", "recovered"] == 2
    assert row.loc["rel_reduction", "ci_low"] <= 0.75 <= row.loc["rel_reduction", "ci_high"]
    again = planted_recovery_tables(
        models={m: str(run / "models" / m) for m in WORLDS},
        vectors=[str(run / f"vectors/{m}/mini.nc") for m in WORLDS],
        datasets=["mini"],
        judge="keyword",
        asr_csv=str(run / "tables/asr.csv"),
        contrasts_csv=str(run / "tables/contrasts.csv"),
        negative_controls=[CONTROL],
    )
    assert again["passed"].tolist() == table["passed"].tolist()


def test_dropping_the_tost_turns_the_tool_worlds_controls_cell_wrong(run):
    """Without the equivalence rows, "back to baseline" is not tested: the tool world's claim 2 cannot be
    supported; a verdict read off non-significant differences would be needed to pass it."""
    contrasts = pd.read_csv(run / "tables/contrasts.csv")
    table = world_table(run, contrasts[contrasts["test"] != "tost"])
    failed = table.loc[~table["passed"], ["model", "claim"]].values.tolist()
    # the tool world's claim 2 fails, and so does every other world's: without its equivalence ids the claim
    # is not tested; no other claim moves
    assert [TOOL, "controls"] in failed and {claim for _, claim in failed} == {"controls"}
    assert table.set_index(["model", "claim"]).loc[(TOOL, "controls"), "verdict"] == "not tested"


def test_without_the_tokens_model_the_dose_cells_are_not_tested(run):
    contrasts = pd.read_csv(run / "tables/contrasts.csv")
    tokens = pd.read_csv(run / "tables/tokens_model.csv")
    table = world_table(run, contrasts, tokens[tokens["term"] != "n_after_instruction"])
    assert set(table.loc[~table["passed"], "claim"]) == {"dose"}


def rerun(results: Path, model: str, runs: list[str], vectors: xr.Dataset, tmp_path: Path) -> pd.DataFrame:
    """`runs` (direct interventions) of `model` regenerated for real through the runner with a vectors file
    of our own, judged by the keyword judge: the judged rows."""
    from toolshift.inference.runner import InferenceJob, RunOutput, run_job_here
    from toolshift.judges.keyword import judge_frame

    cfg = yaml.safe_load((results.parent / "config.yaml").read_text())
    vectors.to_netcdf(tmp_path / "vectors.nc", engine="h5netcdf")
    job = InferenceJob(
        model=model,
        entry=cfg["models"][model],
        model_dir=str(results / "models" / model),
        dataset="mini",
        prompts=str(results / "data/mini/prompts.parquet"),
        results_root=str(results),
        generation=cfg["generation"],
        shard=0,
        n_shards=1,
        runs=[
            RunOutput(
                name=r,
                episodes=str(results / "episodes/mini/direct.jsonl"),
                responses=str(tmp_path / r / "responses.parquet"),
            )
            for r in runs
        ],  # fmt: skip
        vectors={"mini": str(tmp_path / "vectors.nc")},
        layer="auto",
        splits=str(results / "splits/mini.parquet"),
    )
    run_job_here(job)
    return judge_frame(
        pd.concat([pd.read_parquet(tmp_path / r / "responses.parquet") for r in runs]), "keyword"
    )


def contrasts_with(results: Path, model: str, judged: pd.DataFrame) -> pd.DataFrame:
    """The run's contrasts table with `model`'s rows recomputed from its judged table, some runs replaced."""
    from toolshift.analysis.contrasts import contrasts_table
    from toolshift.datasets.splits import read_splits

    plain = pd.read_parquet(results / f"judged/keyword/{model}/mini.parquet")
    replaced = set(judged["intervention"])
    judged_all = pd.concat([plain[~plain["intervention"].isin(replaced)], judged], ignore_index=True)
    cfg = yaml.safe_load((results.parent / "config.yaml").read_text())
    splits = read_splits(results / "splits/mini.parquet")
    margin = cfg["stats"]["equivalence_margin"]
    ours = contrasts_table(judged_all, n_boot=200, seed=0, splits=splits, equivalence_margin=margin)
    contrasts = pd.read_csv(results / "tables/contrasts.csv")
    return pd.concat([contrasts[contrasts["model"] != model], ours], ignore_index=True)


def test_a_tool_vector_from_the_wrong_control_turns_the_mechanism_cell_wrong(run, tmp_path):
    """The tool vector derived against the wrong control, h(text_trail) - h(direct) (the text trail's shift)
    instead of h(tool) - h(direct), and the tool world's add and random runs regenerated with it: in the
    tool world that shift holds nothing the refusal reads, so adding it beats no random vector, and the
    mechanism cell turns wrong."""
    with xr.open_dataset(run / f"vectors/{TOOL}/mini.nc", engine="h5netcdf") as ds:
        vectors = ds.load()
    vectors["tool_vector"] = vectors["shift"].sel(condition="text_trail").drop_vars("condition")
    runs = ["add_a1", "random_a1_s0", "random_a1_s1", "random_a1_s2"]
    contrasts = contrasts_with(run, TOOL, rerun(run, TOOL, runs, vectors, tmp_path))
    table = world_table(run, contrasts)
    failed = table.loc[~table["passed"], ["model", "claim"]].values.tolist()
    assert [TOOL, "mechanism"] in failed and all(m == TOOL for m, _ in failed)
    rows = contrasts[(contrasts["model"] == TOOL) & (contrasts["claim"] == "adding_shift_beats_random")]
    assert (rows["verdict"] != "supported").all()


def test_capture_at_the_wrong_layer_fails_the_vector_row(run):
    """A capture one layer early: the tool vector at L is what layer L-1 holds (flags, not d)."""
    with xr.open_dataset(run / f"vectors/{TOOL}/mini.nc", engine="h5netcdf") as ds:
        broken = ds.load()
    broken["tool_vector"] = broken["tool_vector"].shift(layer=1, fill_value=0.0)
    table = recovery(run, vectors=broken).set_index("check")
    assert not table.loc["tool_vector_cos", "passed"]
    assert table.drop(index="tool_vector_cos")["passed"].all()


def test_a_judge_with_the_verdicts_flipped_fails_the_behaviour_rows(run):
    contrasts = pd.read_csv(run / "tables/contrasts.csv")
    flipped = contrasts.assign(diff=-contrasts["diff"], diff_ci_low=-contrasts["diff_ci_high"],
                               diff_ci_high=-contrasts["diff_ci_low"])  # fmt: skip
    table = recovery(run, contrasts=flipped).set_index("check")
    assert not table.loc["asr_drop", "passed"]
    assert table.loc["tool_vector_cos", "passed"]


def recovery(results: Path, **override) -> pd.DataFrame:
    """The tool world's recovery table recomputed from the run's files (or from broken versions of them)."""
    record = read_fixture_marker(results / "models" / TOOL)["planted"]
    with xr.open_dataset(results / f"vectors/{TOOL}/mini.nc", engine="h5netcdf") as ds:
        vectors = ds.load()
    inputs = {
        "asr": pd.read_csv(results / "tables/asr.csv"),
        "contrasts": pd.read_csv(results / "tables/contrasts.csv"),
        "vectors": vectors,
        **override,
    }
    return recovery_table(model=TOOL, record=record, dataset="mini", judge="keyword",
                          negative_controls=[CONTROL], **inputs)  # fmt: skip
