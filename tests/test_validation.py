"""Validation tables of the report: planted truth through the analysis library, FigStep fidelity, and the
planted worlds' world x claim table (every cell against the world's truth).

The planted-truth table must pass on a correct pipeline and fail, on the row concerned, when a library
step is broken (a negated tool vector, layer selection without the exclusion of the last layers, a
McNemar test that always rejects). The FigStep table reports exactly the pixels that differ, and finds
the original images through the registry's mirror or download machinery, fetching only those compared.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pooch
import pytest
from conftest import require_shared
from PIL import Image

from toolshift.checks import figstep_fidelity, planted_truth
from toolshift.checks.figstep_fidelity import figstep_fidelity_summary, figstep_fidelity_table
from toolshift.checks.planted_truth import planted_truth_table
from toolshift.checks.planted_worlds import check_world_cells, world_claim_table
from toolshift.contracts import CLAIMS_COLUMNS, FIDELITY_COLUMNS, PLANTED_COLUMNS, WORLD_CLAIM_COLUMNS
from toolshift.datasets.downloads import DataSource, data_source, read_lock
from toolshift.datasets.sources import SAFEBENCH_CSV
from toolshift.datasets.typography import render_figstep
from toolshift.errors import ConfigError, ContractError, DataError, ToolshiftError
from toolshift.models.fixture_models.planted import WORLD_TRUTH

CHECKS = {
    "tool_vector",
    "refusal_direction",
    "selected_layer",
    "decoy_excluded",
    "asr_mcnemar",
    "headline_rr",
    "null_mcnemar_fpr",
    "null_bootstrap_fpr",
    "null_headline_fpr",
}
REPO = Path(__file__).resolve().parents[1]
SMALL = {"n_models": 1, "n_null": 40, "n_boot": 200}  # fast settings for the tests that break a step


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- planted truth


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return planted_truth_table(seed=0)


def test_every_planted_check_passes(planted):
    with pd.option_context("display.width", 200, "display.max_colwidth", 50):
        print("\n", planted.drop(columns="description"))
    assert list(planted.columns) == list(PLANTED_COLUMNS)
    assert list(planted["check"]) == sorted(CHECKS, key=list(planted["check"]).index)
    assert set(planted["check"]) == CHECKS
    assert planted["passed"].dtype == bool and planted["passed"].all()
    assert planted["description"].str.endswith(".").all()
    assert planted["criterion"].str.len().gt(0).all()
    by = planted.set_index("check")
    assert by.loc["tool_vector", "recovered"] > 0.99 and by.loc["refusal_direction", "recovered"] > 0.99
    assert by.loc["selected_layer", "recovered"] == planted_truth.PLANTED_LAYER
    head = by.loc["headline_rr"]
    assert head["ci_low"] <= planted_truth.PLANTED_RR <= head["ci_high"]
    assert head["ci_low"] < head["recovered"] < head["ci_high"]
    assert by.loc["asr_mcnemar", "recovered"] < 0.05
    for check in ("null_mcnemar_fpr", "null_bootstrap_fpr", "null_headline_fpr"):
        assert 0 <= by.loc[check, "recovered"] <= planted_truth.fp_bound(300) / 300


def test_the_table_is_deterministic_by_seed():
    a = planted_truth_table(seed=3, **SMALL)
    pd.testing.assert_frame_equal(a, planted_truth_table(seed=3, **SMALL))
    b = planted_truth_table(seed=4, **SMALL)
    assert not np.allclose(a["recovered"], b["recovered"])


def test_a_negated_tool_vector_fails_its_row(monkeypatch):
    real = planted_truth.vectors_mod.compute_vectors

    def negated(*args, **kwargs):
        ds = real(*args, **kwargs)
        return ds.assign(tool_vector=-ds["tool_vector"])

    monkeypatch.setattr(planted_truth.vectors_mod, "compute_vectors", negated)
    table = planted_truth_table(seed=0, **SMALL).set_index("check")
    assert not table.loc["tool_vector", "passed"]
    assert table.loc["tool_vector", "recovered"] < -0.99
    assert table.loc["refusal_direction", "passed"] and table.loc["selected_layer", "passed"]


def test_a_shuffled_refusal_direction_fails_its_row(monkeypatch):
    real = planted_truth.vectors_mod.compute_vectors

    def shuffled(*args, **kwargs):
        ds = real(*args, **kwargs)
        r = ds["refusal_direction"]
        return ds.assign(refusal_direction=r.copy(data=r.values[::-1]))  # layers out of order

    monkeypatch.setattr(planted_truth.vectors_mod, "compute_vectors", shuffled)
    table = planted_truth_table(seed=0, **SMALL).set_index("check")
    assert not table.loc["refusal_direction", "passed"] and table.loc["tool_vector", "passed"]


def test_selection_without_the_layer_exclusion_fails_the_layer_rows(monkeypatch):
    import toolshift.analysis.vectors

    real = toolshift.analysis.vectors.select_from_scores

    def no_exclusion(scores, criterion, **kwargs):
        return real(scores, criterion, exclude_last_frac=0.0)

    monkeypatch.setattr(toolshift.analysis.vectors, "select_from_scores", no_exclusion)
    table = planted_truth_table(seed=0, **SMALL).set_index("check")
    assert table.loc["selected_layer", "recovered"] == planted_truth.DECOY_LAYER
    assert not table.loc["selected_layer", "passed"] and not table.loc["decoy_excluded", "passed"]
    assert table.loc["tool_vector", "passed"]


def test_a_test_that_always_rejects_fails_the_null_row(monkeypatch):
    import toolshift.analysis.tables

    monkeypatch.setattr(toolshift.analysis.tables, "mcnemar_exact", lambda a, b: 0.001)
    table = planted_truth_table(seed=0, **SMALL).set_index("check")
    assert not table.loc["null_mcnemar_fpr", "passed"]
    assert table.loc["null_mcnemar_fpr", "recovered"] == 1.0
    assert table.loc["asr_mcnemar", "passed"]  # the planted effect itself still looks significant


@pytest.mark.parametrize(
    "kwargs, key", [({"n_models": 0}, "n_models"), ({"n_null": 2.5}, "n_null"), ({"n_boot": 10}, "n_boot")]
)
def test_bad_table_settings_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as exc:
        planted_truth_table(**kwargs)
    assert key in one_line(exc)


# --------------------------------------------------------------------------- FigStep fidelity

SENTENCES = [f"Steps to plant tree number {i}." for i in range(6)]  # harmless stand-ins


def toy_safebench(tmp_path, rows=SENTENCES, categories=True):
    """A SafeBench-shaped CSV with harmless instructions and 'original' images rendered by us."""
    images = tmp_path / "images"
    images.mkdir()
    df = pd.DataFrame(
        {
            "dataset": "ForbidQI",
            "category_id": [1 + i % 3 for i in range(len(rows))],
            "task_id": [1 + i // 3 for i in range(len(rows))],
            "category_name": [f"Topic {1 + i % 3}" for i in range(len(rows))],
            "question": rows,
            "instruction": rows,
        }
    )
    if not categories:
        df = df.drop(columns="category_name")
    csv = tmp_path / "safebench.csv"
    df.to_csv(csv, index=False)
    for row in df.itertuples():
        render_figstep(row.instruction).save(
            images / figstep_fidelity.safebench_image_name(row.category_id, row.task_id)
        )
    return csv, images


def test_identical_images_and_a_planted_difference(tmp_path):
    csv, images = toy_safebench(tmp_path)
    altered = images / figstep_fidelity.safebench_image_name(3, 1)  # data row 2
    arr = np.asarray(render_figstep(SENTENCES[2])).copy()
    arr[700:710, 100:105] = (0, 0, 255)  # 50 pixels in the blank bottom
    Image.fromarray(arr).save(altered)
    table = figstep_fidelity_table(csv, images, every=1)
    assert list(table.columns) == list(FIDELITY_COLUMNS) and len(table) == 6
    assert list(table["dataset_row"]) == list(range(6))
    assert list(table["category"]) == [f"Topic {1 + i % 3}" for i in range(6)]
    assert (table["n_pixels"] == 760 * 760).all()
    assert list(table["n_differing_pixels"]) == [0, 0, 50, 0, 0, 0]
    assert list(table["identical"]) == [True, True, False, True, True, True]
    assert table.loc[2, "agreement"] == pytest.approx(1 - 50 / 760**2)
    summary = figstep_fidelity_summary(table)
    assert summary["n"] == 6 and summary["n_identical"] == 5 and summary["n_categories"] == 3
    assert summary["min_agreement"] == pytest.approx(1 - 50 / 760**2) and summary["passed"]
    assert not figstep_fidelity_summary(table, min_agreement=1.0)["passed"]
    every2 = figstep_fidelity_table(csv, images, every=2)
    assert list(every2["dataset_row"]) == [0, 2, 4] and list(every2["n_differing_pixels"]) == [0, 50, 0]


def test_a_wrong_size_image_differs_everywhere_and_category_is_optional(tmp_path):
    csv, images = toy_safebench(tmp_path, rows=SENTENCES[:1], categories=False)
    render_figstep(SENTENCES[0]).resize((380, 380)).save(images / figstep_fidelity.safebench_image_name(1, 1))
    table = figstep_fidelity_table(csv, images)
    assert table.loc[0, "category"] == "" and table.loc[0, "n_differing_pixels"] == 380 * 380
    assert table.loc[0, "agreement"] == 0.0 and not table.loc[0, "identical"]
    assert not figstep_fidelity_summary(table)["passed"]
    assert not figstep_fidelity_summary(table.iloc[:0])["passed"]


def test_bad_fidelity_inputs_are_one_line_errors(tmp_path):
    csv, images = toy_safebench(tmp_path)
    with pytest.raises(DataError) as exc:
        figstep_fidelity_table(tmp_path / "absent.csv", images)
    assert "absent.csv" in one_line(exc)
    no_col = tmp_path / "no_instruction.csv"
    pd.read_csv(csv).drop(columns="instruction").to_csv(no_col, index=False)
    with pytest.raises(DataError) as exc:
        figstep_fidelity_table(no_col, images)
    assert "no_instruction.csv" in one_line(exc) and "instruction" in one_line(exc)
    (images / figstep_fidelity.safebench_image_name(1, 2)).unlink()  # data row 3
    with pytest.raises(DataError) as exc:
        figstep_fidelity_table(csv, images, every=1)
    assert "query_ForbidQI_1_2_6.png" in one_line(exc) and "row 4" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        figstep_fidelity_table(csv, images, every=0)
    assert "every" in one_line(exc)


# --------------------------------------------------------------------------- the registry path


@pytest.fixture
def safebench_root(shared_data):
    root = shared_data / "figstep_safebench"
    require_shared(root / "safebench.csv")
    return root


def test_the_mirror_is_used_and_only_compared_images_are_locked(shared_data, safebench_root, tmp_path):
    lock = tmp_path / "lock.yaml"
    source = data_source(tmp_path / "results", data_mirror=shared_data, data_lock=lock)
    csv, images = figstep_fidelity.fetch_safebench_reference(source, every=50)
    assert csv == safebench_root / "safebench.csv"
    assert images == safebench_root / "images" / "SafeBench"
    locked = read_lock(lock)
    assert len(locked) == 10 and all(k.startswith(figstep_fidelity.SAFEBENCH_IMAGE_DIR + "/") for k in locked)
    assert not (tmp_path / "results").exists()  # nothing downloaded
    table = figstep_fidelity_table(csv, images, every=50)
    assert len(table) == 10 and figstep_fidelity_summary(table)["passed"]


def test_a_partial_mirror_suffices_and_a_missing_image_is_named(safebench_root, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / figstep_fidelity.SAFEBENCH_IMAGE_DIR).mkdir(parents=True)
    shutil.copy(safebench_root / "safebench.csv", mirror / SAFEBENCH_CSV.relpath)
    rows = figstep_fidelity.read_safebench_rows(mirror / SAFEBENCH_CSV.relpath, every=100)
    names = [
        figstep_fidelity.safebench_image_name(c, t)
        for c, t in zip(rows["category_id"], rows["task_id"], strict=True)
    ]
    for name in names:
        shutil.copy(
            safebench_root / "images" / "SafeBench" / name, mirror / figstep_fidelity.SAFEBENCH_IMAGE_DIR
        )
    source = DataSource(cache=tmp_path / "cache", mirror=mirror, lock=tmp_path / "lock.yaml")
    _, images = figstep_fidelity.fetch_safebench_reference(source, every=100)
    assert sorted(p.name for p in images.iterdir()) == sorted(names)
    with pytest.raises(DataError) as exc:
        figstep_fidelity.fetch_safebench_reference(source, every=50)
    assert "file not found in data_mirror" in one_line(exc)


def test_without_a_mirror_the_images_are_downloaded_and_checked(safebench_root, monkeypatch, tmp_path):
    urls = []
    tamper = []

    class CopyDownloader:  # stands in for pooch's HTTP downloader: serves the shared files by URL
        def __init__(self, **kwargs):
            pass

        def __call__(self, url, output_file, pooch_obj, check_only=False):
            urls.append(url)
            local = safebench_root / url.split("/data/", 1)[1].removeprefix("question/")
            with open(output_file, "wb") as fh:
                fh.write(local.read_bytes() + b"".join(tamper))

    monkeypatch.setattr(pooch, "HTTPDownloader", CopyDownloader)
    source = data_source(tmp_path / "results", data_lock=tmp_path / "lock.yaml")
    csv, images = figstep_fidelity.fetch_safebench_reference(source, every=100)
    cache = tmp_path / "results" / "cache" / "downloads"
    assert csv == cache / SAFEBENCH_CSV.relpath and images == cache / figstep_fidelity.SAFEBENCH_IMAGE_DIR
    prefix = f"https://raw.githubusercontent.com/{figstep_fidelity.FIGSTEP_REPO}/{figstep_fidelity.FIGSTEP_COMMIT}/"
    assert urls[0] == SAFEBENCH_CSV.url and len(urls) == 6
    assert all(u.startswith(prefix + "data/images/SafeBench/query_ForbidQI_") for u in urls[1:])
    assert len(read_lock(tmp_path / "lock.yaml")) == 5
    figstep_fidelity.fetch_safebench_reference(source, every=100)
    assert len(urls) == 6  # cached copies are reused
    sorted(images.iterdir())[0].unlink()
    tamper.append(b"x")  # upstream changed: the download no longer matches the locked sha256
    with pytest.raises(DataError) as exc:
        figstep_fidelity.fetch_safebench_reference(source, every=100)
    message = one_line(exc)
    assert "query_ForbidQI_1_1_6.png" in message and "hash" in message.lower()


# --------------------------------------------------------------------------- the workflow script


def test_the_figstep_workflow_script_writes_the_table(shared_data, safebench_root, tmp_path):
    out = tmp_path / "results" / "tables" / "validation_figstep.csv"
    smk = SimpleNamespace(
        rule="validate_figstep",
        wildcards={},
        log=[str(tmp_path / "figstep.log")],
        output=[str(out)],
        params=SimpleNamespace(
            results=str(tmp_path / "results"),
            data_mirror=str(shared_data),
            data_cache=None,
            data_lock=str(tmp_path / "lock.yaml"),
            every=100,
        ),
    )
    runpy.run_path(str(REPO / "workflow_scripts" / "validate_figstep.py"), init_globals={"snakemake": smk})
    table = pd.read_csv(out)
    assert list(table.columns) == list(FIDELITY_COLUMNS) and len(table) == 5
    assert (table["agreement"] >= 0.999).all()
    assert "FigStep fidelity" in (tmp_path / "figstep.log").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the world x claim table


def claims_rows(verdicts: dict[str, dict[str, str]], judge: str = "keyword") -> pd.DataFrame:
    """A claims table (CLAIMS_COLUMNS) of model -> {claim: verdict} on mini."""
    rows = [
        {"model": model, "dataset": "mini", "judge": judge, "split": "test", "claim": claim,
         "verdict": verdict, "n_rows": 1, "components": f"{claim}: {verdict}", "missing": ""}
        for model, by_claim in verdicts.items()
        for claim, verdict in by_claim.items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(CLAIMS_COLUMNS))


def world_record(world: str) -> dict:
    return {"world": world, "truth": {k: list(v) for k, v in WORLD_TRUTH[world].items()},
            "calibration": {"dataset": "mini"}}  # fmt: skip


RIGHT = {
    "planted-tool": {**dict.fromkeys(["behaviour", "controls", "mechanism", "specificity"], "supported"),
                     "dose": "not shown"},
    "planted-trace": {"behaviour": "supported", "controls": "contradicted", "mechanism": "supported",
                      "specificity": "not shown", "dose": "not shown"},
    "planted-dilution": {"behaviour": "supported", "controls": "not shown", "mechanism": "supported",
                         "specificity": "contradicted", "dose": "supported"},
    "fixture-llava": {"behaviour": "not shown", "controls": "not shown", "mechanism": "inconclusive",
                      "specificity": "not shown", "dose": "not shown"},
}  # fmt: skip
WORLDS = {"planted-tool": "tool", "planted-trace": "trace", "planted-dilution": "dilution"}


def world_table(verdicts: dict[str, dict[str, str]]) -> pd.DataFrame:
    return world_claim_table(claims_rows(verdicts), worlds={m: world_record(w) for m, w in WORLDS.items()},
                             null_models=["fixture-llava"], judge="keyword")  # fmt: skip


def test_every_cell_of_the_right_verdicts_passes():
    table = world_table(RIGHT)
    assert list(table.columns) == list(WORLD_CLAIM_COLUMNS)
    assert len(table) == 20 and table["passed"].all()
    assert table["world"].tolist()[::5] == ["tool", "trace", "dilution", "null"]
    assert table["claim"].tolist()[:5] == ["behaviour", "controls", "mechanism", "specificity", "dose"]
    row = table[(table["model"] == "planted-dilution") & (table["claim"] == "controls")].iloc[0]
    assert row["expected"] == "contradicted or not shown"


@pytest.mark.parametrize(
    ("model", "claim", "verdict"),
    [
        ("planted-tool", "controls", "not tested"),  # the TOST rows dropped: the controls cannot be supported
        ("planted-tool", "specificity", "not shown"),  # v derived from the wrong control
        ("planted-trace", "controls", "supported"),  # the textual trace passed off as tool interaction
        ("planted-dilution", "behaviour", "not shown"),
        ("planted-dilution", "dose", "not shown"),  # the tokens model no longer names the dose
        ("planted-tool", "dose", "supported"),
        ("fixture-llava", "behaviour", "supported"),  # a false positive in the null world
    ],
)
def test_one_wrong_verdict_fails_its_cell_and_only_it(model, claim, verdict):
    wrong = {m: dict(v) for m, v in RIGHT.items()}
    wrong[model][claim] = verdict
    table = world_table(wrong)
    failed = table.loc[~table["passed"], ["model", "claim"]].values.tolist()
    assert failed == [[model, claim]]
    with pytest.raises(ToolshiftError) as exc:  # what fails rule validate_planted_model
        check_world_cells(table)
    assert f"1 of 20 world x claim cells wrong ({model} (" in one_line(
        exc
    ) and f"{claim}: {verdict}" in one_line(exc)
    check_world_cells(world_table(RIGHT))


def test_a_claim_the_run_lacks_and_a_record_without_truth():
    partial = {m: {k: v for k, v in c.items() if k != "specificity"} for m, c in RIGHT.items()}
    table = world_table(partial)
    missing = table[table["claim"] == "specificity"]
    assert (missing["verdict"] == "not tested").all() and not missing["passed"].any()
    with pytest.raises(ContractError, match="no 'truth'"):
        world_claim_table(claims_rows(RIGHT), worlds={"old": {"calibration": {"dataset": "mini"}}},
                          judge="keyword")  # fmt: skip
    with pytest.raises(ContractError, match="unknown claim"):
        bad = world_record("tool") | {"truth": {"claim 9": ["supported"]}}
        world_claim_table(claims_rows(RIGHT), worlds={"x": bad}, judge="keyword")


def test_only_the_named_judge_is_checked():
    both = pd.concat([claims_rows(RIGHT), claims_rows({m: dict.fromkeys(RIGHT[m], "not shown")
                                                       for m in RIGHT}, judge="llamaguard")])  # fmt: skip
    table = world_claim_table(both, worlds={m: world_record(w) for m, w in WORLDS.items()},
                              null_models=["fixture-llava"], judge="keyword")  # fmt: skip
    assert table["passed"].all()
