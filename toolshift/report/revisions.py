"""Which hub models and judge models of a config are pinned to a commit: the judges table's revision
column and the provenance chapter's list of unpinned entries (a branch or tag: a rerun may load other
weights)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from toolshift.report.format import DASH, cell, code, is_missing, markdown_table

COMMIT = re.compile(r"^[0-9a-f]{40}$")
"""A revision pinned to a commit: 40 lowercase hex digits."""


def _revision(rev: Any) -> str:
    return DASH if is_missing(rev) or rev == "" else code(rev)


def unpinned_markdown(config: Mapping[str, Any]) -> str:
    """Every hub model and hub judge model of the config whose revision is not a commit hash (a rerun may
    then load other weights), or a sentence saying that every one is pinned."""
    rows = []
    for name, entry in (config.get("models") or {}).items():
        if entry.get("source") == "hub" and not COMMIT.match(str(entry.get("revision") or "")):
            rows.append(
                [code(name), "model", cell(entry.get("hub_id") or ""), _revision(entry.get("revision"))]
            )
    judge_models = config.get("judge_models") or {}
    for judge in config.get("judges") or []:
        entry = judge_models.get(judge) or {}
        if entry.get("source") == "hub" and not COMMIT.match(str(entry.get("revision") or "")):
            rows.append(
                [
                    code(judge),
                    "judge model",
                    cell(entry.get("hub_id") or ""),
                    _revision(entry.get("revision")),
                ]
            )
    if not rows:
        return "Every hub model and judge model of this run is pinned to a commit hash (or there is none).\n"
    return (
        "**Unpinned revisions.** These entries name a branch or tag, not a commit, so a rerun may load other "
        "weights than this run did; pin them to reproduce it exactly:\n\n"
        + markdown_table(["entry", "kind", "hub repository", "revision"], rows)
    )


def judge_revision(judge: str, entry: Mapping[str, Any]) -> str:
    """A hub judge model's revision, flagged when it is not a commit hash (an unpinned judge can change
    under a rerun); n/a for the keyword, API and fixture judges."""
    if judge in ("keyword", "api") or entry.get("source") != "hub":
        return "n/a"
    rev = entry.get("revision")
    if isinstance(rev, str) and COMMIT.match(rev):
        return code(rev)
    return f"{_revision(rev)} **(unpinned)**"


__all__ = ["COMMIT", "judge_revision", "unpinned_markdown"]
