"""Validation of run directories written by any backend: good files pass, each kind of damage is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolshift.checks.run_contracts import identity_from_path, main, run_problems, validate_run
from toolshift.contracts import PROMPT_COLUMNS, write_jsonl, write_parquet
from toolshift.errors import ConfigError, ContractError
from toolshift.inference.runner import attach_prompt_fields
from toolshift.models.activations import read_activations, to_dataset, write_activations

MODEL, DATASET, CONDITION = "m1", "mini", "direct"
IDS = ["p0", "p1", "p2", "p3"]


@pytest.fixture
def prompts_path(tmp_path):
    prompts = pd.DataFrame(
        {
            "prompt_id": IDS,
            "dataset": DATASET,
            "category": ["a", "a", "b", "b"],
            "harmful": [True, False, True, False],
            "question": "q",
            "instruction": "i",
            "image": [f"data/{DATASET}/images/{p}.png" for p in IDS],
        }
    )[list(PROMPT_COLUMNS)]
    path = tmp_path / f"results/data/{DATASET}/prompts.parquet"
    write_parquet(prompts, path)
    return path


def good_responses(prompts_path, *, condition=CONDITION, intervention="none") -> pd.DataFrame:
    generated = pd.DataFrame(
        {
            "prompt_id": IDS,
            "condition": condition,
            "response": [f"answer {p}" for p in IDS],
            "n_prompt_tokens": [10, 11, 12, 13],
            "n_new_tokens": [3, 3, -1, 3],
            "max_new_tokens": 8,
            "do_sample": False,
            "n_images": 1,
            "n_visual_tokens": [4, 4, 4, -1],
            "n_text_tokens": [6, 7, 8, -1],
            "n_after_instruction": [3, 3, 3, -1],
            "n_visual_after_instruction": [0, 0, 0, -1],
        }
    )
    return attach_prompt_fields(generated, pd.read_parquet(prompts_path), MODEL, intervention)


def good_activations(ids=IDS, **attrs):
    states = np.random.default_rng(0).standard_normal((len(ids), 3, 5)).astype(np.float32)
    return to_dataset(states, ids, {"model": MODEL, "revision": "r", "condition": CONDITION, **attrs})


@pytest.fixture
def run_dir(tmp_path, prompts_path):
    run = tmp_path / f"results/runs/{MODEL}/{DATASET}/{CONDITION}"
    write_parquet(good_responses(prompts_path), run / "responses.parquet")
    write_activations(good_activations(), run / "activations.nc")
    return run


def problems(run_dir, prompts_path, **kw):
    args = {"condition": CONDITION, "model": MODEL, "require_activations": True, **kw}
    return run_problems(run_dir, prompts_path, **args)


def rewrite(run_dir, df):
    write_parquet(df, run_dir / "responses.parquet")


def test_good_run_passes(run_dir, prompts_path, capsys):
    assert problems(run_dir, prompts_path) == []
    validate_run(run_dir, prompts_path, condition=CONDITION, model=MODEL, require_activations=True)
    assert main([str(run_dir), "--prompts", str(prompts_path), "--activations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and "activations.nc" in out and "condition direct" in out


def test_responses_only_run_passes_unless_activations_are_required(run_dir, prompts_path):
    (run_dir / "activations.nc").unlink()
    assert problems(run_dir, prompts_path, require_activations=False) == []
    (problem,) = problems(run_dir, prompts_path)
    assert problem.endswith("activations.nc: file not found (this backend must write activations)")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda df: df.drop(columns=["n_new_tokens"]), "missing column(s) n_new_tokens"),
        (lambda df: df.iloc[:3], "1 prompt_id(s) missing, first 'p3'"),
        (
            lambda df: pd.concat([df, df.iloc[[0]].assign(prompt_id="zz")], ignore_index=True),
            "1 prompt_id(s) not in the prompts/episodes, first 'zz'",
        ),
        (lambda df: pd.concat([df, df.iloc[[1]]], ignore_index=True), "appear more than once, first 'p1'"),
        (lambda df: df.assign(condition="tool"), "column condition holds 'tool', expected 'direct'"),
        (lambda df: df.assign(model="m2"), "column model holds 'm2', expected 'm1'"),
        (lambda df: df.assign(intervention="ablate"), "column intervention holds 'ablate', expected 'none'"),
        (
            lambda df: df.assign(response=[None, "a", "b", "c"]),
            "1 response(s) missing (NaN/None), first 'p0'",
        ),
        (lambda df: df.assign(harmful=df["harmful"].astype(str)), "column harmful must be boolean"),
        (lambda df: df.assign(n_new_tokens=df["n_new_tokens"] * 1.0), "column n_new_tokens must be integer"),
        (lambda df: df.assign(n_prompt_tokens=-5), "column n_prompt_tokens has values below -1"),
        (lambda df: df.assign(n_images=-2), "column n_images has values below -1"),
        (lambda df: df.assign(n_after_instruction=1.0), "column n_after_instruction must be integer"),
        (
            lambda df: df.assign(n_text_tokens=[6, 7, 9, -1]),
            "token counts do not add up (n_visual_tokens + n_text_tokens != n_prompt_tokens) in 1 row(s), "
            "first 'p2'",
        ),
        (
            lambda df: df.assign(n_after_instruction=[3, 30, 3, -1]),
            "(n_after_instruction > n_prompt_tokens) in 1 row(s), first 'p1'",
        ),
        (
            lambda df: df.assign(n_visual_after_instruction=[4, 0, 0, -1], n_after_instruction=[3, 3, 3, -1]),
            "(n_visual_after_instruction > n_after_instruction or n_visual_tokens) in 1 row(s), first 'p0'",
        ),
        (lambda df: df.assign(prompt_id=[0, 1, 2, 3]), "column prompt_id must hold strings"),
        (
            lambda df: df.assign(harmful=~df["harmful"]),
            "harmful of prompt_id 'p0' is False, the prompts table says True (4 row(s) differ)",
        ),
    ],
)
def test_damaged_responses_are_named(run_dir, prompts_path, damage, message):
    rewrite(run_dir, damage(good_responses(prompts_path)))
    found = problems(run_dir, prompts_path)
    assert any(message in p for p in found), found
    assert all(p.startswith(str(run_dir)) for p in found if "activations" not in p)
    with pytest.raises(ContractError, match="responses.parquet"):
        validate_run(run_dir, prompts_path, condition=CONDITION, model=MODEL, require_activations=True)


def test_truncated_activations_are_named(run_dir, prompts_path):
    path = run_dir / "activations.nc"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (problem,) = problems(run_dir, prompts_path)
    assert problem.startswith(str(path)) and "cannot be read as netCDF" in problem


def test_activation_ids_and_attrs_must_match(run_dir, prompts_path):
    write_activations(good_activations(IDS[:3], condition="tool"), run_dir / "activations.nc")
    found = problems(run_dir, prompts_path)
    assert any("attr condition is 'tool', expected 'direct'" in p for p in found), found
    assert any("1 prompt_id(s) of responses.parquet missing, first 'p3'" in p for p in found), found


def test_non_finite_activations_are_named(run_dir, prompts_path):
    ds = good_activations()
    ds["resid"][0, 0, 0] = np.nan
    write_activations(ds, run_dir / "activations.nc")
    (problem,) = problems(run_dir, prompts_path)
    assert "resid holds 1 non-finite value(s)" in problem
    assert read_activations(run_dir / "activations.nc")["resid"].shape == (4, 3, 5)


def test_episodes_restrict_the_expected_prompts(run_dir, prompts_path, tmp_path):
    episodes = tmp_path / "episodes.jsonl"
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    write_jsonl(
        [{"prompt_id": p, "condition": CONDITION, "messages": messages, "meta": {}} for p in IDS[:2]],
        episodes,
    )
    found = problems(run_dir, prompts_path, episodes_path=episodes, require_activations=False)
    assert any("2 prompt_id(s) not in the prompts/episodes, first 'p2'" in p for p in found), found


def test_validate_run_reports_the_first_problem_and_the_count(run_dir, prompts_path):
    rewrite(run_dir, good_responses(prompts_path).assign(condition="tool", model="m2"))
    with pytest.raises(
        ContractError, match=r"expected 'direct' \(from the path\) \(and 1 more problem\(s\)\)"
    ):
        validate_run(run_dir, prompts_path, condition=CONDITION, model=MODEL, require_activations=False)


def test_cli_prints_each_problem_and_fails(run_dir, prompts_path, capsys):
    rewrite(run_dir, good_responses(prompts_path).iloc[:2])
    assert main([str(run_dir), "--prompts", str(prompts_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"PROBLEM: {run_dir / 'responses.parquet'}: 2 prompt_id(s) missing, first 'p2'",
        f"PROBLEM: {run_dir / 'activations.nc'}: 2 prompt_id(s) not in responses.parquet, first 'p2'",
    ]


def test_cli_reads_the_identity_of_an_intervention_run(tmp_path, prompts_path, capsys):
    run = tmp_path / f"results/interventions/{MODEL}/{DATASET}/subtract"
    rewrite(run, good_responses(prompts_path, condition="tool", intervention="subtract"))
    assert identity_from_path(run) == (MODEL, "tool", "subtract")
    assert main([str(run), "--prompts", str(prompts_path)]) == 0
    assert "intervention subtract" in capsys.readouterr().out


def test_identity_needs_a_known_layout(tmp_path):
    with pytest.raises(ConfigError, match="give --model and --condition"):
        identity_from_path(tmp_path / "a" / "b")


def test_missing_responses_and_bad_prompts(tmp_path, prompts_path):
    empty = tmp_path / "results/runs/m1/mini/direct"
    assert problems(empty, prompts_path) == [f"{empty / 'responses.parquet'}: file not found"]
    bad = tmp_path / "bad.parquet"
    write_parquet(pd.DataFrame({"prompt_id": ["x"]}), bad)
    (problem,) = problems(empty, bad)
    assert problem.startswith("prompts: ") and "missing column(s)" in problem
