"""The book's method and provenance tables: datasets, splits, models, judges, software, git commit,
per-rule runtimes (from Snakemake `benchmark:` files) and the configuration.

Everything is read from result files, the config and the environment that builds the book; nothing is
recomputed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from toolshift.report.format import DASH, cell, code, is_missing, markdown_table
from toolshift.report.revisions import COMMIT, judge_revision

API_MODEL_NOTE = (
    " ran through an OpenAI-compatible endpoint: behaviour only. A remote model exposes no residual "
    "stream, so it has no tool vector, no refusal direction and no interventions; it appears in the ASR "
    "tables and figures only. Token counts are the provider's (-1 = not reported). Answers come from the "
    "response cache; temperature-0 API output is not guaranteed identical across provider updates, so the "
    "cache, not the endpoint, makes these rows reproducible.\n"
)


def models_of(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, entry) of every model of the config, in config order."""
    models = config.get("models") or {}
    if isinstance(models, Mapping):
        return [(str(k), v if isinstance(v, Mapping) else {}) for k, v in models.items()]
    out = []
    for i, entry in enumerate(models):
        entry = entry if isinstance(entry, Mapping) else {"id": entry}
        out.append((str(entry.get("name") or entry.get("id") or f"model {i}"), entry))
    return out


def models_markdown(config: Mapping[str, Any], fixture_models: Sequence[str]) -> str:
    """Every model with its family, source and revision; unpinned revisions are flagged."""
    models = models_of(config)
    if not models:
        return "The config names no models.\n"
    rows, api_models = [], []
    for name, entry in models:
        family = _cell_or_dash(entry.get("family"))
        if name in fixture_models:
            rows.append([code(name), family, "fixture (built offline from a seed)", DASH, "n/a"])
            continue
        if entry.get("backend") == "openai":
            api = entry.get("api") or {}
            source = f"OpenAI-compatible endpoint: {code(api.get('model'))} at {code(api.get('base_url'))}"
            rows.append([code(name), family, source, DASH, "n/a (remote)"])
            api_models.append(name)
            continue
        rev = entry.get("revision")
        pinned = isinstance(rev, str) and bool(COMMIT.match(rev))
        rows.append(
            [
                code(name),
                family,
                cell(entry.get("hub_id") or entry.get("path") or entry.get("id") or "hub model"),
                DASH if is_missing(rev) or rev == "" else code(rev),
                "yes" if pinned else "**no: unpinned**",
            ]
        )
    out = markdown_table(["model", "family", "source", "revision", "pinned to a commit"], rows)
    if api_models:
        out += "\n" + ", ".join(code(m) for m in api_models) + API_MODEL_NOTE
    return out


def protocols_markdown(config: Mapping[str, Any]) -> str:
    """Every model's tool protocol: the family's call syntax source (repository: files @ commit)."""
    from toolshift.models.adapters import ADAPTERS, NATIVE_FAMILIES

    rows = []
    for name, entry in models_of(config):
        family = entry.get("family")
        adapter = ADAPTERS.get(str(family)) if family is not None else None
        if adapter is None:
            rows.append([code(name), _cell_or_dash(family), DASH, DASH])
            continue
        native = "its own (native)" if family in NATIVE_FAMILIES else "the episodes' framing"
        rows.append([code(name), code(family), native, cell(adapter.protocol_source)])
    if not rows:
        return "The config names no models.\n"
    return markdown_table(["model", "family", "tool protocol", "protocol source"], rows)


def engines_markdown(judged: pd.DataFrame | None) -> str:
    """Which inference engine generated each model's runs (the `engine` column of the responses):
    conditions and interventions counted apart, with the number of runs per engine."""
    if judged is None or judged.empty or "engine" not in judged.columns:
        return "No responses with an `engine` column were given to the book.\n"
    frame = judged.assign(
        kind=judged["intervention"].map(lambda i: "conditions" if i == "none" else "interventions")
    )
    runs = frame.drop_duplicates(["model", "dataset", "condition", "intervention"])
    rows = []
    for model, group in runs.groupby("model", sort=False):
        cells = [code(model)]
        for kind in ("conditions", "interventions"):
            counts = group.loc[group["kind"] == kind, "engine"].value_counts()
            cells.append(", ".join(f"{code(e)} ({n} runs)" for e, n in counts.items()) or DASH)
        rows.append(cells)
    note = (
        "\n`hf` is transformers `generate` with hooks (the reference); `vllm` a vLLM engine with vllm-lens "
        "capture and steering; `api` an OpenAI-compatible endpoint. A run the vLLM engine cannot apply "
        'exactly is generated by `hf` in the same job (docs/dag.md, "Choosing an engine").\n'
    )
    return markdown_table(["model", "conditions", "interventions"], rows) + note


def _cell_or_dash(x: Any) -> str:
    return DASH if is_missing(x) or x == "" else code(x)


def datasets_markdown(prompts: Mapping[str, pd.DataFrame], config: Mapping[str, Any]) -> str:
    """Per dataset: its registry description, attack, license, and the prompts the run used."""
    if not prompts:
        return "No prompt tables were given to the book.\n"
    from toolshift.datasets.prompts import DATASETS

    rows = []
    for name, df in prompts.items():
        options = (config.get("datasets") or {}).get(name) if isinstance(config.get("datasets"), dict) else {}
        spec = DATASETS.get(name)
        if spec is None and (options or {}).get("path"):
            from toolshift.datasets.custom import custom_spec

            spec = custom_spec(name, options["path"])
        harmful = df["harmful"].astype(bool)
        skipped = df.attrs.get("skipped")
        n_skipped = 0 if skipped is None else len(skipped)
        rows.append(
            [
                code(name),
                cell(spec.description) if spec else "(not in the registry)",
                code(spec.attack) if spec else DASH,
                cell(spec.license) if spec else DASH,
                str(int(harmful.sum())),
                str(int((~harmful).sum())),
                str(df["category"].nunique()),
                str(n_skipped) if skipped is not None else DASH,
                code(json.dumps(options or {}, sort_keys=True)),
            ]
        )
    header = ["dataset", "what it is", "attack", "license", "harmful", "harmless", "categories"]
    header += ["skipped", "options"]
    return markdown_table(header, rows) + skipped_markdown(prompts) + changes_markdown(prompts)


def attach_skipped(
    prompts: Mapping[str, pd.DataFrame], paths: Mapping[str, str | os.PathLike[str]] | None
) -> Mapping[str, pd.DataFrame]:
    """Attach to each prompts table (as `attrs["skipped"]` and `attrs["changes"]`) the `skipped.csv` and
    `changes.csv` that the prompts rule writes beside its `prompts.parquet`: the prompts left out (their
    attack image cannot carry them, or is too small), and what was changed in the ones kept (rewritten ids,
    downscaled images)."""
    for name, path in (paths or {}).items():
        for attr in ("skipped", "changes"):
            csv = Path(path).parent / f"{attr}.csv"
            if name in prompts and csv.is_file():
                prompts[name].attrs[attr] = pd.read_csv(csv, dtype=str, keep_default_na=False)
    return prompts


def changes_markdown(prompts: Mapping[str, pd.DataFrame]) -> str:
    """What the prompts rule changed in the prompts it kept: ids rewritten under the id rule (with the
    source id and row), images downscaled to `images.max_pixels` (with the factor)."""
    rows = [
        [
            code(name),
            code(str(r["prompt_id"])),
            cell(str(r["source"])),
            code(str(r["change"])),
            cell(str(r["detail"])),
        ]
        for name, df in prompts.items()
        if df.attrs.get("changes") is not None
        for _, r in df.attrs["changes"].iterrows()
    ]
    if not rows:
        return ""
    note = (
        f"\n{len(rows)} change(s) to the prompts as their files gave them (`data/{{dataset}}/changes.csv`): "
        "ids that break the id rule, rewritten (docs/datasets.md), and images above `images.max_pixels`, "
        "downscaled:\n\n"
    )
    return note + markdown_table(["dataset", "prompt", "source row", "change", "detail"], rows)


def skipped_markdown(prompts: Mapping[str, pd.DataFrame]) -> str:
    """The prompts each dataset left out (`datasets.<name>.on_unrenderable: skip`), with the reason."""
    rows = [
        [code(name), code(str(r["prompt_id"])), cell(str(r["reason"]))]
        for name, df in prompts.items()
        if df.attrs.get("skipped") is not None
        for _, r in df.attrs["skipped"].iterrows()
    ]
    if not rows:
        return ""
    note = (
        f"\n{len(rows)} prompt(s) were left out because their attack image cannot carry their text "
        "(`datasets.<name>.on_unrenderable: skip`) or is too small (`images.on_too_small: skip`); no result "
        "includes them:\n\n"
    )
    return note + markdown_table(["dataset", "prompt", "why it was left out"], rows)


def splits_markdown(splits: Mapping[str, pd.DataFrame], config: Mapping[str, Any]) -> str:
    """Prompts per split (train / validation / test) and class, per dataset, with the split seed."""
    if not splits:
        return "No split tables were given to the book.\n"
    rows = []
    order = ["train", "validation", "test"]
    for name, df in splits.items():
        counts = df.assign(harmful=df["harmful"].astype(bool)).groupby(["split", "harmful"]).size()
        for split in order + sorted(set(df["split"]) - set(order)):
            rows.append(
                [
                    code(name),
                    code(split),
                    str(int(counts.get((split, True), 0))),
                    str(int(counts.get((split, False), 0))),
                ]
            )
    cfg = config.get("splits") or {}
    note = (
        f"\nSplits are stratified by category and class (seed {cfg.get('seed', DASH)}): vectors and probes "
        "are fitted on train, the layer and α are selected on validation, and every reported ASR, reduction "
        "and cost is on test unless a table says otherwise.\n"
    )
    return markdown_table(["dataset", "split", "harmful", "harmless"], rows) + note


JUDGE_DESCRIPTIONS: dict[str, str] = {
    "keyword": "refusal-keyword matching: an answer without any listed refusal phrase counts as unsafe",
    "llamaguard": "Llama Guard (safety classifier model) on the request and the answer",
    "harmbench": "the HarmBench classifier (a fine-tuned model) on the request and the answer",
    "api": "an LLM judge on an OpenAI-compatible endpoint with the JailbreakBench rubric",
}


def judges_markdown(config: Mapping[str, Any], fixture_note: bool = True) -> str:
    """The configured judges, which one the headline uses, and where each judge model comes from."""
    judges = list(config.get("judges") or ["keyword"])
    headline = config.get("headline_judge", "keyword")
    models = config.get("judge_models") or {}
    rows = []
    for judge in judges:
        entry = models.get(judge) or {}
        if judge == "keyword":
            source = f"list {code(config.get('keyword_list', 'default'))}"
        elif judge == "api":
            api = (config.get("api_judge") or {}).get("api") or {}
            source = f"{code(api.get('model'))} at {code(api.get('base_url'))}"
        elif entry.get("source") == "fixture":
            source = f"fixture {code(entry.get('variant'))} (random weights: noise)"
        else:
            source = f"{code(entry.get('variant'))} {cell(entry.get('hub_id') or entry.get('path') or '')}"
        rows.append(
            [
                code(judge),
                JUDGE_DESCRIPTIONS.get(judge, DASH),
                source,
                "**yes**" if judge == headline else "no",
                judge_revision(judge, entry),
            ]
        )
    return markdown_table(["judge", "what it does", "source", "headline judge", "revision"], rows)


def config_markdown(config: Mapping[str, Any]) -> str:
    """The configuration the DAG ran with, defaults filled in, as a YAML block."""
    plain = json.loads(json.dumps(dict(config), default=str))
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    return (
        f"::::{{dropdown}} The configuration, defaults filled in ({text.count(chr(10))} lines)\n\n"
        f"```yaml\n{text}```\n::::\n"
    )


def bundle_markdown(record: Mapping[str, Any] | None) -> str:
    """Where this run's generations come from: generated in this results folder, or imported from a result
    bundle (the import record `bundle/imported.json`: source, manifest, the run that made it, float16
    activations and any accepted mismatch)."""
    if not record:
        return (
            "The models' responses, activations and interventions were generated in this results folder (no "
            "result bundle was imported).\n"
        )
    git = record.get("git") or {}
    made = f"toolshift {code(record.get('toolshift_version'))}"
    if git.get("commit"):
        made += f" at commit {code(git['commit'])}" + (
            " (with uncommitted changes)" if git.get("dirty") else ""
        )
    gpu = record.get("gpu_seconds")
    lines = [
        "The generation side of this run (prompts, conversations, responses, activations, interventions and "
        f"their costs) was **imported from a result bundle**, {code(record.get('source'))} (manifest sha256 "
        f"{code(record.get('manifest_sha256'))}, made {cell(record.get('created'))} by {made}); every file "
        f"was checked against the bundle's manifest ({record.get('placed_files')} files placed). The judges, "
        "vectors, tables, figures and this book were computed here from those files.",
    ]
    if gpu:
        lines.append(f"Generating them took {float(gpu) / 3600:.2f} GPU-hours of the original run's jobs.")
    if record.get("activations_dtype") == "float16":
        lines.append(
            "**The bundle stores activations as float16**: the vectors are the original run's own, taken "
            "from the bundle (the interventions used them), not recomputed from the rounded activations."
        )
    elif record.get("recomputed"):
        lines.append(
            f"Recomputed here rather than imported: {', '.join(code(r) for r in record['recomputed'])}."
        )
    if record.get("accepted_mismatch"):
        lines.append(
            f"**Imported with `bundle_accept_mismatch`**, although {cell(record['accepted_mismatch'])}."
        )
    return "\n\n".join(lines) + "\n"
