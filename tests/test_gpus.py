"""GPU claiming: each job locks a different GPU index, and a lock dies with its holder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from toolshift.errors import ToolshiftError
from toolshift.models import gpus


def _claim_in_child(directory, n_gpus: int) -> subprocess.Popen:
    code = (
        "import sys, time; from pathlib import Path; from toolshift.models.gpus import claim_gpu; "
        f"print(claim_gpu({n_gpus}, Path({str(directory)!r})), flush=True); time.sleep(30)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_jobs_get_different_gpus_and_a_dead_job_frees_its_gpu(tmp_path):
    first = _claim_in_child(tmp_path, 2)
    second = _claim_in_child(tmp_path, 2)
    try:
        claimed = {int(first.stdout.readline()), int(second.stdout.readline())}
        assert claimed == {0, 1}
        with pytest.raises(ToolshiftError, match="all 2 GPU"):
            gpus.claim_gpu(2, tmp_path)
        first.kill()
        first.wait()
        assert gpus.claim_gpu(2, tmp_path) in {0, 1}
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
        for handle in gpus._HELD:
            handle.close()
        gpus._HELD.clear()


def test_cpu_jobs_claim_nothing():
    assert gpus.job_device("cpu") == "cpu"
