"""Rule import_bundle (`--config bundle=PATH_OR_URL`): the bundle's generation-side files, checked against its
manifest, -> their places under the results root, and the import record (toolshift.bundles.importer)."""

from pathlib import Path

from toolshift.bundles.importer import RECORD, open_for_import, place
from toolshift.common.steps import log, run_step


def main(smk) -> None:
    results = Path(smk.output.record).parents[len(Path(RECORD).parts) - 1]
    bundle, accepted = open_for_import(smk.config)
    record = place(
        bundle,
        results,
        [(rel, bool(is_dir)) for rel, is_dir in smk.params.imported],
        source=str(smk.config["bundle"]),
        accepted=accepted,
        recomputed=list(smk.params.recomputed),
        archive_sha256=smk.config.get("bundle_sha256"),
    )
    log.info(
        "bundle %s: %d files (%.1f MB) placed, activations %s%s",
        smk.config["bundle"],
        record["placed_files"],
        record["placed_bytes"] / 1e6,
        record["activations_dtype"],
        f"; accepted mismatch: {accepted}" if accepted else "",
    )


run_step(snakemake, main)
