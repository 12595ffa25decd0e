"""File contracts: atomic writing, and validators that name the file and what is wrong."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pandas as pd
import pytest

from toolshift.common.steps import run_step
from toolshift.contracts import (
    PROMPT_COLUMNS,
    read_episodes,
    read_prompts,
    read_responses,
    validate_episode,
    write_jsonl,
    write_parquet,
)
from toolshift.errors import ContractError, ToolshiftError
from toolshift.files import atomic_path


def _prompts(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "dataset": "d",
            "category": "c",
            "harmful": [True] * n,
            "question": "q?",
            "instruction": "Steps to q.",
            "image": [f"data/d/images/p{i}.png" for i in range(n)],
        }
    )


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "sub" / "out.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_writes_with_the_usual_mode(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_prompts_round_trip_and_errors(tmp_path):
    path = tmp_path / "prompts.parquet"
    write_parquet(_prompts(), path)
    assert list(read_prompts(path).columns) == list(PROMPT_COLUMNS)

    write_parquet(_prompts().drop(columns=["question", "image"]), path)
    with pytest.raises(ContractError, match=rf"{path}: missing column\(s\) question, image"):
        read_prompts(path)
    write_parquet(pd.concat([_prompts(), _prompts(1)]), path)
    with pytest.raises(ContractError, match="duplicate prompt_id 'p0'"):
        read_prompts(path)
    write_parquet(_prompts(0), path)
    with pytest.raises(ContractError, match="no prompts"):
        read_prompts(path)
    write_parquet(_prompts().assign(harmful="yes"), path)
    with pytest.raises(ContractError, match="harmful must be boolean"):
        read_prompts(path)


def test_unreadable_and_missing_tables(tmp_path):
    bad = tmp_path / "responses.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.raises(ContractError, match=rf"{bad}: cannot be read as a table"):
        read_responses(bad)
    with pytest.raises(ContractError, match="file not found"):
        read_responses(tmp_path / "nope.parquet")


def _episode() -> dict:
    return {
        "prompt_id": "p0",
        "condition": "tool",
        "messages": [
            {"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "text", "text": "T"}]},
            {
                "role": "assistant",
                "content": [],
                "tool_calls": [{"name": "zoom_in", "arguments": {"bbox": [0, 0, 1, 1]}}],
            },
            {"role": "tool", "content": [{"type": "image", "path": "b.png"}]},
        ],
        "meta": {},
    }


def test_episode_validation_names_the_problem():
    validate_episode(_episode(), "f:1")
    broken = _episode()
    broken["messages"][0]["role"] = "narrator"
    with pytest.raises(ContractError, match="f:1: message 0 has role 'narrator'"):
        validate_episode(broken, "f:1")
    broken = _episode()
    broken["messages"][1]["tool_calls"] = [{"name": "zoom_in", "arguments": "[0, 0, 1, 1]"}]
    with pytest.raises(ContractError, match="malformed tool call"):
        validate_episode(broken, "f:1")
    broken = _episode()
    del broken["meta"]
    with pytest.raises(ContractError, match="lacks key\\(s\\) meta"):
        validate_episode(broken, "f:1")


def test_read_episodes_reports_file_and_line(tmp_path):
    path = tmp_path / "tool.jsonl"
    write_jsonl([_episode()], path)
    assert read_episodes(path)[0]["prompt_id"] == "p0"
    path.write_text(json.dumps(_episode()) + "\n{not json\n")
    with pytest.raises(ContractError, match=rf"{path}:2: not valid JSON"):
        read_episodes(path)


def test_toolshift_errors_are_one_line():
    assert str(ToolshiftError("a\n  b\tc")) == "a b c"


def test_run_step_turns_a_toolshift_error_into_one_line_and_exit_1(tmp_path, capsys):
    log = tmp_path / "rule.log"
    smk = SimpleNamespace(log=[str(log)], rule="r", wildcards={})

    def fails(_smk):
        raise ContractError("x.parquet: missing column(s) response")

    with pytest.raises(SystemExit) as info:
        run_step(smk, fails)
    assert info.value.code == 1
    assert "toolshift error: x.parquet: missing column(s) response\n" in capsys.readouterr().err
    assert "missing column(s) response" in log.read_text()
