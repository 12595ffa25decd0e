"""The RO-Crate metadata of a bundle (`ro-crate-metadata.json`), written from its manifest with the `rocrate`
library so that Zenodo, WorkflowHub and other RO-Crate readers understand the archive.

The crate is an RO-Crate 1.1 Workflow Run Crate (profile 0.5): its main entity is the Snakemake workflow
(`workflow/Snakefile`, a Workflow RO-Crate), and one `CreateAction` records the run that made the files,
with the configuration as its `object` and every results file as its `result`. Each file carries its
`contentSize` and `sha256` (the Workflow Run vocabulary's checksum term) from the manifest; each dataset's
folder carries the dataset's licence from toolshift's dataset registry.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from toolshift.bundles.manifest import RESULTS_PREFIX

CRATE_VERSION = "1.1"
PROFILES: dict[str, tuple[str, str]] = {
    "https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0"),
}
"""The profiles the crate conforms to (the root dataset's `conformsTo`)."""
RUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
WORKFLOW_FILE = "workflow/Snakefile"
CONFIG_FILE = "provenance/config.yaml"

ENCODINGS: dict[str, str] = {
    ".parquet": "application/vnd.apache.parquet",
    ".nc": "application/x-netcdf",
    ".jsonl": "application/jsonl",
    ".safetensors": "application/octet-stream",
    ".smk": "text/x-snakemake",
    ".tsv": "text/tab-separated-values",
    ".yaml": "application/yaml",
}


def encoding_of(name: str) -> str | None:
    """The media type of a file by its suffix (None when unknown)."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name.rsplit("/", 1)[-1] else ""
    return ENCODINGS.get(suffix) or mimetypes.guess_type(name)[0]


def _checksums(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"contentSize": entry["size"], "sha256": entry["sha256"]} if entry else {}


def crate_metadata(manifest: Mapping[str, Any], licenses: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The RO-Crate metadata (a JSON object) describing the files of `manifest`. `licenses` maps a dataset
    name to its licence (attached to the dataset's `results/data/{dataset}` folder)."""
    crate = ROCrate(version=CRATE_VERSION)
    crate.name = f"toolshift result bundle {manifest['config_hash'][:12]}"
    crate.description = (
        "The generation side of a toolshift run (prompts, conversations, model responses, residual-stream "
        f"activations stored as {manifest['activations_dtype']}, intervention responses and costs, vectors) "
        "with its configuration and provenance. Import it with `snakemake --config bundle=<this file>` to "
        "rerun the judges, tables, figures and book without a GPU."
    )
    crate.datePublished = manifest["created"]
    crate.root_dataset["version"] = manifest["toolshift_version"]
    workflow = crate.add_workflow(
        source=None,
        dest_path=WORKFLOW_FILE,
        main=True,
        lang="snakemake",
        properties={
            "name": "toolshift",
            "version": manifest["toolshift_version"],
            "description": "toolshift's Snakemake workflow; its code is the toolshift package at the git "
            f"commit {(manifest.get('rerun') or {}).get('git', {}).get('commit') or 'unknown'}",
            **_checksums(manifest["files"].get(WORKFLOW_FILE)),
        },
    )
    for profile, (name, version) in PROFILES.items():
        crate.add(
            ContextEntity(
                crate, profile, properties={"@type": "CreativeWork", "name": name, "version": version}
            )
        )
    crate.root_dataset["conformsTo"] = [{"@id": p} for p in PROFILES]
    crate.metadata.extra_contexts.append(RUN_CONTEXT)

    results, objects = [], []
    for name, entry in sorted(manifest["files"].items()):
        if name == WORKFLOW_FILE:
            continue
        properties: dict[str, Any] = _checksums(entry)
        encoding = encoding_of(name)
        if encoding:
            properties["encodingFormat"] = encoding
        if entry.get("rule"):
            properties["description"] = f"written by the workflow's rule `{entry['rule']}`"
        item = crate.add_file(source=None, dest_path=name, properties=properties)
        (results if name.startswith(RESULTS_PREFIX) else objects).append({"@id": item.id})
    for dataset, license_text in (licenses or {}).items():
        folder = f"{RESULTS_PREFIX}data/{dataset}/"
        if any(n.startswith(folder) for n in manifest["files"]):
            crate.add_dataset(
                source=None,
                dest_path=folder,
                properties={"name": f"dataset {dataset}", "license": license_text},
            )
    action = crate.add(
        ContextEntity(
            crate,
            f"#run-{manifest['config_hash'][:16]}",
            properties={
                "@type": "CreateAction",
                "name": "toolshift generation run (up to and including inference and interventions)",
                "instrument": {"@id": workflow.id},
                "object": [o for o in objects if o["@id"] == CONFIG_FILE] or objects,
                "result": results,
                "endTime": manifest["created"],
                "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
            },
        )
    )
    crate.root_dataset["mentions"] = [{"@id": action.id}]
    return crate.metadata.generate()
