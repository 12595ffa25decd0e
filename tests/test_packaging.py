"""pyproject.toml's ranges, the locks (envs/requirements-lock.txt, envs/vllm-requirements-lock.txt) and
environment.yml agree: every dependency is bounded and locked within its bounds, environment.yml pins the
main lock's versions, and `make install` / `make vllm-env` rebuild when a lock changes."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from toolshift.common.lockfile import (
    LOCKED_PYTHON,
    MAIN_LOCK,
    VLLM_LOCK,
    canonical,
    differences,
    environment_yml_text,
    lock_text,
    read_lock,
    vllm_directives,
)
from toolshift.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    spec = ",".join(sorted(part.strip() for part in match.group(2).replace(" ", "").split(",") if part))
    return name, spec


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements(extras: bool = True) -> list[Requirement]:
    project = _pyproject()["project"]
    lines = project["dependencies"] + (project["optional-dependencies"]["dev"] if extras else [])
    return [Requirement(line) for line in lines]


def test_the_main_lock_holds_every_dependency_within_its_range():
    locked = read_lock(MAIN_LOCK)
    for requirement in _requirements():
        entry = locked.get(canonical(requirement.name))
        assert entry is not None, f"{requirement.name} is not in {MAIN_LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(entry.version, prereleases=True), (requirement, entry.version)
    assert canonical("toolshift") not in locked and "pip" in locked  # installed editable; pip itself locked


def test_the_main_lock_has_the_makefiles_torch_pair():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    spec = re.search(r"^LOCKED_TORCH_SPEC := (.+)$", makefile, flags=re.M).group(1).split()
    locked = read_lock(MAIN_LOCK)
    assert spec == [f"{n}=={locked[n].version}" for n in ("torch", "torchvision")]


def test_environment_yml_pins_the_main_lock():
    """environment.yml is the lock's versions (`make lock` writes it from the lock): every package, equal."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = dict(line.split("==") for line in pip)
    assert pinned == {name: entry.version for name, entry in read_lock(MAIN_LOCK).items()}
    assert (REPO / "environment.yml").read_text() == environment_yml_text(read_lock(MAIN_LOCK))


def test_python_bounds_agree():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python "))
    assert python == "python {}.{}.*".format(*LOCKED_PYTHON)
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert Version("{}.{}.0".format(*LOCKED_PYTHON)) in requires


def test_the_vllm_lock_keeps_the_pins_and_steps_of_its_requirements():
    """envs/vllm-requirements-lock.txt is the environment envs/vllm-requirements.txt describes: its pins,
    the no-deps package, none of the removed ones, toolshift's dependencies within their ranges."""
    locked = read_lock(VLLM_LOCK)
    steps = vllm_directives()
    for line in steps["requirements"] + steps["no-deps"]:
        requirement = Requirement(line)
        entry = locked[canonical(requirement.name)]
        assert requirement.specifier.contains(entry.version, prereleases=True), (line, entry.version)
    assert not {canonical(n) for n in steps["remove"]} & set(locked)
    for requirement in _requirements(extras=False):
        entry = locked[canonical(requirement.name)]
        assert requirement.specifier.contains(entry.version, prereleases=True), (requirement, entry.version)
    assert canonical("toolshift") not in locked


def test_lock_files_round_trip_and_bad_entries_are_named(tmp_path):
    locked = read_lock(MAIN_LOCK)
    path = tmp_path / "round-trip.txt"
    path.write_text(lock_text(locked, title="t", command="main", origin="o"), encoding="utf-8")
    assert read_lock(path) == locked
    assert all(len(entry.hashes) == 1 and len(entry.hashes[0]) == 64 for entry in locked.values())
    bad = tmp_path / "lock.txt"
    bad.write_text("numpy>=2 \\\n    --hash=sha256:" + "0" * 64 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lock.txt: entry 1 'numpy>=2 .*' is not `name==version"):
        read_lock(bad)
    bad.write_text("numpy==2.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="numpy==2.0 has no --hash"):
        read_lock(bad)


def test_differences_name_every_package_off_the_lock():
    locked = read_lock(MAIN_LOCK)
    installed = {name: entry.version for name, entry in locked.items()}
    assert differences(locked, installed) == []
    installed.update(transformers="0.1", extra="1.0", toolshift="9")
    del installed["numpy"]
    assert differences(locked, installed) == [
        ("extra", "not locked", "1.0"),
        ("numpy", locked["numpy"].version, "not installed"),
        ("transformers", locked["transformers"].version, "0.1"),
    ]


@pytest.mark.parametrize(
    ("target", "lock_var", "stamp"),
    [
        ("install", "LOCK", "v/.toolshift-installed"),
        ("vllm-env", "VLLM_LOCK", "vv/.toolshift-vllm-installed"),
    ],
)
def test_make_rebuilds_an_environment_when_its_lock_changes(tmp_path, target, lock_var, stamp):
    """The Makefile's stamps depend on the lock: a lock newer than the stamp reinstalls (`make -n`)."""
    lock = tmp_path / "lock.txt"
    lock.write_text("# a lock\n", encoding="utf-8")
    stamp_path = tmp_path / stamp
    stamp_path.parent.mkdir()
    stamp_path.touch()
    args = ["make", "-n", "-C", str(REPO), target, f"VENV={tmp_path / 'v'}", f"VLLM_VENV={tmp_path / 'vv'}"]
    args.append(f"{lock_var}={lock}")

    def planned() -> str:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    newest = max(p.stat().st_mtime for p in REPO.glob("envs/*") if p.is_file())
    newest = max(newest, (REPO / "pyproject.toml").stat().st_mtime)
    os.utime(lock, (newest, newest))
    os.utime(stamp_path, (newest + 10, newest + 10))
    assert "--require-hashes" not in planned()  # up to date
    os.utime(lock, (newest + 20, newest + 20))
    assert "--require-hashes --no-deps" in planned() and str(lock) in planned()


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
