"""`make mutate`: mutation testing of the scientific core with mutmut, outside `make test`.

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies the package into ``mutants/`` (git-ignored),
plants each mutant there behind a switch and runs it against the tests that executed the mutated function.
This script runs it one core module at a time, with only that module's fast unit-test files
(MODULE_TESTS: never the DAG, SLURM, vLLM, benchmark or model-family tests), which keeps a full run of the
ten modules under 30 minutes on 2 cores; then it writes, under ``results/mutation/`` (git-ignored):

- ``score.csv`` and ``score.md``: per module, the mutants, killed (a test failed; a timeout counts as
  killed), survived (every selected test passed), no tests (no selected test runs that function), the
  score killed / mutants, the minutes the module took and its CPU minutes (what it costs whatever else
  the machine runs: on an idle 2-core machine the wall time is about half of them);
- ``survivors/<module>.diff``: each surviving mutant as a diff against the source, for review;
- ``<module>.json`` (each mutant's status) and ``<module>.log`` (mutmut's output).

``python tests/mutation.py --modules stats,judges`` reruns some modules; the score table keeps the others'
last results. Nothing tracked is written: mutmut works in ``mutants/``, the tests' temporary files go
under ``results/mutation/tmp`` and are removed after each module.

Two adjustments to mutmut 3.8's fork server, both about speed only (a mutant's verdict is unchanged): a
finished worker wakes the server at once (``signal.set_wakeup_fd``; without it SIGCHLD may reach the
server's timeout thread and the reap waits for a 1 s poll), and each mutant runs its fastest tests first
(as mutmut's plain fork runner does), so a killed mutant stops soonest.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "analysis.stats": (
        "tests/test_stats.py",
        "tests/test_tables.py",
        "tests/test_contrasts.py",
        "tests/test_headline.py",
    ),
    "analysis.tables": ("tests/test_tables.py", "tests/test_stats.py"),
    "analysis.contrasts": ("tests/test_contrasts.py", "tests/test_headline.py"),
    "analysis.claim_pairs": ("tests/test_contrasts.py",),
    "analysis.claims": (
        "tests/test_claims.py",
        "tests/test_validation.py",
        "-kworld or cell or claim or judge",
    ),
    "analysis.magnification": ("tests/test_magnification.py",),
    "analysis.vectors": ("tests/test_vectors.py", "tests/test_tables.py"),
    "analysis.vector_tables": ("tests/test_tables.py", "tests/test_vectors.py"),
    # the hooks on the Qwen2.5-VL fixture only: the LLaVA cases run the same hook code, twice as slowly
    "models.hooks": ("tests/test_hooks.py", "tests/test_interventions.py", "-knot llava"),
    "analysis.interventions": (
        "tests/test_interventions.py",
        "tests/test_selection.py",
        "tests/test_hooks.py",
        "-knot llava",
    ),
    "analysis.intervention_controls": ("tests/test_interventions.py",),
    "analysis.steering": ("tests/test_interventions.py", "tests/test_hooks.py", "-knot llava"),
    "analysis.mechanism": ("tests/test_mechanism.py", "tests/test_contrasts.py"),
    "analysis.representation_nulls": ("tests/test_vectors.py", "tests/test_probes.py"),
    "judges.keyword": (
        "tests/test_judges.py",
        "tests/test_judge_scoring.py",
        "tests/test_agreement.py",
        "tests/test_judge_api.py",
        # a model judge (10 s) and the CLI in a subprocess (2 s each): the keyword judge is tested in-process
        "--deselect=tests/test_judge_scoring.py::test_model_judge_scored_without_the_dag",
        "--deselect=tests/test_judge_scoring.py::test_cli_end_to_end_on_csv_and_json",
        "--deselect=tests/test_judge_scoring.py::test_cli_bad_file_is_one_line",
    ),
    "episodes.build": ("tests/test_episodes.py", "tests/test_adapters.py"),
    # the unrenderable-text checks are tested with the other bad inputs (not the DAG cases: e2e)
    "datasets.typography": (
        "tests/test_typography.py",
        "tests/test_datasets.py",
        "tests/test_bad_inputs.py",
        "-mnot e2e",
    ),
}
"""Core module (dotted under toolshift: toolshift/analysis/stats.py is "analysis.stats") -> the fast
unit-test files whose tests may kill its mutants (and pytest options that leave a slow test out)."""

STATUSES: tuple[str, ...] = (
    "killed",
    "survived",
    "no tests",
    "timeout",
    "suspicious",
    "segfault",
    "not checked",
)
SCORE_COLUMNS: tuple[str, ...] = (
    "module",
    "mutants",
    "killed",
    "survived",
    "no_tests",
    "other",
    "score",
    "minutes",
    "cpu_minutes",
    "test_files",
)


def _shared_data() -> str:
    # the tests run from mutants/, so the default <repo>/../shared/data must be made absolute here
    return str(Path(os.environ.get("TOOLSHIFT_SHARED_DATA") or REPO.parent / "shared" / "data").resolve())


def _patch_mutmut() -> None:
    """The two speed adjustments of the module docstring."""
    from mutmut.runners import harness
    from mutmut.state import state
    from mutmut.workers import isolation

    setup = isolation.ForkServerRunner._setup_sigchld_pipe

    def setup_sigchld_pipe(self):
        read_end, write_end = setup(self)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        return read_end, write_end

    run_tests = harness.PytestRunner.run_tests

    def run_tests_fastest_first(self, *, mutant_name, tests):
        if mutant_name:
            durations = state().duration_by_test
            tests = sorted(tests, key=lambda test: (durations.get(test, 0.0), test))
        return run_tests(self, mutant_name=mutant_name, tests=tests)

    isolation.ForkServerRunner._setup_sigchld_pipe = setup_sigchld_pipe
    harness.PytestRunner.run_tests = run_tests_fastest_first


def run_module(module: str, max_children: int) -> None:
    """mutmut on the mutants of one module, with that module's test files only (a child process)."""
    import dataclasses

    from mutmut import configuration
    from mutmut.__main__ import cli

    cfg = configuration.config()
    configuration._config = dataclasses.replace(
        cfg, pytest_add_cli_args_test_selection=list(MODULE_TESTS[module])
    )
    _patch_mutmut()
    cli.main(
        ["run", "--max-children", str(max_children), f"toolshift.{module}.*"],
        prog_name="mutmut",
        standalone_mode=False,
    )


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and their waited-for descendants: the
    cost of a run whatever else the machine is doing (wall time on an idle 2-core machine is about half)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def source_path(module: str) -> Path:
    """A core module's source file: "analysis.stats" -> toolshift/analysis/stats.py."""
    return Path("toolshift", *module.split(".")).with_suffix(".py")


def resolve_modules(names: list[str]) -> tuple[list[str], list[str]]:
    """(core modules, unknown names): a name selects every core module it names in full or by one of its
    dotted parts ("stats" -> analysis.stats, "episodes" -> episodes.build, "analysis" -> all of analysis)."""
    found: list[str] = []
    unknown = []
    for name in names:
        hits = [m for m in MODULE_TESTS if name == m or name in m.split(".")]
        found += [m for m in hits if m not in found]
        if not hits:
            unknown.append(name)
    return found, unknown


def module_statuses(module: str) -> dict[str, str]:
    """Each mutant of `module` -> its status, from mutmut's record in mutants/."""
    from mutmut.stats import status_by_exit_code

    meta = json.loads((REPO / "mutants" / f"{source_path(module)}.meta").read_text())
    return {key: status_by_exit_code[code] for key, code in meta["exit_code_by_key"].items()}


def survivor_diffs(module: str, statuses: dict[str, str]) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    path = source_path(module)
    return "".join(
        f"# {key}: {status}\n{get_diff_for_mutant(key, path=path)}\n\n"
        for key, status in sorted(statuses.items())
        if status in ("survived", "suspicious", "not checked")
    )


def score_rows(out: Path) -> list[dict[str, object]]:
    rows = []
    for module in MODULE_TESTS:
        record = out / f"{module}.json"
        if not record.is_file():
            continue
        data = json.loads(record.read_text())
        counts = {s: 0 for s in STATUSES}
        for status in data["statuses"].values():
            counts[status if status in counts else "suspicious"] += 1
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        rows.append(
            {
                "module": module,
                "mutants": total,
                "killed": killed,
                "survived": counts["survived"],
                "no_tests": counts["no tests"],
                "other": counts["suspicious"] + counts["segfault"] + counts["not checked"],
                "score": round(killed / total, 3) if total else float("nan"),
                "minutes": round(data["seconds"] / 60, 1),
                "cpu_minutes": round(data.get("cpu_seconds", float("nan")) / 60, 1),
                "test_files": " ".join(Path(f).name for f in data["test_files"]),
            }
        )
    return rows


def write_scores(out: Path) -> list[dict[str, object]]:
    rows = score_rows(out)
    with open(out / "score.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SCORE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| module | mutants | killed | survived | no tests | other | score | minutes | CPU minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['no_tests']} | "
            f"{r['other']} | {r['score']:.3f} | {r['minutes']} | {r['cpu_minutes']} |"
        )
    if rows:
        killed, total = sum(r["killed"] for r in rows), sum(r["mutants"] for r in rows)
        lines.append(
            f"| all | {total} | {killed} | {sum(r['survived'] for r in rows)} | "
            f"{sum(r['no_tests'] for r in rows)} | {sum(r['other'] for r in rows)} | "
            f"{killed / total:.3f} | {sum(r['minutes'] for r in rows):.1f} | "
            f"{sum(r['cpu_minutes'] for r in rows):.1f} |"
        )
    (out / "score.md").write_text("\n".join(lines) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULE_TESTS), help="comma-separated core modules")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default=str(REPO / "results" / "mutation"))
    parser.add_argument("--module-run", help=argparse.SUPPRESS)  # the child: mutmut on one module
    args = parser.parse_args(argv)
    if args.module_run:
        run_module(args.module_run, args.max_children)
        return 0

    modules, unknown = resolve_modules([m.strip() for m in args.modules.split(",") if m.strip()])
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULE_TESTS)}")
    out = Path(args.out)
    (out / "survivors").mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"
    env = dict(
        os.environ,
        TOOLSHIFT_SHARED_DATA=_shared_data(),
        PYTEST_DEBUG_TEMPROOT=str(tmp.resolve()),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
    )
    started = time.monotonic()
    for module in modules:
        tmp.mkdir(parents=True, exist_ok=True)
        t0, cpu0 = time.monotonic(), _children_cpu()
        with open(out / f"{module}.log", "w") as log:
            cmd = [sys.executable, __file__, "--module-run", module, "--max-children", str(args.max_children)]
            code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        shutil.rmtree(tmp, ignore_errors=True)
        if code != 0:
            print(f"mutmut failed on {module} (exit {code}); see {out / f'{module}.log'}", file=sys.stderr)
            return 1
        statuses = module_statuses(module)
        seconds, cpu = time.monotonic() - t0, _children_cpu() - cpu0
        record = {
            "module": module,
            "test_files": MODULE_TESTS[module],
            "seconds": seconds,
            "cpu_seconds": cpu,
            "statuses": statuses,
        }
        (out / f"{module}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        (out / "survivors" / f"{module}.diff").write_text(survivor_diffs(module, statuses))
        survived = sum(s == "survived" for s in statuses.values())
        print(f"{module}: {len(statuses)} mutants, {survived} survived ({seconds / 60:.1f} min)", flush=True)
    write_scores(out)
    print((out / "score.md").read_text(), end="")
    print(f"mutation testing took {(time.monotonic() - started) / 60:.1f} min; results in {out}")
    return 0


if __name__ == "__main__":
    os.chdir(REPO)  # mutmut reads pyproject.toml and writes mutants/ in the working directory
    sys.exit(main())
