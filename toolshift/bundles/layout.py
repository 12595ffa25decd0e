"""Which files of a run a bundle carries, read off the workflow's own rules (rules/bundle.smk).

The workflow names the rules of its generation side and the wildcards of each of their jobs; the files are
those rules' declared outputs with the wildcards applied, so a condition, an output or a rule that another
change adds to the generation side travels with every bundle without a list here to update. The rules are
Snakemake's rule objects, used only through what every rule has: `output` patterns that apply wildcards
and carry their flags (`directory`), a `benchmark` pattern and `resources`.
"""

from __future__ import annotations

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
