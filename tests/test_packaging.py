"""pyproject.toml and environment.yml carry the same dependencies with the same bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI ones
CONDA_TO_PYPI = {"pytorch": "torch", "snakemake-minimal": "snakemake", "matplotlib-base": "matplotlib"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    spec = ",".join(sorted(part.strip() for part in match.group(2).replace(" ", "").split(",") if part))
    return name, spec


def test_environment_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    from_pyproject = dict(_split(r) for r in pyproject["project"]["dependencies"])
    from_conda = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):
            continue
        name, spec = _split(dep)
        if name in ("python", "pip"):
            continue
        from_conda[CONDA_TO_PYPI.get(name, name)] = spec
    assert from_conda == from_pyproject


def test_python_bounds_agree():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python "))
    assert _split(python)[1] == _split("python " + pyproject["project"]["requires-python"])[1]


def test_every_dependency_is_bounded():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["dependencies"]:
        name, spec = _split(requirement)
        assert ">=" in spec, f"{name} has no lower bound"
        assert "<" in spec, f"{name} has no upper bound"


def test_the_installed_package_version_matches():
    import importlib.metadata

    import toolshift

    assert importlib.metadata.version("toolshift") == toolshift.__version__


def test_the_rules_environments_install_this_checkout(tmp_path):
    """Under --use-conda each rule environment's post-deploy script installs the checkout whose Snakefile
    runs (rules/common.smk exports TOOLSHIFT_REPO), editable and without dependencies."""
    import subprocess

    common = (REPO / "rules" / "common.smk").read_text()
    assert "os.environ.update(TOOLSHIFT_REPO=" in common
    for env in ("environment.yml", "envs/vllm.yml"):
        script = (REPO / env).with_suffix(".post-deploy.sh")
        text = script.read_text()
        assert 'pip install --no-deps -e "${TOOLSHIFT_REPO:?' in text, script
        # without TOOLSHIFT_REPO the script stops at once, naming the variable (nothing is installed)
        fake_bin = tmp_path / "bin"
        fake_bin.mkdir(exist_ok=True)
        (fake_bin / "python").write_text("#!/bin/sh\nexit 0\n")
        (fake_bin / "python").chmod(0o755)
        env_vars = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
        proc = subprocess.run(["bash", str(script)], env=env_vars, capture_output=True, text=True)
        assert proc.returncode != 0 and "TOOLSHIFT_REPO" in proc.stderr, (script, proc.stderr)
