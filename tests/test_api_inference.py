"""The OpenAI-compatible inference backend: episode rendering (images as data URLs, Hermes tool text),
the generation table, the responses contract, the cache on rerun and the key kept out of every file."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import secrets

import numpy as np
import pandas as pd
import pytest
from fake_openai_server import DEFAULT_REPLY, FakeOpenAIServer
from PIL import Image

from toolshift.checks.run_contracts import run_problems
from toolshift.contracts import RESPONSE_COLUMNS, read_responses
from toolshift.datasets.prompts import build_prompts, load_mini, write_prompts
from toolshift.episodes.build import build_episodes, write_episodes
from toolshift.errors import ConfigError
from toolshift.inference.api import generate_api, image_data_url, render_openai_messages, run_api_inference
from toolshift.inference.api_client import ApiSettings, ChatClient
from toolshift.models.adapters import FamilyAdapter
from toolshift.models.generation import GENERATION_COLUMNS

KEY_ENV = "TOOLSHIFT_TEST_KEY"
CONDITIONS = ("direct", "tool", "text_trail")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A results root with 1 harmful + 1 harmless mini prompt and the episodes of three conditions."""
    root = tmp_path_factory.mktemp("api_results")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=1)
    write_prompts(prompts, root / "data/mini/prompts.parquet")
    episodes = {}
    for condition in CONDITIONS:
        episodes[condition] = build_episodes(prompts, condition, root)
        write_episodes(episodes[condition], root / f"episodes/mini/{condition}.jsonl")
    return root, prompts, episodes


def decode(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))).convert("RGB"))


def on_disk(root, path) -> np.ndarray:
    return np.asarray(Image.open(root / path).convert("RGB"))


def message_digest(body) -> str:
    """The fake server's reply: a digest of the messages it received (to check row alignment)."""
    return hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:16]


def client_for(server, tmp_path=None, **settings) -> ChatClient:
    s = ApiSettings(
        base_url=server.base_url,
        model="fake-vlm",
        api_key_env=None,
        cache_dir=None if tmp_path is None else tmp_path / "cache",
        **settings,
    )
    return ChatClient(s)


def test_tool_episode_renders_hermes_text_and_data_urls(study):
    root, _, episodes = study
    episode = episodes["tool"][0]
    messages = render_openai_messages(episode, root)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system, user, call, tool_turn = messages
    assert isinstance(system["content"], str)
    assert (
        system["content"]
        == FamilyAdapter()._with_tools(
            [{"type": "text", "text": episode["messages"][0]["content"][0]["text"]}], episode["meta"]["tools"]
        )[0]["text"]
    )
    assert "<tools>" in system["content"] and '"zoom_in"' in system["content"]
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]
    attack = episode["messages"][1]["content"][0]["path"]
    np.testing.assert_array_equal(decode(user["content"][0]["image_url"]["url"]), on_disk(root, attack))
    bbox = episode["meta"]["bbox"]
    assert call["content"] == FamilyAdapter().tool_call_text({"name": "zoom_in", "arguments": {"bbox": bbox}})
    assert [p["type"] for p in tool_turn["content"]] == ["text", "image_url", "text"]
    assert tool_turn["content"][0]["text"] == "<tool_response>\n"
    assert tool_turn["content"][2]["text"] == "\n</tool_response>"
    zoom = episode["messages"][3]["content"][0]["path"]
    returned = decode(tool_turn["content"][1]["image_url"]["url"])
    np.testing.assert_array_equal(returned, on_disk(root, zoom))
    assert returned.shape[:2] == (bbox[3] - bbox[1], bbox[2] - bbox[0])


def test_text_trail_and_direct_render(study):
    root, _, episodes = study
    trail = render_openai_messages(episodes["text_trail"][0], root)
    assert trail[-1]["role"] == "user" and isinstance(trail[-1]["content"], str)
    assert trail[-1]["content"].startswith("<tool_response>\n") and "image_url" not in json.dumps(trail[-1])
    direct = render_openai_messages(episodes["direct"][0], root)
    assert [m["role"] for m in direct] == ["system", "user"] and "<tools>" not in direct[0]["content"]


def test_data_url_is_deterministic():
    image = Image.new("RGB", (7, 5), (10, 20, 30))
    assert image_data_url(image) == image_data_url(image.copy())
    np.testing.assert_array_equal(decode(image_data_url(image)), np.asarray(image))


@pytest.mark.parametrize("workers", [1, 3])
def test_generate_api_rows_follow_the_episodes(study, workers):
    root, _, episodes = study
    batch = [ep for c in CONDITIONS for ep in episodes[c]]
    with FakeOpenAIServer(reply=message_digest) as server:
        df = generate_api(client_for(server), batch, root, max_new_tokens=12, progress=False, workers=workers)
        sent = list(server.requests)
    assert list(df.columns) == list(GENERATION_COLUMNS) and len(df) == len(batch)
    assert list(df["prompt_id"]) == [ep["prompt_id"] for ep in batch]
    assert list(df["condition"]) == [ep["condition"] for ep in batch]
    expected = [message_digest({"messages": render_openai_messages(ep, root)}) for ep in batch]
    assert list(df["response"]) == expected  # each row holds the answer to its own episode
    assert (df["max_new_tokens"] == 12).all() and not df["do_sample"].any()
    assert (df["n_prompt_tokens"] > 0).all() and (df["n_new_tokens"] == 1).all()
    assert {r["body"]["max_tokens"] for r in sent} == {12} and {r["body"]["temperature"] for r in sent} == {
        0.0
    }
    n_images = [json.dumps(r["body"]["messages"]).count("data:image/png;base64,") for r in sent]
    assert sorted(n_images) == sorted(
        {"direct": 1, "tool": 2, "text_trail": 1}[ep["condition"]] for ep in batch
    )


def test_missing_usage_gives_minus_one(study):
    root, _, episodes = study
    with FakeOpenAIServer(usage=False) as server:
        df = generate_api(client_for(server), episodes["direct"], root, max_new_tokens=4, progress=False)
    assert (df["n_prompt_tokens"] == -1).all() and (df["n_new_tokens"] == -1).all()
    assert df["n_new_tokens"].dtype == np.int64


def test_content_filter_is_logged(study, caplog):
    root, _, episodes = study
    with FakeOpenAIServer(reply="", finish_reason="content_filter") as server:
        with caplog.at_level(logging.WARNING):
            df = generate_api(client_for(server), episodes["direct"], root, max_new_tokens=4, progress=False)
    assert (df["response"] == "").all() and "content filter" in caplog.text


def entry_for(server, **api):
    return {"backend": "openai", "api": {"base_url": server.base_url, "model": "fake-vlm", **api}}


def run(root, server, out, cache, condition="tool", **api):
    run_api_inference(
        model_name="api-vlm",
        entry=entry_for(server, **api),
        episodes_path=root / f"episodes/mini/{condition}.jsonl",
        prompts_path=root / "data/mini/prompts.parquet",
        results_root=root,
        max_new_tokens=8,
        responses_out=out,
        cache_dir=cache,
        progress=False,
    )


def test_run_writes_the_responses_contract_and_a_rerun_sends_nothing(study, tmp_path, monkeypatch):
    root, prompts, _ = study
    monkeypatch.setenv(KEY_ENV, "sk-test-" + secrets.token_hex(16))
    run_dir = tmp_path / "runs/api-vlm/mini/tool"
    out = run_dir / "responses.parquet"
    with FakeOpenAIServer() as server:
        run(root, server, out, tmp_path / "cache", api_key_env=KEY_ENV)
        first = read_responses(out)
        assert server.n_requests == len(prompts)
        out.unlink()
        run(root, server, out, tmp_path / "cache", api_key_env=KEY_ENV)
        assert server.n_requests == len(prompts)  # every answer came from the cache
    pd.testing.assert_frame_equal(read_responses(out), first)
    assert list(first.columns) == list(RESPONSE_COLUMNS)
    assert set(first["model"]) == {"api-vlm"} and set(first["intervention"]) == {"none"}
    assert list(first["harmful"]) == list(prompts["harmful"]) and (first["response"] == DEFAULT_REPLY).all()
    prompts_path = root / "data/mini/prompts.parquet"
    args = {"condition": "tool", "model": "api-vlm"}
    assert run_problems(run_dir, prompts_path, require_activations=False, **args) == []
    problems = run_problems(run_dir, prompts_path, require_activations=True, **args)
    assert len(problems) == 1 and "activations.nc: file not found" in problems[0]


def test_key_is_in_no_written_file(study, tmp_path, monkeypatch, caplog):
    root, _, _ = study
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "runs/api-vlm/mini/direct/responses.parquet"
    with FakeOpenAIServer(require_key=key, reply=f"the key was {key}") as server:
        run(root, server, out, tmp_path / "cache", condition="direct", api_key_env=KEY_ENV)
        assert server.n_requests == 2 and server.requests[0]["headers"]["authorization"] == f"Bearer {key}"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert out in written and any(p.suffix == ".json" for p in written)
    for path in written:
        assert key.encode() not in path.read_bytes(), path
    assert key not in caplog.text


def test_missing_key_stops_before_writing(study, tmp_path, monkeypatch):
    root, _, _ = study
    monkeypatch.delenv(KEY_ENV, raising=False)
    out = tmp_path / "responses.parquet"
    with FakeOpenAIServer() as server:
        with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} is not set"):
            run(root, server, out, tmp_path / "cache", api_key_env=KEY_ENV)
        assert server.n_requests == 0
    assert not out.exists()


def test_entry_without_api_block_is_a_config_error(study, tmp_path):
    root, _, _ = study
    with pytest.raises(ConfigError, match="models.api-vlm: backend openai needs an api block"):
        run_api_inference(
            model_name="api-vlm",
            entry={"backend": "openai"},
            episodes_path=root / "episodes/mini/direct.jsonl",
            prompts_path=root / "data/mini/prompts.parquet",
            results_root=root,
            max_new_tokens=8,
            responses_out=tmp_path / "r.parquet",
        )
