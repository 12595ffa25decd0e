"""Rule bundle (`make bundle`): the generation side of the results folder -> one RO-Crate zip with its
manifest, {results}/bundle/toolshift-bundle.zip (toolshift.bundles.pack)."""

from pathlib import Path

from toolshift.bundles.manifest import file_record
from toolshift.bundles.pack import make_bundle
from toolshift.common.steps import log, run_step
from toolshift.datasets.downloads import DEFAULT_LOCK
from toolshift.datasets.prompts import DATASETS


def main(smk) -> None:
    out = Path(smk.output[0])
    results = Path(out).parents[1]  # {results}/bundle/toolshift-bundle.zip
    manifest = make_bundle(
        results=results,
        files=[tuple(f) for f in smk.params.files],
        out=out,
        config=dict(smk.config),
        repo=Path(smk.params.repo),
        float16=bool(smk.params.float16),
        data_lock=smk.params.data_lock or DEFAULT_LOCK,
        benchmarks=list(smk.params.benchmarks),
        gpu_benchmarks=list(smk.params.gpu_benchmarks),
        licenses={d: DATASETS[d].license for d in smk.params.datasets if d in DATASETS},
    )
    record = file_record(out)
    log.info(
        "bundle: %s, %d files, %.1f MB, activations %s, sha256 %s (publish it beside the archive; importers "
        "pass it as bundle_sha256)",
        out,
        len(manifest["files"]),
        record["size"] / 1e6,
        manifest["activations_dtype"],
        record["sha256"],
    )


run_step(snakemake, main)
