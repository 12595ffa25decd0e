"""`config/paper.yaml` made runnable in CI (tests/test_paper_config.py runs it to the book).

What changes and what does not: the datasets and their options, the conditions, every intervention kind
(subtract, ablate, ablate_refusal in every condition, transfer pairs) and every other key of the paper
config are kept, so that a config that would fail after hours of GPU time fails here.
What is cut, for time only (`make test` runs this): the hub models are replaced by tiny fixtures of the
same families (`PAPER_TEST_MODELS` of them, see there), the judges to the keyword judge (the model judges'
rules run in the reduced DAG of tests/dag.py), the add and random alphas and seeds to two and one, every
dataset to `PER_CLASS` prompts per class, generation to a few tokens on the CPU in one shard, the bootstrap
to 200 resamples, the FigStep fidelity check to 2 images.

Data: the benchmark files that are on disk (FigStep SafeBench, JBB benign behaviors, MM-SafetyBench's
questions: ../shared/data) are used as they are; the ones that are not get tiny synthetic stand-ins in the
registry's mirror layout (`stand_in_mirror`), with neutral placeholder text only: the MM-SafetyBench images
zip (SD_TYPO members for the selected questions), JailbreakV-28K's mini CSV and images, and HADES's two
parquet files. HADES's files are pinned by sha256 in the registry itself, which a stand-in cannot match:
`unpin_hades` writes a `sitecustomize` module that the test puts on the PYTHONPATH of the Snakemake run, so
that in its processes (and nowhere else) the registry's HADES entry takes the stand-in files without the
pin; the `prompts` rule then builds HADES's prompts like every other dataset's. The stand-ins are recorded
in the test's own copy of the lock file, never in the committed one.
"""

from __future__ import annotations

import copy
import io
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from conftest import require_shared, shared_data_dir
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
PER_CLASS = 5
"""Prompts per class and dataset: 2 train, 1 validation, 2 test of each class (the fewest for which every
split has a prompt of each class: vectors, selection and reported tables all have rows)."""
PAPER_TEST_MODELS = 1
"""How many of the paper's models run (in config order, each as a fixture of its family). Every family
goes through render, generate, capture, intervene and the free loop in tests/test_families.py and several
models through the reduced DAG (tests/dag.py); the DAG's shape does not depend on the family, and each
further model adds about 35 jobs (a minute and a half of CPU) to `make test`."""
FIXTURE_SIZE = {"hidden_size": 32, "num_layers": 3, "num_heads": 2}


def paper_config(work: Path, mirror: Path, lock: Path) -> dict:
    """The paper config with its hub models and judges replaced by fixtures and everything cut small."""
    cfg = yaml.safe_load(PAPER.read_text(encoding="utf-8"))
    cfg["results"] = str(work / "results")
    cfg["book_dir"] = str(work / "book")
    cfg["data_mirror"] = str(mirror)
    cfg["data_lock"] = str(lock)
    for options in cfg["datasets"].values():
        options["limit_per_class"] = PER_CLASS
    models = list(cfg["models"].items())[:PAPER_TEST_MODELS]
    cfg["models"] = {
        name: {"family": entry["family"], "source": "fixture", "fixture": {"seed": i, **FIXTURE_SIZE}}
        for i, (name, entry) in enumerate(models)
    }
    # the keyword judge only: a model judge job costs a model load per dataset, and the reduced DAG of
    # tests/dag.py runs the fixture Llama Guard and HarmBench judges through the same rules
    cfg["judges"], cfg["headline_judge"], cfg["judge_models"] = ["keyword"], "keyword", {}
    # every intervention kind of the grid, with fewer alphas and seeds (the runs of a job share its load)
    iv = cfg["interventions"]
    iv["add"]["alphas"] = [0, 1]
    iv["random"] = {"alphas": [1], "seeds": [0]}
    cfg["generation"].update(max_new_tokens=4, batch_size=8, device="cpu", shards=1, gpu_mem_mb=0)
    cfg["free"] = {"max_turns": 2, "max_new_tokens": 8}
    cfg["cost"] = {"prompt_positions": 4, "n_generated": 2}
    cfg["stats"] = {"n_boot": 200, "seed": 0}
    cfg["validation"] = {**cfg["validation"], "figstep_every": 250}
    return cfg


# --------------------------------------------------------------------------- the stand-in mirror


def _image(
    text: str, size: tuple[int, int] = (224, 224), colour: tuple[int, int, int] = (90, 140, 200)
) -> bytes:
    img = Image.new("RGB", size, colour)
    ImageDraw.Draw(img).text((8, size[1] - 20), text, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(src.resolve())


def stand_in_mirror(mirror: Path, lock: Path) -> Path:
    """A data mirror: the shared benchmark files the paper needs (linked) and stand-ins for the rest."""
    from toolshift.datasets.downloads import data_source
    from toolshift.datasets.prompts import select_rows
    from toolshift.datasets.sources import JBV_DIR, load_mmsb

    shared = shared_data_dir()
    for part in ("figstep_safebench", "jailbreakbench_behaviors"):
        _link(require_shared(shared / part), mirror / part)
    for part in ("processed_questions", "TinyVersion_ID_List.json"):
        _link(require_shared(shared / "mm_safetybench" / part), mirror / "mm_safetybench" / part)
    # MM-SafetyBench's images zip: an SD_TYPO image for each question the run selects
    source = data_source(mirror, mirror, mirror / ".cache", lock)
    rows = select_rows(load_mmsb(source, variant="SD_TYPO"), PER_CLASS)
    with zipfile.ZipFile(mirror / "mm_safetybench" / "MM-SafetyBench(imgs).zip", "w") as zf:
        for image_source in rows["image_source"]:
            zf.writestr(f"imgs/{image_source.member}", _image("stand-in SD_TYPO"))
    # JailbreakV-28K's mini split: neutral placeholders, five policies
    jbv = mirror / "jailbreakv_28k" / JBV_DIR
    jbv.mkdir(parents=True)
    records = []
    for i in range(2 * PER_CLASS):
        path = f"stand_in/image_{i}.png"
        (jbv / "stand_in").mkdir(exist_ok=True)
        (jbv / path).write_bytes(_image(f"stand-in {i}", colour=(200, 120, 60)))
        records.append(
            {"id": i, "jailbreak_query": f"[stand-in jailbreak query {i}]",
             "redteam_query": f"[stand-in request {i}]", "format": "SD", "policy": f"Policy {i % 5}",
             "image_path": path}
        )  # fmt: skip
    pd.DataFrame(records).to_csv(jbv / "mini_JailBreakV_28K.csv", index=False)
    # HADES: two parquet files, the last optimisation step of each instruction
    for k, name in enumerate(("test-00000-of-00002", "test-00001-of-00002")):
        rows = []
        for i in range(PER_CLASS):
            for step in (0, 5):
                rows.append(
                    {"id": f"{k}{i}", "scenario": f"scenario{i % 3}", "keywords": f"keyword{i}", "step": step,
                     "category": "object", "instruction": f"[stand-in instruction on keyword{i}]",
                     "image": {"bytes": _image(f"hades {k}{i}", colour=(60, 160, 90)), "path": None}}
                )  # fmt: skip
        out = mirror / "hades" / "data" / f"{name}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out)
    return mirror


UNPIN_HADES = '''"""Written by tests/paper_dag.py for one test run (see there): the registry pins HADES's
files by sha256, which their stand-ins cannot match; in the processes of this run only, HADES's entry takes
its files without the pin."""

import importlib.abc
import importlib.machinery
import sys


class _UnpinHades(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "toolshift.datasets.sources":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            from dataclasses import replace

            run(module)
            files = tuple(replace(f, sha256=None) for f in module.HADES_FILES)
            spec_ = module.BENCHMARKS["hades"]
            module.BENCHMARKS["hades"] = replace(
                spec_, files=files, loader=lambda source: module.load_hades(source, files=files)
            )

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _UnpinHades())
'''


def unpin_hades(folder: Path) -> Path:
    """A folder holding the `sitecustomize` module that lifts HADES's registry pin (module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(UNPIN_HADES, encoding="utf-8")
    return folder


def prepare_paper_run(work: Path) -> tuple[dict, Path]:
    """The stand-in mirror, the test's lock file and `work/config.yaml`: (the config, the folder to put on
    the PYTHONPATH of the Snakemake run, `unpin_hades`)."""
    lock = work / "datasets.lock.yaml"
    shutil.copyfile(REPO / "config" / "datasets.lock.yaml", lock)
    mirror = stand_in_mirror(work / "mirror", lock)
    cfg = paper_config(work, mirror, lock)
    (work / "config.yaml").write_text(yaml.safe_dump(copy.deepcopy(cfg)), encoding="utf-8")
    return cfg, unpin_hades(work / "site")
