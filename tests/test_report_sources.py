"""The book's generated sources, without a Sphinx build: example episodes, method and provenance tables,
formatting, folding, and the internal-link check of a built HTML folder."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from toolshift.datasets.prompts import build_prompts, load_mini
from toolshift.episodes.build import EPISODE_CONDITIONS, build_episodes, write_episodes
from toolshift.errors import ContractError
from toolshift.report.environment import git_markdown, git_state, read_benchmarks, runtimes_markdown
from toolshift.report.examples import example_episodes_markdown, pick_example_prompt
from toolshift.report.format import markdown_table, number_with_ci, p_value, with_ci
from toolshift.report.links import broken_internal_links
from toolshift.report.provenance import datasets_markdown, judges_markdown, splits_markdown
from toolshift.report.revisions import unpinned_markdown
from toolshift.report.tables import (
    FOLD_ROWS,
    analysis_table_markdown,
    asr_conditions_markdown,
    fold,
)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """A results root with a 2+2 mini subset and the episode file of every condition."""
    root = tmp_path_factory.mktemp("results")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=2)
    files = {}
    for c in EPISODE_CONDITIONS:
        files[c] = root / "episodes" / "mini" / f"{c}.jsonl"
        write_episodes(build_episodes(prompts, c, root), files[c])
    return root, prompts, files


def test_examples_show_every_condition_in_order_with_its_images(episodes):
    root, prompts, files = episodes
    reversed_files = dict(reversed(list(files.items())))  # the order given must not matter
    harmful = list(prompts.loc[prompts.harmful, "prompt_id"])
    md, copies = example_episodes_markdown(reversed_files, root, "_generated/examples", harmful_ids=harmful)
    first = sorted(harmful)[0]
    assert f"`{first}`" in md
    tabs = [line.split("}", 1)[1].strip() for line in md.splitlines() if line.startswith(":::{tab-item}")]
    assert tabs == list(EPISODE_CONDITIONS)
    # every image of the example prompt is copied once, and every copy is shown
    sources = {src.relative_to(root).as_posix() for src, _ in copies}
    assert f"data/mini/images/{first}.png" in sources
    assert f"episodes/mini/images/{first}_zoom.png" in sources
    overrides = {
        json.loads(line)["meta"]["override_image"]
        for c in ("tool_unsafe", "tool_benign", "tool_blank")
        for line in files[c].read_text().splitlines()
        if json.loads(line)["prompt_id"] == first
    }
    assert len(overrides) == 3 and overrides <= sources
    for src, dest in copies:
        assert src.is_file() and dest.startswith("_generated/examples/")
        assert f"/{dest}" in md
    assert len({dest for _, dest in copies}) == len(copies)
    # the tool call is shown as a call, and no answer is shown
    assert 'zoom_in({"bbox": [' in md
    assert md.count("The model generates its answer here") == len(EPISODE_CONDITIONS)


def test_example_prompt_is_harmful_and_in_every_condition(episodes):
    root, prompts, files = episodes
    from toolshift.contracts import read_episodes

    eps = {c: read_episodes(p) for c, p in files.items()}
    harmful = sorted(prompts.loc[prompts.harmful, "prompt_id"])
    harmless = sorted(prompts.loc[~prompts.harmful, "prompt_id"])
    assert pick_example_prompt(eps, harmful) == harmful[0]
    eps["tool"] = [r for r in eps["tool"] if r["prompt_id"] != harmful[0]]
    assert pick_example_prompt(eps, harmful) == harmful[1]  # the first one every condition has
    assert pick_example_prompt(eps) == min(harmless[0], harmful[1])  # the first by id without a class


def test_examples_name_a_missing_image(episodes, tmp_path):
    root, prompts, files = episodes
    with pytest.raises(ContractError, match="not found under"):
        example_episodes_markdown({"direct": files["direct"]}, tmp_path, "_generated/examples")


def test_datasets_and_splits_tables_count_the_prompts():
    prompts = pd.DataFrame(
        {"prompt_id": list("abcde"), "category": ["x", "x", "y", "y", "y"], "harmful": [1, 1, 1, 0, 0]}
    )
    md = datasets_markdown({"mini": prompts}, {"datasets": {"mini": {"limit_per_class": 3}}})
    row = next(line for line in md.splitlines() if line.startswith("| `mini`"))
    assert "| 3 | 2 | 2 |" in row and "limit_per_class" in row and "Embedded default" in row
    splits = prompts.assign(split=["train", "test", "test", "train", "validation"])
    md = splits_markdown({"mini": splits}, {"splits": {"seed": 7}})
    assert "| `mini` | `train` | 1 | 1 |" in md and "| `mini` | `test` | 2 | 0 |" in md
    assert "| `mini` | `validation` | 0 | 1 |" in md and "seed 7" in md


def test_judges_table_marks_the_headline_judge_and_fixture_judges():
    config = {
        "judges": ["keyword", "llamaguard"],
        "headline_judge": "llamaguard",
        "judge_models": {"llamaguard": {"variant": "llamaguard3", "source": "fixture"}},
    }
    md = judges_markdown(config)
    keyword = next(line for line in md.splitlines() if line.startswith("| `keyword`"))
    guard = next(line for line in md.splitlines() if line.startswith("| `llamaguard`"))
    assert keyword.endswith("| no | n/a |") and guard.endswith("| **yes** | n/a |") and "noise" in guard
    # a hub judge shows its revision, flagged when it is not pinned to a commit
    hub = {"variant": "harmbench", "source": "hub", "hub_id": "cais/HarmBench-Llama-2-13b-cls"}
    config["judges"].append("harmbench")
    for revision, shown in (("main", "`main` **(unpinned)**"), ("a" * 40, f"`{'a' * 40}`")):
        config["judge_models"]["harmbench"] = {**hub, "revision": revision}
        line = next(x for x in judges_markdown(config).splitlines() if x.startswith("| `harmbench`"))
        assert line.endswith(f"| no | {shown} |")


def test_runtimes_sum_the_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {
        "infer/m/a.tsv": (10.0, 100.0, 8.0),
        "infer/m/b.tsv": (30.0, 300.0, 20.0),
        "figures.tsv": (2.5, 50.0, 2.0),
        "book.tsv": (99.0, 1.0, 1.0),  # a previous build of the book: not shown
    }
    for rel, (s, rss, cpu) in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{s}\t0:00:{int(s):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    (tmp_path / "infer" / "m" / "partial.tsv").write_text("")  # a job still writing: skipped
    table = read_benchmarks(tmp_path)
    assert sorted(table["stage"]) == ["book", "figures", "infer", "infer"]
    md = runtimes_markdown(table)
    assert "| `infer` | 2 | 40.0 | 30.0 | 28.0 | 300 |" in md
    assert "| `figures` | 1 | 2.5 | 2.5 | 2.0 | 50 |" in md
    assert "| **all** | 3 | 42.5 | 30.0 | 30.0 | 300 |" in md
    assert "`book`" not in md
    assert "No benchmark files" in runtimes_markdown(read_benchmarks(tmp_path / "none"))


def test_git_state_reads_the_commit_and_local_changes(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert git_state(tmp_path)["commit"] is None
    assert "not run from a git checkout" in git_markdown(git_state(tmp_path))
    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    assert state["commit"] in git_markdown(state) and "uncommitted" not in git_markdown(state)
    (tmp_path / "f.txt").write_text("b")
    assert git_state(tmp_path)["dirty"] is True
    assert "uncommitted changes" in git_markdown(git_state(tmp_path))


def test_formatting():
    assert with_ci(0.4231, 0.3, 0.55) == "42.3 [30.0, 55.0]"
    assert with_ci(0.5, float("nan"), 0.6) == "50.0"
    assert with_ci(None, 0, 1) == "—"
    assert number_with_ci(0.012345, 0.01, 0.015) == "0.0123 [0.01, 0.015]"
    assert p_value(0.0004) == "4.0e-04" and p_value(0.25) == "0.250"
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_long_tables_fold_and_short_ones_do_not():
    assert fold("t", "body", FOLD_ROWS) == "body"
    folded = fold("t", "body", FOLD_ROWS + 1)
    assert folded.startswith("::::{dropdown} t (") and "body" in folded


def test_analysis_tables_say_why_they_are_empty_or_missing():
    md = analysis_table_markdown("transfer", pd.DataFrame(columns=["model"]))
    assert md.startswith("(table-transfer)=") and "two datasets" in md
    md = analysis_table_markdown("validation_figstep", None)
    assert "data_mirror" in md
    table = pd.DataFrame(
        {"check": ["cos"], "description": ["d"], "planted": [1.0], "recovered": [0.998],
         "criterion": ["> 0.99"], "passed": [True]}
    )  # fmt: skip
    md = analysis_table_markdown("validation_planted", table)
    assert ":name: table-validation-planted" in md and "| `cos` | d | 1 | 0.998 | > 0.99 | yes |" in md


def test_the_claims_and_world_tables_pivot_one_column_per_claim():
    keys = {"model": "m", "dataset": "mini", "split": "test", "n_rows": 1, "components": "x: supported"}
    claims = pd.DataFrame(
        [
            {**keys, "judge": "keyword", "claim": "behaviour", "verdict": "supported", "missing": ""},
            {**keys, "judge": "keyword", "claim": "controls", "verdict": "not tested",
             "missing": "text_trail_equivalent_to_direct"},
            {**keys, "judge": "keyword", "claim": "dose", "verdict": "not shown", "missing": ""},
            {**keys, "judge": "other", "claim": "behaviour", "verdict": "contradicted", "missing": ""},
        ]
    )  # fmt: skip
    md = analysis_table_markdown("claims", claims, judge="keyword")
    assert ":name: table-claims" in md and "| `m` | `mini` | **supported** | not tested | not shown |" in md
    assert "contradicted" not in md.split("```")[1]  # the other judge's row is left out of the table
    assert "lacks: `text_trail_equivalent_to_direct`" in md
    worlds = pd.DataFrame(
        [
            {"model": "p", "world": "tool", "dataset": "mini", "judge": "keyword", "claim": "behaviour",
             "expected": "supported", "verdict": "supported", "passed": True, "components": ""},
            {"model": "p", "world": "tool", "dataset": "mini", "judge": "keyword", "claim": "controls",
             "expected": "supported", "verdict": "not shown", "passed": False, "components": ""},
        ]
    )  # fmt: skip
    md = analysis_table_markdown("validation_worlds", worlds)
    assert "| `p` | tool | `mini` | supported ✓ | **not shown ✗ (expected supported)** |" in md
    assert "**1 of 2 cells wrong**" in md
    assert "**All 1 cells correct.**" in analysis_table_markdown("validation_worlds", worlds.head(1))
    assert "no planted world" in analysis_table_markdown("validation_worlds", None)


def test_conditions_table_has_a_row_per_condition_and_a_column_per_model():
    rows = []
    for m in ("m1", "m2"):
        for i, c in enumerate(("direct", "tool")):
            rows.append(
                {"model": m, "dataset": "d", "condition": c, "intervention": "none", "judge": "keyword",
                 "n": 10, "asr": 0.1 * (i + 1), "asr_ci_low": 0.0, "asr_ci_high": 0.5}
            )  # fmt: skip
    md = asr_conditions_markdown(pd.DataFrame(rows), "keyword")
    assert md.splitlines()[0] == "| condition | `m1` | `m2` |"
    assert "| `tool` | 20.0 [0.0, 50.0] | 20.0 [0.0, 50.0] |" in md


def test_broken_internal_links_are_found(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.html").write_text('<a href="{{ pathto(x) }}">x</a>')  # a template
    (tmp_path / "img.png").write_bytes(b"png")
    (tmp_path / "a.html").write_text(
        '<h1 id="top">A</h1><a href="b.html#sec">b</a><img src="img.png"><a href="https://x.org/y">ext</a>'
        '<a href="#top">top</a>'
    )
    (tmp_path / "b.html").write_text(
        '<section id="sec"></section><a href="a.html#nope">a</a><img src="gone.png">'
    )
    assert broken_internal_links(tmp_path) == ["b.html: a.html#nope (no such anchor)", "b.html: gone.png"]


def test_the_provenance_chapter_flags_what_stays_unpinned():
    config = {
        "models": {
            "pinned": {"source": "hub", "hub_id": "org/a", "revision": "b" * 40},
            "floating": {"source": "hub", "hub_id": "org/b", "revision": "main"},
            "fix": {"source": "fixture", "family": "llava"},
        },
        "judges": ["keyword", "harmbench", "llamaguard"],
        "judge_models": {
            "harmbench": {"source": "hub", "hub_id": "cais/HarmBench-Llama-2-13b-cls", "revision": "v1"},
            "llamaguard": {"source": "fixture", "variant": "llamaguard3"},
        },
    }
    md = unpinned_markdown(config)
    assert "| `floating` | model | org/b | `main` |" in md
    assert "| `harmbench` | judge model | cais/HarmBench-Llama-2-13b-cls | `v1` |" in md
    assert "pinned" not in md.split("|", 1)[1] and "llamaguard" not in md and "`fix`" not in md
    config["models"].pop("floating")
    config["judge_models"]["harmbench"]["revision"] = "c" * 40
    assert unpinned_markdown(config).startswith("Every hub model and judge model of this run is pinned")
