"""Result bundles: the generation side of a run packed into one RO-Crate zip with a checked manifest
(`snakemake bundle`, `make bundle`), and its import into a results folder (`snakemake --config bundle=...`)
so that everything after generation reruns on a machine without a GPU.

- `manifest`: the manifest (`toolshift-bundle.json`): every file's sha256 and size, the config hash, what a
  re-run needs; the config and version comparison.
- `archive`: reading a bundle zip safely: structural checks from its central directory, then extraction
  into a staging folder with every file's size and hash checked while it is read.
- `crate`: the RO-Crate metadata (`ro-crate-metadata.json`, Workflow Run Crate profile) from a manifest.
- `pack`: making a bundle from a results folder.
- `importer`: finding a bundle (path, URL through pooch, the offline `data_mirror`), checking it against the
  config and placing its files.
"""
