"""Security: safetensors only, trust_remote_code only where a model entry opts in, API keys in no output,
the book redacts completions to harmful prompts by default.

(Tool calls parsed from model output are covered by tests/test_toolcalls.py: JSON only, size limits,
bbox clamping, fuzzed with hypothesis.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dag import reduced_config, snakemake
from fake_openai_server import FakeOpenAIServer

from toolshift.common.config import validate_config
from toolshift.errors import ConfigError
from toolshift.models.fixtures import build_fixture
from toolshift.models.loading import check_safetensors_only, load_model
from toolshift.models.prepare import prepare_model
from toolshift.report.tables import completions_markdown

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-SECRET-123456"
KEY_ENV = "TOOLSHIFT_SECURITY_TEST_KEY"


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    return build_fixture(
        "llava",
        tmp_path_factory.mktemp("security") / "llava",
        seed=0,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
    )


# --------------------------------------------------------------------------- safetensors only


def test_pickle_weights_are_refused(fixture_dir, tmp_path):
    """A model folder with only pytorch_model.bin (a pickle) is refused before anything is unpickled."""
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(fixture_dir, pickled)
    state = {}
    for weights in pickled.glob("*.safetensors"):
        state.update(load_file(weights))
        weights.unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError) as exc:
        load_model(pickled, "llava")
    message = str(exc.value)
    assert "\n" not in message
    assert str(pickled) in message and "pytorch_model.bin" in message and "safetensors only" in message
    check_safetensors_only(fixture_dir)  # the safetensors original passes
    load_model(fixture_dir, "llava")


def test_load_model_asks_transformers_for_safetensors_and_no_remote_code(fixture_dir, monkeypatch):
    """What load_model passes to from_pretrained: use_safetensors=True always; trust_remote_code as given,
    False by default."""
    import transformers

    seen: list[dict] = []

    def record(*args, **kwargs):
        seen.append(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", record)
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", record)
    with pytest.raises(ConfigError):
        load_model(fixture_dir, "llava")
    assert seen[-1]["trust_remote_code"] is False
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: None)
    with pytest.raises(ConfigError):
        load_model(fixture_dir, "llava", trust_remote_code=True)
    assert seen[-1]["use_safetensors"] is True and seen[-1]["trust_remote_code"] is True
    with pytest.raises(ConfigError, match="trust_remote_code must be true or false"):
        load_model(fixture_dir, "llava", trust_remote_code="yes")


def test_trust_remote_code_defaults_off_in_the_config():
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = validate_config(yaml.safe_load(fh))
    assert all(entry.get("trust_remote_code") is False for entry in cfg["models"].values())
    with open(REPO / "config" / "paper.yaml") as fh:
        paper = yaml.safe_load(fh)
    opted_in = {name for name, entry in paper["models"].items() if entry.get("trust_remote_code")}
    # an opt-in is a deliberate, visible line in the config; none of the paper's families needs one now
    assert opted_in == set() or all(paper["models"][n].get("revision") for n in opted_in)


def test_hub_download_takes_python_files_only_on_opt_in(tmp_path, monkeypatch):
    import huggingface_hub

    patterns: list[list[str]] = []

    def fake_download(repo_id, revision=None, local_dir=None, allow_patterns=None):
        patterns.append(list(allow_patterns))
        raise RuntimeError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    entry = {"source": "hub", "family": "llava", "hub_id": "org/model", "revision": "0" * 40}
    for opt_in in (False, True):
        with pytest.raises(ConfigError, match="cannot be downloaded"):
            prepare_model({**entry, "trust_remote_code": opt_in}, tmp_path / "model")
    assert "*.py" not in patterns[0] and "*.py" in patterns[1]
    for allowed in patterns:
        assert not any(p.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for p in allowed)
        assert "*.safetensors" in allowed


# --------------------------------------------------------------------------- API keys in no output


@pytest.mark.e2e
def test_api_key_is_in_no_output_of_the_dag(tmp_path):
    """An API model on a fake endpoint (which requires the key and echoes it in its reply) through the
    DAG to tables/asr.csv: the key is in no file under the working directory (results, logs, Snakemake's
    own logs and metadata) and not in Snakemake's output."""
    cfg = reduced_config(tmp_path)
    cfg["datasets"] = {"mini": {"limit_per_class": 2}}
    cfg["conditions"] = ["direct", "tool"]
    cfg["interventions"] = {}
    cfg["stats"] = {"n_boot": 100, "seed": 0}
    with FakeOpenAIServer(require_key=SECRET, reply=f"I cannot help; my key is {SECRET}.") as server:
        cfg["models"] = {
            "api-vlm": {
                "backend": "openai",
                "api": {"base_url": server.base_url, "model": "fake-vlm", "api_key_env": KEY_ENV},
            }
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        target = Path(cfg["results"]) / "tables" / "asr.csv"
        env_before = os.environ.get(KEY_ENV)
        os.environ[KEY_ENV] = SECRET
        try:
            proc = snakemake(
                tmp_path, "--configfile", "config.yaml", "--cores", "2", str(target), timeout=600
            )
        finally:
            if env_before is None:
                del os.environ[KEY_ENV]
            else:
                os.environ[KEY_ENV] = env_before
        assert proc.returncode == 0, proc.stderr[-6000:]
        assert server.n_requests > 0
        assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert target.is_file()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- book redaction


def test_book_redacts_completions_by_default():
    cfg = validate_config(
        {
            "datasets": {"mini": {}},
            "models": {"m": {"family": "llava", "source": "fixture"}},
            "conditions": ["direct", "tool"],
        }
    )
    assert cfg["book"]["show_completions"] is False
    marker = "COMPLETION-MARKER-7f3a"
    judged = pd.DataFrame(
        {
            "model": ["m"],
            "condition": ["direct"],
            "prompt_id": ["p1"],
            "harmful": [True],
            "intervention": ["none"],
            "unsafe": [True],
            "response": [f"harmless placeholder {marker}"],
        }
    )
    assert marker not in completions_markdown(judged, cfg["book"]["show_completions"])
    assert marker in completions_markdown(judged, True)  # the opt-in shows it, so the check can fail
