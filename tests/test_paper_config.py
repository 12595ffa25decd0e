"""config/paper.yaml: valid, revisions pinned or flagged, its full DAG builds offline with the right jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolshift.analysis.interventions import transfer_sources
from toolshift.common.config import load_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_config(PAPER)


def test_paper_config_is_valid_and_uses_real_models(paper):
    assert all(entry["source"] == "hub" for entry in paper["models"].values())
    families = {entry["family"] for entry in paper["models"].values()}
    assert families == {
        "qwen2_5_vl",
        "deepeyes",
        "qwen3_vl",
        "llava_onevision",
        "internvl",
        "gemma3",
        "smolvlm",
        "chain_of_focus",
        "mini_o3",
        "pixel_reasoner",
        "thyme",
        "deepeyes_v2",
        "openthinkimg",
    }
    for entry in paper["models"].values():
        revision = entry["revision"]
        assert re.fullmatch(r"[0-9a-f]{40}", revision) or revision == "main", revision
    assert "free" in paper["conditions"]


def test_paper_models_and_judges_are_pinned_where_a_public_hash_is_known(paper):
    """Pinned from public scripts that pin these hub ids (see docs/models.md); an entry left at a branch
    is flagged by the book's provenance chapter (tests/test_report_sources.py)."""
    models = {e["hub_id"]: e["revision"] for e in paper["models"].values()}
    assert models["ChenShawn/DeepEyes-7B"] == "3b31e4b342592d14cb12bb8434a6ea55e9cd78c8"
    assert models["OpenGVLab/InternVL3-8B-hf"] == "259a3b64a14623c0ec91a045cb43f7c5af5fa6af"
    judges = {e["hub_id"]: e["revision"] for e in paper["judge_models"].values()}
    assert judges["meta-llama/Llama-Guard-3-8B"] == "7327bd9f6efbbe6101dc6cc4736302b3cbb6e425"
    assert judges["cais/HarmBench-Llama-2-13b-cls"] == "bda705349d1144fa618770bea64d99ce54e3835b"
    assert models["xintongzhang/CoF-rl-model-7b"] == "7c34733a3b333302ea9e3f320e2be1334e471bd5"
    assert models["Mini-o3/Mini-o3-7B-v1"] == "e82da9a10cca125a1e26c27760ef80840c0fbcd1"
    # no public script pins these (../shared/notes/tool-formats.md): left at main, and flagged in the book
    unpinned = {
        "TIGER-Lab/PixelReasoner-RL-v1",
        "Kwai-Keye/Thyme-RL",
        "honglyhly/DeepEyesV2_7B_1031",
        "Warrieryes/OpenThinkIMG-Chart-Qwen2-2B-VL",
    }
    from toolshift.report.revisions import unpinned_markdown

    flagged = unpinned_markdown(paper)
    for hub_id, revision in [*models.items(), *judges.items()]:
        if hub_id in unpinned:
            assert revision == "main" and hub_id in flagged, hub_id
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", revision), (hub_id, revision)


@pytest.mark.e2e
def test_paper_dag_builds_offline_with_the_expected_job_counts(paper, tmp_path):
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--configfile", str(PAPER), "--directory", str(tmp_path), "--dry-run", "--quiet", "rules"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    n_models, n_datasets = len(paper["models"]), len(paper["datasets"])
    n_shards = paper["generation"]["shards"]
    sources = {d: transfer_sources(paper["interventions"], d) for d in paper["datasets"]}
    pairs = n_models * n_datasets
    assert int(counts["model"]) == n_models
    assert int(counts["prompts"]) == n_datasets
    # one model load per (model, dataset, shard) for every condition, and one for every intervention
    assert int(counts["infer"]) == pairs * n_shards
    assert int(counts["merge_runs"]) == pairs
    assert int(counts["validate_runs"]) == pairs
    assert int(counts["vectors"]) == pairs
    assert int(counts["intervene"]) == pairs * n_shards
    assert int(counts["merge_interventions"]) == pairs
    assert int(counts["transfer"]) == n_models * sum(len(s) for s in sources.values())
    assert "intervention_cost" not in counts  # the KL cost shares the intervene load
    assert int(counts["judge"]) == n_datasets * len(paper["judges"])  # a judge model loads once per dataset
    total = int(counts.pop("total"))
    assert sum(int(c) for c in counts.values()) == total and total <= 1000  # the issue-11 bound
    assert int(counts["figures"]) == n_datasets  # one set of figures per dataset, in two groups
    assert int(counts["representation_figures"]) == n_datasets
    assert int(counts["headline_figure"]) == 1
    assert int(counts["validate_figstep"]) == 1 and int(counts["validate_planted"]) == 1
    assert int(counts["book"]) == 1


def test_paper_profile_gpu_rules_declare_a_gpu():
    text = (REPO / "rules" / "inference.smk").read_text() + (REPO / "rules" / "interventions.smk").read_text()
    assert text.count("gpu=1") >= 2
    assert yaml.safe_load(PAPER.read_text())["generation"]["gpu_mem_mb"] > 0


@pytest.mark.e2e
def test_the_paper_config_runs_to_the_book(tmp_path, monkeypatch):
    """config/paper.yaml's DAG to the book, hub models replaced by fixtures, the keyword judge, every
    dataset cut to a few prompts, stand-in files where the real ones are not on disk (tests/paper_dag.py):
    a config that would fail after hours of GPU time fails here."""
    from dag import snakemake
    from paper_dag import PAPER_TEST_MODELS, PER_CLASS, prepare_paper_run

    from toolshift import OUTCOMES
    from toolshift.analysis.headline import MEAN_MODEL, POOLED
    from toolshift.analysis.vectors import read_vectors
    from toolshift.contracts import (
        ASR_TABLE_COLUMNS,
        CONTRASTS_COLUMNS,
        HEADLINE_COLUMNS,
        JUDGED_COLUMNS,
        OVER_REFUSAL_COLUMNS,
        read_table,
    )

    cfg, site = prepare_paper_run(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    proc = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-6000:]
    results, paper_cfg = Path(cfg["results"]), load_config(PAPER)
    assert (Path(cfg["book_dir"]) / "_build" / "html" / "index.html").is_file()
    assert list(cfg["datasets"]) == list(paper_cfg["datasets"]) and len(cfg["models"]) == PAPER_TEST_MODELS
    # datasets without harmless prompts borrow the refusal direction their config names
    for model in cfg["models"]:
        for dataset, options in paper_cfg["datasets"].items():
            ds = read_vectors(results / "vectors" / model / f"{dataset}.nc")
            own = ds.attrs["n_harmless"] > 0
            assert ds.attrs["refusal_source"] == (dataset if own else options["harmless"])
    # every judged table has the outcomes; asr.csv the non-answer columns; the tables the new columns
    for judge in cfg["judges"]:
        for path in (results / "judged" / judge).glob("*/*.parquet"):
            judged = read_table(path, JUDGED_COLUMNS)
            assert set(judged["outcome"]) <= set(OUTCOMES)
            assert (judged["non_answer_reason"] != "").sum() == (judged["outcome"] == "non_answer").sum()
    asr = read_table(results / "tables" / "asr.csv", ASR_TABLE_COLUMNS)
    assert set(asr["dataset"]) == set(cfg["datasets"]) and asr["non_answer_rate"].notna().all()
    refused = asr[asr["intervention"].str.startswith("ablate_refusal")]
    assert set(refused["dataset"]) == set(cfg["datasets"])  # the positive control ran everywhere
    over = read_table(results / "tables" / "over_refusal.csv", OVER_REFUSAL_COLUMNS)
    assert set(over["detector"]) == {f"keyword:{paper_cfg['keyword_list']}"}  # whatever the judges
    assert set(over["dataset"]) == {
        d for d, o in paper_cfg["datasets"].items() if o.get("harmless") == "jbb_benign"
    }
    assert (over["n"] <= PER_CLASS).all()
    contrasts = read_table(results / "tables" / "contrasts.csv", CONTRASTS_COLUMNS)
    assert list(contrasts.columns) == list(CONTRASTS_COLUMNS)
    headline = read_table(results / "tables" / "headline.csv", HEADLINE_COLUMNS)
    assert {"direct", "tool_offered"} == set(headline["reference"])
    assert {MEAN_MODEL, POOLED} <= set(headline.loc[headline["dataset"] == "all", "model"])
    assert headline["abs_reduction"].notna().any()
    # the book states the finding and shows the non-answers and the detector
    html = Path(cfg["book_dir"]) / "_build" / "html"
    intro, behaviour = (html / "intro.html").read_text(), (html / "behaviour.html").read_text()
    assert "Against tool_offered" in intro and "pooled over models and prompts" in intro
    assert "ASR, non-answers excluded" in behaviour
    assert "keyword:default" in (html / "interventions.html").read_text()
