"""`make mutate`: its module -> test-file map (tests/mutation.py) agrees with pyproject's [tool.mutmut]."""

from __future__ import annotations

import tomllib

from conftest import REPO
from mutation import MODULE_TESTS, resolve_modules, score_rows, source_path

SLOW = {
    "tests/test_workflow.py",
    "tests/test_resume.py",
    "tests/test_slurm.py",
    "tests/test_vllm_engine.py",
    "tests/test_bench.py",
    "tests/test_families.py",
}


def _mutmut() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]


def test_the_map_covers_exactly_the_mutated_modules():
    config = _mutmut()
    assert config["only_mutate"] == [str(source_path(module)) for module in MODULE_TESTS]
    for module in MODULE_TESTS:
        assert (REPO / source_path(module)).is_file(), module


def test_every_module_runs_existing_fast_unit_tests_only():
    union = []
    for module, args in MODULE_TESTS.items():
        files = [a for a in args if not a.startswith("-")]
        assert files, module
        for f in files:
            assert (REPO / f).is_file(), (module, f)
            assert f not in SLOW, (module, f)
            assert "pytestmark = pytest.mark.e2e" not in (REPO / f).read_text(), (module, f)
        for option in (a for a in args if a.startswith("--deselect=")):
            assert option.removeprefix("--deselect=").split("::")[0] in files, (module, option)
        union += [f for f in files if f not in union]
    selection = _mutmut()["pytest_add_cli_args_test_selection"]
    assert [a for a in selection if not a.startswith("-")] == union
    assert "-mnot e2e" in selection  # a plain `mutmut run` never starts Snakemake


def test_score_rows_count_each_status(tmp_path):
    import json

    statuses = {"a": "killed", "b": "timeout", "c": "survived", "d": "no tests", "e": "suspicious"}
    record = {"statuses": statuses, "seconds": 90, "cpu_seconds": 150, "test_files": ["tests/test_stats.py"]}
    (tmp_path / "analysis.stats.json").write_text(json.dumps(record))
    assert score_rows(tmp_path) == [
        {
            "module": "analysis.stats",
            "mutants": 5,
            "killed": 2,
            "survived": 1,
            "no_tests": 1,
            "other": 1,
            "score": 0.4,
            "minutes": 1.5,
            "cpu_minutes": 2.5,
            "test_files": "test_stats.py",
        }
    ]


def test_modules_are_named_in_full_or_by_their_last_part():
    assert resolve_modules(["stats", "judges.keyword", "episodes", "nope"]) == (
        ["analysis.stats", "judges.keyword", "episodes.build"],
        ["nope"],
    )
    assert source_path("analysis.stats").as_posix() == "toolshift/analysis/stats.py"
