#!/usr/bin/env bash
# After envs/vllm.yml is created (Snakemake runs this by itself under --use-conda): vllm-lens 1.3.0 without
# its declared dependencies, as `make vllm-env` does (see envs/vllm-requirements.txt, `#! no-deps:`).
set -euo pipefail
python -m pip install --no-deps --ignore-requires-python "vllm-lens==1.3.0"
# toolshift itself, from the checkout whose Snakefile runs (rules/common.smk exports TOOLSHIFT_REPO)
python -m pip install --no-deps -e "${TOOLSHIFT_REPO:?rules/common.smk sets TOOLSHIFT_REPO}"
