"""End to end: the Snakemake DAG on a reduced embedded config, in a temporary directory.

One module-scoped run (two fixture models x every controlled condition and `free`, two shards, a few
interventions) feeds every test here: each contract file is checked, the book is there, and a second run
has nothing to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import yaml
from dag import INTERVENTIONS, MODELS, N_LAYERS, PER_CLASS, REPO, reduced_config, snakemake

from toolshift.analysis.contrasts import CLAIM2
from toolshift.analysis.headline import MEAN_MODEL, POOLED
from toolshift.analysis.interventions import parse_intervention_id
from toolshift.contracts import (
    ASR_COLUMNS,
    JUDGED_COLUMNS,
    RESPONSE_COLUMNS,
    read_episodes,
    read_prompts,
    read_table,
)
from toolshift.episodes.build import BBOX_CONDITIONS, ZOOM_CONDITIONS, is_tool_condition
from toolshift.episodes.build import EPISODE_CONDITIONS as CONDITIONS
from toolshift.inference.runner import LOADED_LINE
from toolshift.models.activations import read_activations
from toolshift.report.figures.registry import FIGURE_PAGES
from toolshift.report.links import broken_internal_links
from toolshift.report.pages import CHAPTERS, TABLE_PAGES

pytestmark = pytest.mark.e2e

FIGURES = (
    "asr_by_condition",
    "cosine_by_layer",
    "dose_response",
    "pca",
    "probes",
    "projections",
    "asr_by_category",
    "headline",
    "interventions",
    "asr_by_judge",
    "intervention_cost",
    "free_tool_use",
)


@pytest.fixture(scope="module")
def dag(dag_run) -> tuple[Path, dict]:
    return dag_run


def test_prompts_and_episodes_contracts(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    prompts = read_prompts(results / "data/mini/prompts.parquet")
    assert prompts["harmful"].sum() == PER_CLASS and (~prompts["harmful"]).sum() == PER_CLASS
    for image in prompts["image"]:
        assert (results / image).is_file()
    for condition in CONDITIONS:
        episodes = read_episodes(results / f"episodes/mini/{condition}.jsonl")
        assert [e["prompt_id"] for e in episodes] == list(prompts["prompt_id"])
        assert {e["condition"] for e in episodes} == {condition}


@pytest.mark.parametrize("model", MODELS)
def test_runs_write_responses_and_activations(dag, model):
    work, cfg = dag
    results = Path(cfg["results"])
    prompts = read_prompts(results / "data/mini/prompts.parquet")
    for condition in CONDITIONS:
        run = results / f"runs/{model}/mini/{condition}"
        responses = read_table(run / "responses.parquet", RESPONSE_COLUMNS)
        assert sorted(responses["prompt_id"]) == sorted(prompts["prompt_id"])
        assert set(responses["condition"]) == {condition}
        assert set(responses["intervention"]) == {"none"}
        assert (responses["n_new_tokens"] <= 6).all() and (responses["n_prompt_tokens"] > 0).all()
        episodes = {e["prompt_id"]: e for e in read_episodes(results / f"episodes/mini/{condition}.jsonl")}
        for pid, scale in zip(responses["prompt_id"], responses["zoom_scale"], strict=True):
            recorded = episodes[pid]["meta"].get("zoom_scale")
            assert (pd.isna(scale) and recorded is None) or scale == recorded, (condition, pid)
        assert responses["zoom_scale"].notna().all() == (
            condition != "free" and (is_tool_condition(condition) or condition in BBOX_CONDITIONS)
        )
        acts = read_activations(run / "activations.nc")
        assert acts["resid"].dims == ("prompt_id", "layer", "hidden")
        assert acts["resid"].shape == (2 * PER_CLASS, N_LAYERS, 32)
        assert acts.attrs["condition"] == condition and acts.attrs["model"] == model
        assert sorted(acts["prompt_id"].values) == sorted(prompts["prompt_id"])


def test_free_runs_record_tool_use(dag):
    work, cfg = dag
    for model in MODELS:
        free = pd.read_parquet(Path(cfg["results"]) / f"runs/{model}/mini/free/responses.parquet")
        assert {"n_tool_calls", "n_malformed_calls", "n_turns", "used_tool", "stop_reason"} <= set(
            free.columns
        )
        assert free["n_turns"].between(1, 2).all()
        assert (free["used_tool"] == (free["n_tool_calls"] > 0)).all()


def test_shards_partition_the_prompts(dag):
    work, cfg = dag
    shards = sorted((Path(cfg["results"]) / "runs/fixture-llava/mini/shards").iterdir())
    ids = [set(pd.read_parquet(shard / "tool.parquet")["prompt_id"]) for shard in shards]
    assert len(ids) == 2 and ids[0] and ids[1] and not ids[0] & ids[1]
    for shard in shards:  # one job per shard wrote every condition, with its states
        assert sorted(p.stem for p in shard.glob("*.parquet")) == sorted(CONDITIONS)
        assert sorted(p.stem for p in shard.glob("*.nc")) == sorted(CONDITIONS)


def test_one_model_load_per_job_serves_every_run(dag):
    """Each (model, dataset, shard) is one infer job and one intervene job, whatever the number of runs."""
    work, cfg = dag
    results = Path(cfg["results"])
    for model in MODELS:
        for rule in ("infer", "intervene"):
            jobs = sorted(p.stem for p in (results / f"benchmarks/{rule}/{model}/mini").glob("*.tsv"))
            assert jobs == ["000", "001"], (rule, jobs)
            runs = len(CONDITIONS) if rule == "infer" else len(INTERVENTIONS)
            for shard in jobs:
                log = (results / f"logs/{rule}/{model}/mini/{shard}.log").read_text()
                loaded = LOADED_LINE % (model, "hf", runs, "mini", int(shard))
                assert log.count(" loaded once into the ") == 1 and loaded in log, log[-2000:]
        engines = pd.concat(
            [pd.read_parquet(p) for p in (results / f"runs/{model}/mini").glob("*/responses.parquet")]
        )["engine"]
        assert set(engines) == {"hf"}


@pytest.mark.parametrize("model", MODELS)
def test_vectors_file(dag, model):
    work, cfg = dag
    vectors = xr.open_dataset(Path(cfg["results"]) / f"vectors/{model}/mini.nc", engine="h5netcdf")
    assert vectors["tool_vector"].dims == ("layer", "hidden")
    assert vectors["tool_vector"].shape == (N_LAYERS, 32)
    assert vectors["refusal_direction"].shape == (N_LAYERS, 32)
    assert set(vectors["shift"].coords["condition"].values) == set(CONDITIONS)
    assert vectors["cos_tool_refusal"].shape == (N_LAYERS,)
    assert abs(vectors["shift"].sel(condition="direct")).max() == 0


@pytest.mark.parametrize("model", MODELS)
def test_interventions_and_judged_tables(dag, model):
    work, cfg = dag
    results = Path(cfg["results"])
    splits = pd.read_parquet(results / "splits/mini.parquet")
    steered = set(splits.loc[splits["split"].isin(["validation", "test"]), "prompt_id"])  # not train
    assert 0 < len(steered) < 2 * PER_CLASS
    for intervention in INTERVENTIONS:
        responses = read_table(
            results / f"interventions/{model}/mini/{intervention}/responses.parquet", RESPONSE_COLUMNS
        )
        assert set(responses["intervention"]) == {intervention}
        assert set(responses["condition"]) == {parse_intervention_id(intervention).base_condition}
        assert set(responses["prompt_id"]) == steered and len(responses) == len(steered)
    judged = read_table(results / f"judged/keyword/{model}/mini.parquet", JUDGED_COLUMNS)
    assert len(judged) == 2 * PER_CLASS * len(CONDITIONS) + len(steered) * len(INTERVENTIONS)
    assert judged["unsafe"].dtype == bool


def test_alpha_zero_equals_no_hook(dag):
    """add with alpha 0 on direct must reproduce the plain direct run token for token."""
    work, cfg = dag
    results = Path(cfg["results"])
    for model in MODELS:
        plain = pd.read_parquet(results / f"runs/{model}/mini/direct/responses.parquet").set_index(
            "prompt_id"
        )
        zero = pd.read_parquet(results / f"interventions/{model}/mini/add_a0/responses.parquet").set_index(
            "prompt_id"
        )
        assert (plain.loc[zero.index, "response"] == zero["response"]).all()


def test_asr_table_covers_models_conditions_and_interventions(dag):
    work, cfg = dag
    asr = read_table(Path(cfg["results"]) / "tables/asr.csv", ASR_COLUMNS)
    plain = asr[asr["intervention"] == "none"]
    assert set(zip(plain["model"], plain["condition"], strict=True)) == {
        (m, c) for m in MODELS for c in CONDITIONS
    }
    assert set(asr.loc[asr["intervention"] != "none", "intervention"]) == set(INTERVENTIONS)
    assert (asr["n"] == asr["n"].iloc[0]).all() and 0 < asr["n"].iloc[0] < PER_CLASS  # harmful test prompts
    assert ((asr["asr"] >= 0) & (asr["asr"] <= 1)).all()
    assert (asr["asr_ci_low"] <= asr["asr"] + 1e-12).all() and (
        asr["asr"] <= asr["asr_ci_high"] + 1e-12
    ).all()
    reference = plain[plain["condition"] == "direct"]
    assert (reference["mcnemar_p"] == 1).all()


def test_figures_and_book(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    for name in FIGURES:  # one set per dataset, and the headline of the whole study
        folder = results / ("figures" if name == "headline" else "figures/mini")
        assert (folder / f"{name}.png").stat().st_size > 5000
        assert (folder / f"{name}.svg").stat().st_size > 1000
    captions = json.loads((results / "figures/mini/captions.json").read_text())  # the behaviour group
    captions.update(json.loads((results / "figures/mini/representation.captions.json").read_text()))
    captions.update(json.loads((results / "figures/captions.json").read_text()))
    assert set(captions) == set(FIGURES)
    index = Path(cfg["book_dir"]) / "_build/html/index.html"
    assert "url=intro.html" in index.read_text()  # Jupyter Book's index redirects to the first page
    html = index.parent
    overview = (html / "intro.html").read_text()
    assert "fixture models" in overview and "noise" in overview
    for page in CHAPTERS:
        assert (html / f"{page}.html").is_file(), page
    for name in FIGURES:  # every figure on its page, with its SVG beside it
        page = (html / f"{FIGURE_PAGES[name]}.html").read_text()
        assert f"{name}.png" in page and f"{name}.svg" in page, name
        text = unescape(page).replace("\u2019", "'")  # Sphinx's smart quotes back to plain ones
        assert captions[name][:60] in text, name  # the caption itself, not just the file name
    for name, page in TABLE_PAGES.items():  # every table section on its page
        assert f'id="table-{name.replace("_", "-")}"' in (html / f"{page}.html").read_text(), name
    assert broken_internal_links(html) == []
    validation = (html / "validation.html").read_text()
    assert "tool_vector" in validation and "selected_layer" in validation
    if cfg.get("data_mirror"):
        assert "10 SafeBench images rendered" in validation
    method = (html / "method.html").read_text()
    assert method.count("The model generates its answer here") == len(CONDITIONS)
    assert "Runtimes per rule" in (html / "provenance.html").read_text()


def test_validation_tables(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    planted = pd.read_csv(results / "tables/validation_planted.csv")
    assert planted["passed"].all(), planted.loc[~planted["passed"], "check"].tolist()
    if cfg.get("data_mirror"):
        fidelity = pd.read_csv(results / "tables/validation_figstep.csv")
        assert len(fidelity) == 10 and (fidelity["agreement"] > 0.999).all()
    else:
        assert not (results / "tables/validation_figstep.csv").exists()


def test_splits_and_analysis_tables(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    splits = pd.read_parquet(results / "splits/mini.parquet")
    assert set(splits["split"]) <= {"train", "validation", "test"} and len(splits) == 2 * PER_CLASS
    asr = pd.read_csv(results / "tables/asr.csv")
    assert set(asr["split"]) == {"test"}
    assert (asr["n"] == (splits["split"].eq("test") & splits["harmful"]).sum()).all()
    n_test = int((splits["split"].eq("test") & splits["harmful"]).sum())
    # per reference: one row per model, their mean and the pooled estimate, one dataset
    headline = pd.read_csv(results / "tables/headline.csv")
    assert list(dict.fromkeys(headline["reference"])) == ["direct", "tool_offered"]
    for _, block in headline.groupby("reference"):
        assert sorted(block["model"]) == sorted([*MODELS, MEAN_MODEL, POOLED])
    assert set(headline["dataset"]) == {"mini"} and set(headline["judge"]) == {cfg["headline_judge"]}
    per_model = ~headline["model"].isin([MEAN_MODEL, POOLED])
    assert (headline.loc[per_model, "n"] == n_test).all()
    assert (headline.loc[headline["model"] == POOLED, "n"] == n_test * len(MODELS)).all()
    selection = pd.read_csv(results / "tables/selection.csv")
    assert sorted(selection["model"]) == sorted(MODELS) and selection["layer"].between(0, N_LAYERS - 1).all()
    for name in ("representation", "asr_by_category", "relative_vectors", "tool_gap"):
        assert set(pd.read_csv(results / f"tables/{name}.csv")["model"]) == set(MODELS), name
    gap = pd.read_csv(results / "tables/tool_gap.csv")
    assert set(gap["intervention"]) == {
        "add_a0", "add_a4", "random_a4_s0", "shift_a4_text_trail", "relative_a4_text_trail",
        "covrandom_a4_s0", "add_orth_a4",
    }  # fmt: skip
    relative = pd.read_csv(results / "tables/relative_vectors.csv")
    ok = relative[relative["status"] == "ok"]
    assert {"direct", "text_trail", "tool_offered"} <= set(ok["reference"]) and "tool" not in set(
        ok["reference"]
    )
    assert (ok["layer"].to_numpy() == selection.set_index("model").loc[ok["model"], "layer"].to_numpy()).all()
    costs = pd.read_csv(results / "tables/intervention_cost.csv")
    assert set(costs["model"]) == set(MODELS) and set(costs["intervention"]) == set(INTERVENTIONS)
    assert set(costs["split"]) == {"validation", "test"}  # validation bounds alpha, test is reported
    assert (costs.loc[costs["intervention"] == "add_a0", "kl_mean"] == 0).all()  # alpha 0 costs nothing
    by_scale = pd.read_csv(results / "tables/asr_by_scale.csv")
    assert set(by_scale["condition"]) == set(ZOOM_CONDITIONS) and (by_scale["scale_min"] > 1.5).all()
    assert (by_scale.groupby(["model", "judge", "condition"])["n"].sum() == n_test).all()
    contrasts = pd.read_csv(results / "tables/contrasts.csv")
    pairs = set(zip(contrasts["claim"], contrasts["intervention_b"], strict=True))
    assert pairs == {
        ("tool_use_lowers_asr", "none"),
        ("tool_offered_is_not_tool_use", "none"),
        *((claim.id, "none") for claim in CLAIM2),
        ("removing_shift_raises_asr", "ablate"),
        ("adding_shift_beats_random", "random_a4_s0"),
        ("refusal_ablation_raises_asr", "ablate_refusal_tool_blank"),
        ("adding_shift_beats_control_shift", "shift_a4_text_trail"),
        ("adding_shift_beats_covariance_random", "covrandom_a4_s0"),
        ("relative_shift_lowers_asr", "relative_a4_text_trail"),
        ("removing_shift_raises_asr_more_in_tool", "ablate"),
        ("removing_shift_beats_random_removal", "ablate"),
        ("orthogonal_component_lowers_asr", "add_orth_a4"),
        ("adding_shift_beats_orthogonal_component", "add_orth_a4"),
    }
    did = contrasts[contrasts["test"] == "did_permutation_exact"]
    assert set(did["claim"]) == {"removing_shift_raises_asr_more_in_tool"} and did["test_p"].notna().all()
    assert (contrasts["n"] == n_test).all() and contrasts["verdict"].notna().all()
    tost = contrasts[contrasts["test"] == "tost"]
    assert set(tost["claim"]) == {c.id for c in CLAIM2 if c.test == "tost"} and tost["tost_p"].notna().all()
    assert (
        set(tost["margin"]) == {0.1} and contrasts.loc[contrasts["test"] == "mcnemar", "tost_p"].isna().all()
    )
    tokens = pd.read_csv(results / "tables/tokens_model.csv")
    assert set(tokens["model"]) == set(MODELS) and "n_after_instruction" in set(tokens["term"])
    counts = pd.read_csv(results / "tables/token_counts.csv")
    assert set(counts["condition"]) == set(CONDITIONS) - {"free"}
    assert set(counts["family"]) == {"qwen2_5_vl", "llava"}
    for model in MODELS:
        vectors = xr.open_dataset(results / f"vectors/{model}/mini.nc", engine="h5netcdf")
        assert 0 <= vectors.attrs["selected_layer"] < N_LAYERS


def test_every_judge_scores_every_response(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    assert cfg["judges"] == ["keyword", "llamaguard", "harmbench"]
    sizes = set()
    for judge in cfg["judges"]:
        for model in MODELS:
            judged = read_table(results / f"judged/{judge}/{model}/mini.parquet", JUDGED_COLUMNS)
            assert set(judged["judge"]) == {judge}
            sizes.add(len(judged))
    assert len(sizes) == 1
    pairwise = pd.read_csv(results / "tables/judge_agreement.csv")
    assert len(pairwise) == 3 and pairwise["n"].eq(sizes.pop() * len(MODELS)).all()
    by_judge = pd.read_csv(results / "tables/asr_by_judge.csv")
    assert {f"asr_{j}" for j in cfg["judges"]} <= set(by_judge.columns)


def test_benchmarks_and_logs_are_written(dag):
    work, cfg = dag
    results = Path(cfg["results"])
    assert pd.read_csv(results / "benchmarks/book.tsv", sep="\t")["s"].gt(0).all()
    infer_logs = results / "logs/infer"  # one per (model, dataset, shard) job
    logs = sorted(p.relative_to(infer_logs).as_posix() for p in infer_logs.rglob("*.log"))
    assert logs == [f"{model}/mini/{shard}.log" for model in sorted(MODELS) for shard in ("000", "001")]


def test_second_run_has_nothing_to_do(dag):
    work, cfg = dag
    proc = snakemake(work, "--configfile", "config.yaml", "--cores", "1", "--dry-run", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_with_one_line(tmp_path):
    cfg = reduced_config(tmp_path)
    cfg["conditions"] = ["direct", "tool", "tool_sparkly"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "1", "--dry-run", timeout=300)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "tool_sparkly" in line]
    assert lines == [
        "config: conditions.2: unknown value 'tool_sparkly' (known: direct, tool_offered, tool, tool_unsafe, "
        "tool_benign, tool_blank, tool_blank_x0.25, tool_blank_x4, text_trail, text_prior, image_no_tool, "
        "image_after, image_turn, text_trail_long, free)"
    ]
    assert not (tmp_path / "results").exists()


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config" / "config.yaml"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakefiles_are_formatted():
    snakefmt = str(Path(sys.executable).parent / "snakefmt")
    proc = subprocess.run(
        [snakefmt, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
