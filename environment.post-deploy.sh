#!/usr/bin/env bash
# After environment.yml is created (Snakemake runs this by itself under --use-conda): toolshift itself, from the
# checkout whose Snakefile runs (rules/common.smk exports TOOLSHIFT_REPO), editable and without dependencies
# (environment.yml has them), so that the rule scripts import it as any installed package.
set -euo pipefail
python -m pip install --no-deps -e "${TOOLSHIFT_REPO:?rules/common.smk sets TOOLSHIFT_REPO}"
