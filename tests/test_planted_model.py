"""The planted-mechanism fixture: built deterministically, loaded and run by transformers like any model,
with the behaviour and the mechanism it records (toolshift.models.fixture_models.planted)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toolshift.datasets.prompts import build_prompts, load_mini
from toolshift.episodes.build import build_episodes_by_condition
from toolshift.errors import ConfigError
from toolshift.judges.keyword import keyword_judge
from toolshift.models.fixture_models.planted import check_spec
from toolshift.models.fixtures import build_fixture, read_fixture_marker
from toolshift.models.generation import encode, generate
from toolshift.models.hooks import capture_last_token
from toolshift.models.loading import load_model

pytestmark = pytest.mark.slow

EPISODES = {"bbox_policy": "text_lines", "zoom_lines": 2, "zoom_resize": "pixels"}
SIZE = {"hidden_size": 64, "num_layers": 6, "num_heads": 2}


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "model"
    return build_fixture("qwen2_5_vl", out, seed=2, planted=True, episodes=EPISODES, **SIZE)


@pytest.fixture(scope="module")
def harmful_episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted_results")
    mini = load_mini()
    prompts = build_prompts("mini", mini[mini["harmful"]], root)
    return root, build_episodes_by_condition(prompts, ["direct", "tool_offered", "tool"], root, **EPISODES)


def test_same_seed_same_bytes_and_the_record(planted_dir, tmp_path):
    again = build_fixture("qwen2_5_vl", tmp_path / "again", seed=2, planted=True, episodes=EPISODES, **SIZE)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "FIXTURE.json"):
        assert (
            hashlib.sha256((again / name).read_bytes()).digest()
            == hashlib.sha256((planted_dir / name).read_bytes()).digest()
        ), name
    record = read_fixture_marker(planted_dir)["planted"]
    assert record["layer"] == 2 and record["direct_asr"] == 0.8 and record["rel_reduction"] == 0.3
    direction = np.asarray(record["direction"])
    assert direction.shape == (64,) and np.linalg.norm(direction) == pytest.approx(1.0)
    assert np.abs(direction).max() < 0.9  # a generic direction, not a coordinate axis
    cal = record["calibration"]
    assert cal["n_harmful"] == 50 and cal["direct_asr"] == 0.8 and cal["tool_asr"] == pytest.approx(0.56)
    assert json.loads((planted_dir / "config.json").read_text())["toolshift_fixture"]["planted"] == record


def test_it_refuses_as_planted_through_the_ordinary_path(planted_dir, harmful_episodes):
    """Generated with the package's own generate (no hook): ASR 0.8 in direct and tool_offered (being
    offered the tool is not the mechanism), 0.56 in tool; the keyword judge reads the answers."""
    root, episodes = harmful_episodes
    loaded = load_model(planted_dir, "qwen2_5_vl")
    asr = {}
    for condition, eps in episodes.items():
        df, _ = generate(loaded, eps, root, batch_size=25, max_new_tokens=8, progress=False)
        assert set(df["response"]) <= {"I'm sorry", "Sure, here"}
        verdicts = keyword_judge(df["response"].tolist())
        asr[condition] = float(np.mean([unsafe for unsafe, _ in verdicts]))
    assert asr == {"direct": 0.8, "tool_offered": 0.8, "tool": pytest.approx(0.56)}


def test_the_tool_turn_moves_the_residual_along_d_at_the_planted_layer(planted_dir, harmful_episodes):
    root, episodes = harmful_episodes
    loaded = load_model(planted_dir, "qwen2_5_vl")
    record = read_fixture_marker(planted_dir)["planted"]
    d = np.asarray(record["direction"])
    states = {}
    for condition in ("direct", "tool"):
        with capture_last_token(loaded) as store, torch.inference_mode():
            loaded.model(**encode(loaded, episodes[condition][:10], root))
        states[condition] = store.array()  # (prompts, layers, hidden)
    diff = (states["tool"] - states["direct"]).mean(axis=0)
    layer = record["layer"]
    assert np.abs(diff[:layer]).max() < 1e-5  # nothing before the planted layer
    cos = diff[layer] @ d / np.linalg.norm(diff[layer])
    assert cos > 0.999
    assert np.allclose(diff[layer:], diff[layer], atol=1e-5)  # and nothing after it


def test_bad_planted_settings():
    with pytest.raises(ConfigError, match=r"fixture.planted.layer must be an integer in \[0, 5\], got 6"):
        check_spec({"layer": 6}, 6)
    with pytest.raises(ConfigError, match=r"fixture.planted.rel_reduction must be a number in \(0, 1\)"):
        check_spec({"rel_reduction": 1.5}, 6)
    with pytest.raises(ConfigError, match="unknown key"):
        check_spec({"strength": 2}, 6)
    with pytest.raises(ConfigError, match="for family 'qwen2_5_vl' only, not 'llava'"):
        build_fixture("llava", "/nonexistent/x", planted=True)


def test_the_config_checks_the_planted_entry_before_any_job():
    import yaml

    from toolshift.common.config import validate_config

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    cfg["models"] = {
        "p": {
            "family": "qwen2_5_vl",
            "source": "fixture",
            "fixture": {"num_layers": 4, "planted": {"layer": 4}},
        }
    }
    with pytest.raises(
        ConfigError, match=r"models.p: fixture.planted.layer must be an integer in \[0, 3\], got 4"
    ):
        validate_config(cfg)
    cfg["models"] = {"p": {"family": "llava", "source": "fixture", "fixture": {"planted": True}}}
    with pytest.raises(
        ConfigError, match="models.p: fixture.planted is built for family 'qwen2_5_vl', not 'llava'"
    ):
        validate_config(cfg)
