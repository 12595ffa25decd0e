"""Shared pytest fixtures: the shared benchmark data (skip, or fail under CI=true, without it), the default
fixture models and the planted worlds built (and loaded) once per session, and (tests/dag.py) the reduced
DAG run the end-to-end tests share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
"""CI sets CI=true. There every input a test needs is present (.ci/run lays out the shared data, installs
SLURM, `make test` builds the vLLM environment), so a test that would skip for a missing input fails."""


def shared_data_dir() -> Path:
    """The real benchmark files: $TOOLSHIFT_SHARED_DATA, else <repo>/../shared/data."""
    return Path(os.environ.get("TOOLSHIFT_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory; without it the test skips with the reason (fails under CI=true)."""
    path = shared_data_dir()
    if not path.is_dir():
        skip_or_fail(f"shared data directory {path} is absent (set TOOLSHIFT_SHARED_DATA to it)")
    return path


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test with `reason`, or fail it under CI=true (where a skip would hide a broken setup)."""
    if IN_CI:
        pytest.fail(f"CI=true, so this test may not skip: {reason}", pytrace=False)
    pytest.skip(reason)


def require_shared(path: Path) -> Path:
    """`path` (a file or folder of the shared data); the test skips, or fails under CI=true, without it."""
    if not path.exists():
        skip_or_fail(f"{path} is absent (set TOOLSHIFT_SHARED_DATA to the shared data directory)")
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Under CI=true, a missing shared data folder stops the session at once, in one line naming it."""
    path = shared_data_dir()
    if IN_CI and not path.is_dir():
        pytest.exit(
            f"CI=true but the shared data folder {path.resolve()} is missing "
            "(set TOOLSHIFT_SHARED_DATA to it; .ci/run uses ../shared/data)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def fixture_model_dirs(tmp_path_factory) -> dict:
    """The default fixture models (toolshift.models.fixtures.FIXTURE_FAMILIES, seed 0), built once per
    session: family -> model directory."""
    from toolshift.models.fixtures import FIXTURE_FAMILIES, build_fixture

    root = tmp_path_factory.mktemp("fixture_models")
    return {family: build_fixture(family, root / family, seed=0) for family in FIXTURE_FAMILIES}


@pytest.fixture(scope="session")
def fixture_models(fixture_model_dirs) -> dict:
    """Those models loaded through toolshift.models.loading (family -> LoadedModel). Shared by every test
    module: a test removes the hooks it registers and never changes the weights."""
    from toolshift.models.loading import load_model

    return {family: load_model(path, family) for family, path in fixture_model_dirs.items()}


PLANTED_WORLDS: dict[str, str] = {
    "tool": "planted-tool",
    "trace": "planted-trace",
    "dilution": "planted-dilution",
}
"""The planted worlds of the embedded default: world -> model entry."""


@pytest.fixture(scope="session")
def planted_world_dirs(tmp_path_factory) -> dict:
    """The planted worlds built once per session from the embedded default's model entries and episode
    options (each build calibrates on `mini`): world -> model directory. tests/test_planted_model.py checks
    them; tests/test_planted_dag.py hands them to its DAG run as built."""
    import yaml

    from toolshift.models.fixtures import build_fixture

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    root = tmp_path_factory.mktemp("planted_worlds")
    return {
        world: build_fixture(
            cfg["models"][model]["family"],
            root / model,
            episodes=cfg["episodes"],
            **cfg["models"][model]["fixture"],
        )
        for world, model in PLANTED_WORLDS.items()
    }


@pytest.fixture(scope="session")
def family_fixture_dir(tmp_path_factory):
    """A function family -> the directory of that family's fixture model (default sizes, seed 0), built at
    most once per session (tests/test_families.py and tests/test_native_families.py share them)."""
    from toolshift.models.fixtures import build_fixture

    root = tmp_path_factory.mktemp("family_fixtures")
    built: dict = {}

    def get(family: str):
        if family not in built:
            built[family] = build_fixture(family, root / family, seed=0)
        return built[family]

    return get


@pytest.fixture(scope="session")
def dag_run(tmp_path_factory):
    """The reduced embedded config run end to end once (tests/dag.py): (work folder, config)."""
    from dag import run_reduced_dag

    return run_reduced_dag(tmp_path_factory.mktemp("dag"))
