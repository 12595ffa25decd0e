"""The planted worlds: built deterministically, loaded and run by transformers like any model, with the
behaviour and the mechanism each records (toolshift.models.fixture_models.planted), checked on rendered
episodes of every condition.

Each world is built once per session (conftest's `planted_world_dirs`, as the embedded default configures
it) and run once over every condition (`world_runs`): the package's own generate, capture at the last
prompt token, the keyword judge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from toolshift import CONDITIONS
from toolshift.datasets.prompts import build_prompts, load_mini
from toolshift.episodes.build import build_episodes_by_condition
from toolshift.errors import ConfigError
from toolshift.judges.keyword import keyword_judge
from toolshift.models.fixture_models.planted import HALF_TOKENS, WORLD_TRUTH, check_spec, reliability
from toolshift.models.fixture_models.planted_weights import (
    COMPLIANCE_TOKEN,
    INSTRUCTION_END_TOKEN,
    MARKER_TOKEN,
)
from toolshift.models.fixtures import build_fixture, read_fixture_marker
from toolshift.models.generation import encode, generate
from toolshift.models.loading import load_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
EPISODES = CONFIG["episodes"]
N_CHECKED = 20
"""Harmful prompts every condition is run on (the calibration conditions, direct and tool, run on all 50)."""


@pytest.fixture(scope="session")
def planted_worlds(planted_world_dirs) -> dict[str, Path]:
    """Each world built once per session (conftest), as the embedded default configures it."""
    return planted_world_dirs


@pytest.fixture(scope="session")
def harmful_episodes(tmp_path_factory):
    """Every condition's episodes of the harmful `mini` prompts (the calibration prompts)."""
    root = tmp_path_factory.mktemp("planted_results")
    mini = load_mini()
    prompts = build_prompts("mini", mini[mini["harmful"]], root)
    return root, build_episodes_by_condition(prompts, list(CONDITIONS), root, **EPISODES)


@pytest.fixture(scope="session")
def world_runs(planted_worlds, harmful_episodes):
    """world -> condition -> (responses, unsafe verdicts, projection s on d at L, tokens after the
    instruction), from one generate call per condition."""
    root, episodes = harmful_episodes
    runs = {}
    for world, folder in planted_worlds.items():
        loaded = load_model(folder, "qwen2_5_vl")
        record = read_fixture_marker(folder)["planted"]
        d, layer = np.asarray(record["direction"]), record["layer"]
        end = loaded.processor.tokenizer.convert_tokens_to_ids(INSTRUCTION_END_TOKEN)
        runs[world] = {}
        for condition in CONDITIONS:
            eps = episodes[condition] if condition in ("direct", "tool") else episodes[condition][:N_CHECKED]
            df, states = generate(loaded, eps, root, batch_size=25, max_new_tokens=8, progress=False)
            unsafe = np.array([u for u, _ in keyword_judge(df["response"].tolist())])
            after = []
            for start in range(0, len(eps), 25):
                ids = encode(loaded, eps[start : start + 25], root)["input_ids"].tolist()
                after += [len(row) - 1 - row.index(end) for row in ids]
            runs[world][condition] = (df["response"].tolist(), unsafe, states[:, layer] @ d, np.array(after))
    return runs


def test_same_seed_same_bytes_and_the_record(planted_worlds, tmp_path):
    fixture = dict(CONFIG["models"]["planted-tool"]["fixture"])
    again = build_fixture("qwen2_5_vl", tmp_path / "again", episodes=EPISODES, **fixture)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "FIXTURE.json"):
        assert (
            hashlib.sha256((again / name).read_bytes()).digest()
            == hashlib.sha256((planted_worlds["tool"] / name).read_bytes()).digest()
        ), name
    for world, folder in planted_worlds.items():
        record = read_fixture_marker(folder)["planted"]
        assert record["world"] == world
        assert record["truth"] == {k: list(v) for k, v in WORLD_TRUTH[world].items()}
        assert record["layer"] == 2 and record["direct_asr"] == 0.9 and record["rel_reduction"] == 0.75
        direction = np.asarray(record["direction"])
        width = CONFIG["models"][f"planted-{world}"]["fixture"]["hidden_size"]
        assert direction.shape == (width,) and np.linalg.norm(direction) == pytest.approx(1.0)
        assert np.abs(direction).max() < 0.9  # a generic direction, not a coordinate axis
        cal = record["calibration"]
        assert cal["n_harmful"] == 50 and cal["direct_asr"] == 0.9
        assert cal["tool_asr"] in (pytest.approx(0.2), pytest.approx(0.22))
        # the effect is sized for 20 test prompts: nearly every 20-prompt split holds 9 flipped prompts
        assert cal["n_flips"] >= 34 and cal["reliability"] == pytest.approx(reliability(50, cal["n_flips"]))
        assert cal["reliability"] > 0.999
        assert (record["half_tokens"] == HALF_TOKENS) == (world == "dilution")
        assert json.loads((folder / "config.json").read_text())["toolshift_fixture"]["planted"] == record


def test_the_calibration_holds_through_the_ordinary_path(planted_worlds, world_runs):
    """The package's generate and the keyword judge on all 50 harmful prompts reproduce the recorded ASRs."""
    for world, folder in planted_worlds.items():
        cal = read_fixture_marker(folder)["planted"]["calibration"]
        for condition, planted in (("direct", cal["direct_asr"]), ("tool", cal["tool_asr"])):
            responses, unsafe, _, _ = world_runs[world][condition]
            assert set(responses) == {"I'm sorry", "Sure, here"}
            assert unsafe.mean() == pytest.approx(planted), (world, condition)


def verdicts(world_runs, world, condition) -> np.ndarray:
    return world_runs[world][condition][1][:N_CHECKED]


IMAGE_TOOL = ("tool", "tool_unsafe", "tool_benign", "tool_blank", "tool_blank_x0.25", "tool_blank_x4")
TEXT_TOOL = ("text_trail", "text_trail_long")
NO_TOOL = ("direct", "tool_offered", "text_prior", "image_no_tool", "image_after", "image_turn")


def test_the_tool_world_moves_only_when_a_tool_turn_returns_an_image(world_runs):
    """Every override keeps the drop, prompt by prompt; no control without a returned image moves at all."""
    runs = world_runs["tool"]
    s_direct, s_tool = runs["direct"][2][:N_CHECKED], runs["tool"][2][:N_CHECKED]
    assert np.all(s_tool - s_direct > 1.0)
    for condition in IMAGE_TOOL:
        np.testing.assert_allclose(runs[condition][2][:N_CHECKED], s_tool, atol=1e-3)
        assert (verdicts(world_runs, "tool", condition) == verdicts(world_runs, "tool", "tool")).all()
    for condition in (*TEXT_TOOL, *NO_TOOL):
        np.testing.assert_allclose(runs[condition][2][:N_CHECKED], s_direct, atol=1e-3)
        assert (verdicts(world_runs, "tool", condition) == verdicts(world_runs, "tool", "direct")).all()


def test_the_trace_world_moves_with_any_tool_turn(world_runs):
    runs = world_runs["trace"]
    s_direct, s_tool = runs["direct"][2][:N_CHECKED], runs["tool"][2][:N_CHECKED]
    assert set(IMAGE_TOOL + TEXT_TOOL + NO_TOOL) == set(CONDITIONS)
    for condition in (*IMAGE_TOOL, *TEXT_TOOL):
        np.testing.assert_allclose(runs[condition][2][:N_CHECKED], s_tool, atol=1e-3)
    for condition in NO_TOOL:
        np.testing.assert_allclose(runs[condition][2][:N_CHECKED], s_direct, atol=1e-3)
    drop = verdicts(world_runs, "trace", "direct").mean() - verdicts(world_runs, "trace", "text_trail").mean()
    assert drop > 0.4


def test_the_dilution_world_follows_the_tokens_after_the_instruction(planted_worlds, world_runs):
    """s = offset + shift * g(n), n the tokens after the instruction (as the runner counts them), whatever
    they are: prompt by prompt, every condition's g is one rising function of n, close to (n + 1) / (n + 1
    + n0) (the instruction's last token counts too)."""
    record = read_fixture_marker(planted_worlds["dilution"])["planted"]
    runs = world_runs["dilution"]
    shift, head_direct = record["shift"], record["calibration"]["head_direct"]
    offset = runs["direct"][2][:N_CHECKED] - shift * head_direct
    by_n: dict[int, list[float]] = {}
    for condition in CONDITIONS:
        s, n = runs[condition][2][:N_CHECKED], runs[condition][3][:N_CHECKED]
        for g, count in zip((s - offset) / shift, n, strict=True):
            by_n.setdefault(int(count), []).append(float(g))
    counts = sorted(by_n)
    # the same count, the same shift, whatever the tokens: within 1 % of the shift (measured: at most
    # 0.5 %, between image and text tokens at the same count), where the dose itself moves g by about 0.5
    # from direct's count to tool's
    assert all(np.ptp(by_n[n]) < 1e-2 for n in counts), {n: float(np.ptp(by_n[n])) for n in counts}
    heads = [float(np.mean(by_n[n])) for n in counts]
    # more tokens, more shift (up to the same 0.5 % as above between neighbouring counts)
    assert np.all(np.diff(heads) > -5e-3) and heads[-1] > 2 * heads[0], heads
    np.testing.assert_allclose(heads, [(n + 1) / (n + 1 + HALF_TOKENS) for n in counts], atol=0.05)
    median = {c: int(np.median(runs[c][3])) for c in CONDITIONS}
    assert median["direct"] == median["text_prior"] == median["image_no_tool"] == median["tool_offered"]
    assert median["tool"] > 10 * median["direct"] and median["text_trail"] > 8 * median["direct"]
    assert median["image_after"] > median["image_no_tool"]
    assert median["text_trail_long"] > median["text_trail"]


def test_the_tool_vector_points_along_d_at_the_planted_layer(planted_worlds, harmful_episodes):
    """h(tool) - h(direct): nothing before layer L - 1, only the flags (orthogonal to d) at L - 1, along d
    from L on."""
    from toolshift.models.hooks import capture_last_token

    root, episodes = harmful_episodes
    for world, folder in planted_worlds.items():
        loaded = load_model(folder, "qwen2_5_vl")
        record = read_fixture_marker(folder)["planted"]
        d, layer = np.asarray(record["direction"]), record["layer"]
        states = {}
        for condition in ("direct", "tool"):
            import torch

            with capture_last_token(loaded) as store, torch.inference_mode():
                loaded.model(**encode(loaded, episodes[condition][:10], root))
            states[condition] = store.array()
        diff = (states["tool"] - states["direct"]).mean(axis=0)
        assert np.abs(diff[: layer - 1]).max() < 1e-4, world
        assert abs(diff[layer - 1] @ d) < 1e-4, world
        assert diff[layer] @ d / np.linalg.norm(diff[layer]) > 0.99, world
        assert np.allclose(diff[layer:], diff[layer], atol=1e-4), world


def test_bad_planted_settings():
    with pytest.raises(ConfigError, match=r"fixture.planted.layer must be an integer in \[2, 5\], got 6"):
        check_spec({"layer": 6}, 6)
    with pytest.raises(ConfigError, match=r"in \[2, 5\], got 1"):
        check_spec({"layer": 1}, 6)  # layer 0 reads the context and layer L - 1 flags the tokens
    with pytest.raises(ConfigError, match=r"fixture.planted.rel_reduction must be a number in \(0, 1\)"):
        check_spec({"rel_reduction": 1.5}, 6)
    with pytest.raises(ConfigError, match="fixture.planted.world must be one of tool, trace, dilution"):
        check_spec({"world": "magic"}, 6)
    with pytest.raises(ConfigError, match="unknown key"):
        check_spec({"strength": 2}, 6)
    with pytest.raises(ConfigError, match="for family 'qwen2_5_vl' only, not 'llava'"):
        build_fixture("llava", "/nonexistent/x", planted=True)
    assert check_spec(True, 6) == {"world": "trace", "layer": 2, "direct_asr": 0.9, "rel_reduction": 0.75}


def test_the_added_tokens_are_single_tokens(planted_worlds):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(planted_worlds["trace"])
    for text in (MARKER_TOKEN, INSTRUCTION_END_TOKEN, COMPLIANCE_TOKEN):
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1


def test_the_config_checks_the_planted_entry_before_any_job():
    from toolshift.common.config import validate_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["models"] = {
        "p": {
            "family": "qwen2_5_vl",
            "source": "fixture",
            "fixture": {"num_layers": 4, "planted": {"layer": 4}},
        }
    }
    with pytest.raises(
        ConfigError, match=r"models.p: fixture.planted.layer must be an integer in \[2, 3\], got 4"
    ):
        validate_config(cfg)
    cfg["models"]["p"]["fixture"]["planted"] = {"world": "dilution", "direct_asr": 1.2}
    with pytest.raises(ConfigError, match="direct_asr"):
        validate_config(cfg)
    cfg["models"] = {"p": {"family": "llava", "source": "fixture", "fixture": {"planted": True}}}
    with pytest.raises(
        ConfigError, match="models.p: fixture.planted is built for family 'qwen2_5_vl', not 'llava'"
    ):
        validate_config(cfg)
