"""Which files of a run a bundle carries, read off the workflow's own rules (rules/bundle.smk).

The workflow names the rules of its generation side and the wildcards of each of their jobs; the files are
those rules' declared outputs with the wildcards applied, so a condition, an output or a rule that another
change adds to the generation side travels with every bundle without a list here to update. The rules are
Snakemake's rule objects, used only through what every rule has: `output` patterns that apply wildcards
and carry their flags (`directory`), a `benchmark` pattern and `resources`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

Jobs = Mapping[str, Sequence[Mapping[str, str]]]
"""Rule name -> the wildcards of each of its jobs."""


def _relative(path: str, results: str) -> str:
    return os.path.relpath(path, results)


def declared_outputs(rules: Mapping[str, Any], jobs: Jobs, results: str) -> list[tuple[str, bool, str]]:
    """(path relative to `results`, is a folder, rule) of every declared output of every job; rules the
    workflow does not define in this config (`rules` lacks them) have no jobs."""
    files = []
    for name, wildcards in jobs.items():
        rule = rules.get(name)
        for wc in wildcards if rule is not None else ():
            for out in rule.output:
                is_dir = bool(getattr(out, "flags", {}).get("directory"))
                files.append((_relative(str(out.apply_wildcards(dict(wc))), results), is_dir, name))
    return files


def declared_benchmarks(
    rules: Mapping[str, Any], jobs: Jobs, results: str, gpu_only: bool = False
) -> list[str]:
    """The benchmark files (relative to `results`) of every job; with `gpu_only`, of the jobs of rules that
    hold a GPU (`resources: gpu=1`)."""
    found = set()
    for name, wildcards in jobs.items():
        rule = rules.get(name)
        if rule is None or not rule.benchmark or (gpu_only and rule.resources.get("gpu") != 1):
            continue
        found.update(_relative(str(rule.benchmark.apply_wildcards(dict(wc))), results) for wc in wildcards)
    return sorted(found)


class GenerationSide:
    """The files and benchmark files of a workflow's generation side, read off its rules when first asked
    (a bundle's inputs, an import), not on every DAG build: the paper's study has thousands of them.

    `workflow` is anything with a `rules` iterable of rule objects (Snakemake's workflow); `jobs` the
    generation rules' jobs, `benchmark_jobs` the jobs whose benchmark files a bundle records.
    """

    def __init__(self, workflow: Any, jobs: Jobs, benchmark_jobs: Jobs, results: str) -> None:
        self._workflow, self.jobs, self.benchmark_jobs, self.results = workflow, jobs, benchmark_jobs, results

    def rules(self) -> dict[str, Any]:
        """The workflow's rules by name."""
        return {rule.name: rule for rule in self._workflow.rules}

    @functools.cached_property
    def files(self) -> list[tuple[str, bool, str]]:
        """`declared_outputs` of the generation jobs."""
        return declared_outputs(self.rules(), self.jobs, self.results)

    def benchmarks(self, gpu_only: bool = False) -> list[str]:
        """`declared_benchmarks` of the benchmark jobs."""
        return declared_benchmarks(self.rules(), self.benchmark_jobs, self.results, gpu_only=gpu_only)
