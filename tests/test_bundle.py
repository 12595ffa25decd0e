"""Result bundles (docs/bundles.md): packing, the RO-Crate metadata, the config/version check, fetching a
URL through pooch, and every bad bundle of docs/reliability.md ("Bad bundles"), each refused with one line
naming the bundle and leaving the results folder as it was. The round trip through the DAG, the dry run
with no generation job and Snakemake's report are the end-to-end tests at the bottom (marker e2e).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pytest
import yaml
from dag import REPO, snakemake
from rocrate.rocrate import ROCrate

import toolshift
from toolshift.bundles.archive import open_bundle_archive
from toolshift.bundles.importer import RECORD, locate, open_for_import, place, stage_for_import
from toolshift.bundles.manifest import (
    CRATE_NAME,
    MANIFEST_NAME,
    check_compatible,
    config_differences,
    config_hash,
    file_record,
)
from toolshift.bundles.pack import make_bundle
from toolshift.common.config import load_config
from toolshift.errors import ConfigError, DataError
from toolshift.models.activations import read_activations, to_dataset, write_activations
from toolshift.report.figures.registry import FIGURE_NAMES
from toolshift.report.provenance import bundle_markdown
from toolshift.report.snakemake_report import figure_caption, report_item

FILES = [
    ("runs/m/d/direct/responses.parquet", "merge_runs"),
    ("runs/m/d/direct/activations.nc", "merge_runs"),
    ("episodes/d/direct.jsonl", "episodes"),
    ("data/d/images", "prompts"),
    ("vectors/m/d.nc", "vectors"),
]
WANTED = [(rel, rel == "data/d/images") for rel, rule in FILES if rule != "vectors"]


def tiny_results(root: Path) -> Path:
    """A results folder with one file of each kind a bundle carries, and an override image only an episode
    names (as data/overrides/ is)."""
    pd.DataFrame({"prompt_id": ["p1", "p2"], "response": ["Sure, here", "I cannot"]}).to_parquet(
        root / "r.parquet"
    )
    (root / "runs/m/d/direct").mkdir(parents=True)
    shutil.move(root / "r.parquet", root / "runs/m/d/direct/responses.parquet")
    states = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
    attrs = {"model": "m", "revision": "fixture", "condition": "direct"}
    write_activations(to_dataset(states, ["p1", "p2"], attrs), root / "runs/m/d/direct/activations.nc")
    (root / "data/d/images").mkdir(parents=True)
    (root / "data/d/images/p1.png").write_bytes(b"\x89PNG attack image p1")
    (root / "data/overrides").mkdir(parents=True)
    (root / "data/overrides/blank_8x8.png").write_bytes(b"\x89PNG blank override")
    episode = {
        "prompt_id": "p1",
        "condition": "direct",
        "messages": [
            {"role": "user", "content": [{"type": "image", "path": "data/d/images/p1.png"}]},
            {"role": "tool", "content": [{"type": "image", "path": "data/overrides/blank_8x8.png"}]},
        ],
        "meta": {},
    }
    (root / "episodes/d").mkdir(parents=True)
    (root / "episodes/d/direct.jsonl").write_text(json.dumps(episode) + "\n")
    (root / "vectors/m").mkdir(parents=True)
    (root / "vectors/m/d.nc").write_bytes(b"vectors bytes")
    return root


@functools.cache
def default_config() -> dict:
    return load_config(REPO / "config" / "config.yaml")


def config_with(**changes) -> dict:
    cfg = json.loads(json.dumps(default_config()))
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(results folder, bundle, manifest) packed once for the module."""
    root = tiny_results(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("bundle") / "toolshift-bundle.zip"
    manifest = make_bundle(results=root, files=FILES, out=out, config=default_config(), repo=REPO)
    return root, out, manifest


def rewrite(src: Path, dest: Path, change) -> Path:
    """A copy of the zip `src` in which `change(name, data)` returns the new (name, data, ZipInfo fields) of
    every member, or None to leave it out; extra members come from `change(None, None)`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            got = change(info.filename, zin.read(info))
            if got is not None:
                zout.writestr(got[0], got[1])
        for name, data in change(None, None) or ():
            zout.writestr(name, data)
    return dest


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message == message.strip(), message
    for needle in needles:
        assert needle in message, (needle, message)


# --------------------------------------------------------------------------- packing and importing


def test_the_manifest_lists_every_file_with_its_hash_and_size(made):
    root, out, manifest = made
    for rel, rule in FILES:
        if rel != "data/d/images":
            assert manifest["files"][f"results/{rel}"] == {**file_record(root / rel), "rule": rule}
    assert manifest["files"]["results/data/d/images/p1.png"]["rule"] == "prompts"
    # an image only an episode names travels with the episode's rule
    assert manifest["files"]["results/data/overrides/blank_8x8.png"]["rule"] == "episodes"
    for name in ("provenance/config.yaml", "provenance/environment.json", "workflow/Snakefile"):
        assert name in manifest["files"], name
    assert manifest["config_hash"] == config_hash(default_config())
    assert manifest["toolshift_version"] == toolshift.__version__
    assert manifest["activations_dtype"] == "float32"
    bundle = open_bundle_archive(out)
    assert bundle.manifest == manifest


def test_import_places_every_file_byte_for_byte_and_records_it(made, tmp_path):
    root, out, _ = made
    bundle = open_bundle_archive(out)
    target = tmp_path / "fresh"
    record = place(bundle, target, WANTED, source=str(out), accepted=None, recomputed=["vectors"])
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("vectors/"):
            assert (target / rel).read_bytes() == path.read_bytes(), rel
    assert not (target / "vectors").exists()  # recomputed from the activations, not imported
    assert record["recomputed"] == ["vectors/m/d.nc"]
    assert json.loads((target / RECORD).read_text()) == record
    assert not (target / ".bundle-staging").exists()
    assert "imported from a result bundle" in bundle_markdown(record)


def test_the_crate_is_a_workflow_run_crate_the_rocrate_library_reads(made, tmp_path):
    _, out, manifest = made
    with zipfile.ZipFile(out) as zf:
        metadata = json.loads(zf.read(CRATE_NAME))
    graph = {entity["@id"]: entity for entity in metadata["@graph"]}
    root = graph["./"]
    profiles = {p["@id"] for p in root["conformsTo"]}
    assert {"https://w3id.org/ro/wfrun/process/0.5", "https://w3id.org/ro/wfrun/workflow/0.5"} <= profiles
    assert root["mainEntity"] == {"@id": "workflow/Snakefile"}
    assert "ComputationalWorkflow" in graph["workflow/Snakefile"]["@type"]
    action = graph[root["mentions"][0]["@id"]]
    assert action["@type"] == "CreateAction" and action["instrument"] == {"@id": "workflow/Snakefile"}
    results = {r["@id"] for r in action["result"]}
    assert results == {n for n in manifest["files"] if n.startswith("results/")}
    for name, entry in manifest["files"].items():
        assert graph[name]["sha256"] == entry["sha256"] and graph[name]["contentSize"] == entry["size"]
    crate = ROCrate(out)  # the library itself reads the archive
    assert crate.mainEntity.id == "workflow/Snakefile"


def test_float16_activations_say_so_and_halve(made, tmp_path):
    root, _, manifest32 = made
    out = tmp_path / "half.zip"
    manifest = make_bundle(
        results=root, files=FILES, out=out, config=default_config(), repo=REPO, float16=True
    )
    assert manifest["activations_dtype"] == "float16"
    name = "results/runs/m/d/direct/activations.nc"
    with zipfile.ZipFile(out) as zf:
        (tmp_path / "a.nc").write_bytes(zf.read(name))
    half, full = (
        read_activations(tmp_path / "a.nc"),
        read_activations(root / "runs/m/d/direct/activations.nc"),
    )
    assert half["resid"].dtype == np.float16 and half.attrs["stored_dtype"] == "float16"
    np.testing.assert_allclose(half["resid"].values, full["resid"].values, rtol=1e-3, atol=1e-3)
    assert manifest["files"][name]["sha256"] != manifest32["files"][name]["sha256"]
    assert "float16" in bundle_markdown({"activations_dtype": "float16", "placed_files": 1})


# --------------------------------------------------------------------------- config and version


def test_another_generation_config_is_refused_in_one_line_naming_what_differs(made):
    _, out, manifest = made
    here = config_with(generation={**default_config()["generation"], "max_new_tokens": 32})
    with pytest.raises(ConfigError) as exc:
        check_compatible(manifest, here, toolshift.__version__, str(out))
    assert_one_line(
        exc, str(out), "generation.max_new_tokens: 16 in the bundle, 32 here", "bundle_accept_mismatch"
    )
    accepted = check_compatible(
        manifest, {**here, "bundle_accept_mismatch": True}, toolshift.__version__, "b"
    )
    assert "generation.max_new_tokens" in accepted


def test_another_toolshift_version_is_refused(made):
    _, _, manifest = made
    with pytest.raises(ConfigError) as exc:
        check_compatible(manifest, default_config(), "99.0", "b.zip")
    assert_one_line(exc, f"toolshift {toolshift.__version__} made it, this is toolshift 99.0")


def test_judges_statistics_and_paths_may_differ(made):
    _, _, manifest = made
    here = config_with(
        results="/elsewhere",
        book_dir="/b",
        judges=["keyword"],
        stats={"n_boot": 500, "seed": 1},
        bundle="x.zip",
    )
    assert check_compatible(manifest, here, toolshift.__version__, "b") is None
    assert config_differences(default_config(), here) == []


# --------------------------------------------------------------------------- bad bundles


def refused_at_open(path: Path, *needles: str) -> None:
    with pytest.raises(DataError) as exc:
        open_bundle_archive(path)
    assert_one_line(exc, str(path), *needles)


def refused_at_stage(path: Path, results: Path, *needles: str, sha256: str | None = None) -> None:
    bundle = open_bundle_archive(path)
    with pytest.raises(DataError) as exc:
        stage_for_import(bundle, results, sha256)
    assert_one_line(exc, str(path), *needles)
    assert not results.exists()  # nothing placed, not even the folder


def test_a_truncated_archive(made, tmp_path):
    data = made[1].read_bytes()
    (tmp_path / "t.zip").write_bytes(data[: len(data) // 2])
    refused_at_open(tmp_path / "t.zip", "not a complete zip archive")


def test_a_file_whose_hash_differs(made, tmp_path):
    def change(name, data):
        if name == "results/runs/m/d/direct/responses.parquet":
            return name, bytes(b ^ 1 for b in data)  # same size, other bytes
        return None if name is None else (name, data)

    bad = rewrite(made[1], tmp_path / "h.zip", change)
    refused_at_stage(bad, tmp_path / "results", "responses.parquet has sha256", "its manifest says")


def test_a_missing_file(made, tmp_path):
    bad = rewrite(
        made[1], tmp_path / "m.zip", lambda n, d: None if n in (None, "results/vectors/m/d.nc") else (n, d)
    )
    refused_at_open(bad, "results/vectors/m/d.nc", "missing from the archive")


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../escape.txt", "'..'"),
        ("results/../../escape.txt", "'..'"),
        ("/etc/escape.txt", "an absolute path"),
        ("C:/escape.txt", "an absolute path"),
    ],
)
def test_paths_that_leave_the_results_folder(made, tmp_path, member, why):
    bad = rewrite(made[1], tmp_path / "p.zip", lambda n, d: [(member, b"x")] if n is None else (n, d))
    refused_at_open(bad, repr(member), why, "nothing extracted")


@pytest.mark.parametrize(
    ("mode", "kind"),
    [(stat.S_IFLNK, "a symbolic link"), (stat.S_IFCHR, "a character device"), (stat.S_IFIFO, "a named pipe")],
)
def test_links_and_device_files(made, tmp_path, mode, kind):
    def change(name, data):
        if name is None:
            return None
        info = zipfile.ZipInfo(name)
        if name == "results/runs/m/d/direct/responses.parquet":
            info.external_attr = (mode | 0o777) << 16
        return info, data

    bad = rewrite(made[1], tmp_path / "l.zip", change)
    refused_at_open(bad, "responses.parquet", kind)


def test_a_tar_archive_with_a_hard_link(tmp_path):
    tar = tmp_path / "bundle.zip"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("results/link")
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tf.addfile(info)
    refused_at_open(tar, "a tar archive, not a zip", "hard links")


def test_an_archive_far_larger_than_its_manifest_says(made, tmp_path):
    bomb = b"\0" * (8 << 20)  # 8 MB of zeros deflate to a few kB

    def change(name, data):
        if name == "results/vectors/m/d.nc":
            return name, bomb
        return None if name is None else (name, data)

    bad = rewrite(made[1], tmp_path / "b.zip", change)
    assert bad.stat().st_size < 1 << 20
    refused_at_open(bad, "unpacks to 8388608 bytes, its manifest says 13")


def test_a_central_directory_that_lies_about_sizes(made, tmp_path):
    """A member whose central-directory size matches the manifest but whose data is larger: extraction reads
    no more than the manifest's size and refuses the member."""
    name = "results/vectors/m/d.nc"
    bad = rewrite(
        made[1],
        tmp_path / "c.zip",
        lambda n, d: (n, b"v" * 4096) if n == name else (None if n is None else (n, d)),
    )
    data = bytearray(bad.read_bytes())
    # patch that member's uncompressed size (offset 24 of its central directory header) to the manifest's 13
    start = data.find(b"PK\x01\x02")
    while data[start + 46 : start + 46 + len(name)] != name.encode():
        start = data.find(b"PK\x01\x02", start + 4)
    assert int.from_bytes(data[start + 24 : start + 28], "little") == 4096
    data[start + 24 : start + 28] = (13).to_bytes(4, "little")
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    refused_at_stage(tmp_path / "lie.zip", tmp_path / "results", name)


def test_members_the_manifest_does_not_list_and_duplicates(made, tmp_path):
    extra = rewrite(
        made[1], tmp_path / "e.zip", lambda n, d: [("results/extra.txt", b"x")] if n is None else (n, d)
    )
    refused_at_open(extra, "'results/extra.txt' is not in its manifest")
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = rewrite(
            made[1], tmp_path / "d.zip", lambda n, d: [(MANIFEST_NAME, b"{}")] if n is None else (n, d)
        )
    refused_at_open(dup, "appears twice")


def test_not_a_bundle_and_a_bad_manifest(made, tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("readme.txt", "hello")
    refused_at_open(plain, f"no {MANIFEST_NAME}", "not a toolshift bundle")

    def bad_path(name, data):
        if name == MANIFEST_NAME:
            manifest = json.loads(data)
            manifest["files"]["results/../x"] = manifest["files"].pop("results/vectors/m/d.nc")
            return name, json.dumps(manifest).encode()
        return None if name is None else (name, data)

    refused_at_open(rewrite(made[1], tmp_path / "bp.zip", bad_path), "lists 'results/../x'", "'..'")


def test_the_published_sha256_is_checked_before_anything_is_unpacked(made, tmp_path):
    refused_at_stage(made[1], tmp_path / "results", "expected " + "0" * 64, sha256="0" * 64)
    good = file_record(made[1])["sha256"]
    assert (stage_for_import(open_bundle_archive(made[1]), tmp_path / "ok", good) / "results").is_dir()


# --------------------------------------------------------------------------- fetching


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over tmp_path/www: its base URL."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path / "www", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_url_is_fetched_through_pooch_and_checked(made, tmp_path, http_folder):
    www, base = http_folder
    shutil.copy(made[1], www / "study.zip")
    sha = file_record(made[1])["sha256"]
    got = locate(f"{base}/study.zip", cache=tmp_path / "cache", sha256=sha)
    assert got == tmp_path / "cache/bundles/study.zip" and got.read_bytes() == made[1].read_bytes()
    with pytest.raises(DataError) as exc:
        locate(f"{base}/study.zip", cache=tmp_path / "other", sha256="0" * 64)
    assert_one_line(exc, "does not match bundle_sha256")


def test_offline_a_url_is_read_from_the_data_mirror(made, tmp_path):
    url = "https://zenodo.example/records/1/files/study.zip"
    with pytest.raises(DataError) as exc:
        locate(url, cache=tmp_path / "cache", mirror=tmp_path)
    assert_one_line(exc, "not in data_mirror", str(tmp_path / "bundles/study.zip"))
    (tmp_path / "bundles").mkdir()
    shutil.copy(made[1], tmp_path / "bundles/study.zip")
    assert locate(url, cache=tmp_path / "cache", mirror=tmp_path) == tmp_path / "bundles/study.zip"
    cfg = config_with(bundle=url, data_mirror=str(tmp_path), results=str(tmp_path / "r"))
    bundle, accepted = open_for_import(cfg)
    assert accepted is None and bundle.manifest == made[2]


# --------------------------------------------------------------------------- Snakemake's report


def test_report_items_and_figure_captions():
    table = report_item("results/tables/asr.csv", "results")
    assert (table.kind, table.name, table.category) == ("table", "asr", "Tables")
    assert table.subcategory(None) == "behaviour" and table.labels(None)["title"].startswith("Attack success")
    figure = report_item("results/figures/{dataset,mini}/pca.png", "results")
    assert (figure.kind, figure.name, figure.subcategory) == ("figure", "pca", "representation")
    assert figure.labels == {"figure": "pca", "dataset": "{dataset}"}
    assert report_item("results/figures/{dataset}/pca.svg", "results") is None
    assert report_item("results/runs/m/d/direct/responses.parquet", "results") is None
    template = figure_caption("pca", {"mini": "PCA of *mini* {{ x }}", "other": "PCA of other"})
    render = (
        jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render
    )  # as Snakemake

    class Job:
        def __init__(self, dataset):
            self.wildcards = type("W", (), {"dataset": dataset})

    assert render(snakemake=Job("mini")) == "PCA of \\*mini\\* {{ x }}"  # escaped for RST, never run as Jinja
    assert render(snakemake=Job("other")) == "PCA of other"
    assert "rule representation\\_figures" in render(
        snakemake=Job("third")
    )  # the registry's words before a caption
    assert set(FIGURE_NAMES) >= {"pca", "headline"}


# --------------------------------------------------------------------------- through the DAG (e2e)

GENERATION_RULES = {"prompts", "splits", "episodes", "model", "infer", "merge_runs", "intervene"}
GENERATION_RULES |= {"merge_interventions", "transfer", "infer_api"}
"""The rules an import must never schedule."""
RUN_SPECIFIC_PAGES = {"runtimes.md", "config.md", "bundle.md"}
"""Book fragments about the run itself (its runtimes, paths, the bundle it imported), not its results."""


@pytest.fixture(scope="module")
def bundled(dag_run):
    """The session's reduced DAG run and its bundle (`snakemake bundle` there: one job, nothing reruns)."""
    work, cfg = dag_run
    proc = snakemake(work, "--configfile", "config.yaml", "--cores", "1", "bundle", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, cfg, Path(cfg["results"]) / "bundle/toolshift-bundle.zip"


def import_run(work: Path, cfg: dict, bundle: Path, *args: str, **changes):
    """Snakemake in `work` with the run's config, a fresh results folder and book, importing `bundle`."""
    work.mkdir(parents=True, exist_ok=True)
    mine = {**cfg, "results": str(work / "results"), "book_dir": str(work / "book"), "bundle": str(bundle)}
    (work / "config.yaml").write_text(yaml.safe_dump({**mine, **changes}))
    return snakemake(work, "--configfile", "config.yaml", *args, timeout=1200)


def job_counts(output: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M) if k != "total"}


def toolshift_lines(output: str, needle: str) -> list[str]:
    return [line for line in output.splitlines() if needle in line]


@pytest.mark.e2e
def test_an_import_reruns_only_what_follows_generation_and_reproduces_the_run(bundled, tmp_path):
    work, cfg, bundle = bundled
    dry = import_run(tmp_path, cfg, bundle, "--dry-run", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    assert counts["import_bundle"] == 1 and not GENERATION_RULES & set(counts), counts
    assert {"validate_runs", "vectors", "judge", "asr_table", "figures", "book"} <= set(counts), counts
    assert not (tmp_path / "results").exists()  # a dry run reads the bundle and writes nothing
    proc = import_run(tmp_path, cfg, bundle, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-6000:]
    original, imported = Path(cfg["results"]), tmp_path / "results"
    tables = sorted(p.name for p in (original / "tables").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (imported / "tables").glob("*.csv"))
    for name in tables:  # every table, byte for byte
        assert (imported / "tables" / name).read_bytes() == (original / "tables" / name).read_bytes(), name
    figures = sorted(
        p.relative_to(original).as_posix() for p in (original / "figures").rglob("*") if p.is_file()
    )
    for rel in figures:  # every figure's PNG, SVG and captions (matplotlib writes no dates into them here)
        assert (imported / rel).read_bytes() == (original / rel).read_bytes(), rel
    for model in dag_models(cfg):  # the vectors, recomputed from the imported activations
        rel = f"vectors/{model}/mini.nc"
        assert (imported / rel).read_bytes() == (original / rel).read_bytes(), rel
    pages, again = Path(cfg["book_dir"]) / "_generated", tmp_path / "book/_generated"
    fragments = sorted(p.relative_to(pages).as_posix() for p in pages.rglob("*") if p.is_file())
    assert fragments == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for rel in set(fragments) - RUN_SPECIFIC_PAGES:  # the book's pages, their tables, figures and examples
        assert (again / rel).read_bytes() == (pages / rel).read_bytes(), rel
    assert "imported from a result bundle" in (again / "bundle.md").read_text()
    record = json.loads((imported / RECORD).read_text())
    assert record["recomputed"] == [f"vectors/{m}/mini.nc" for m in sorted(dag_models(cfg))]
    nothing = import_run(tmp_path, cfg, bundle, "--dry-run")
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


def dag_models(cfg: dict) -> list[str]:
    return list(cfg["models"])


@pytest.mark.e2e
def test_a_bad_bundle_stops_the_workflow_in_one_line_and_touches_nothing(bundled, tmp_path):
    work, cfg, bundle = bundled
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[:1000])
    proc = import_run(tmp_path / "a", cfg, truncated, "--dry-run")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and len(toolshift_lines(output, "not a complete zip archive")) == 1, output
    assert not (tmp_path / "a/results").exists()

    # a member whose bytes differ passes the checks that read no data; the full check before the first job
    # stops the run before any job writes
    def flip(name, data):
        if name and name.endswith("activations.nc"):
            return name, bytes(b ^ 1 for b in data)
        return None if name is None else (name, data)

    tampered = rewrite(bundle, tmp_path / "tampered.zip", flip)
    proc = import_run(tmp_path / "b", cfg, tampered, "--cores", "1")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and len(toolshift_lines(output, "its manifest says")) == 1, output[-3000:]
    assert not (tmp_path / "b/results").exists()


@pytest.mark.e2e
def test_another_config_is_refused_unless_accepted(bundled, tmp_path):
    work, cfg, bundle = bundled
    generation = {**cfg["generation"], "max_new_tokens": 7}
    proc = import_run(tmp_path / "a", cfg, bundle, "--dry-run", generation=generation)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert len(toolshift_lines(output, "generation.max_new_tokens: 6 in the bundle, 7 here")) == 1, output
    proc = import_run(
        tmp_path / "b", cfg, bundle, "--dry-run", generation=generation, bundle_accept_mismatch=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "importing it anyway" in proc.stdout + proc.stderr and "import_bundle" in proc.stdout


@pytest.mark.e2e
def test_snakemake_report_lists_every_table_and_figure_with_its_caption(dag_run, tmp_path):
    work, cfg = dag_run
    out = tmp_path / "report.zip"
    proc = snakemake(work, "--configfile", "config.yaml", "--report", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(out) as zf:
        names = {Path(n).name for n in zf.namelist()}
        html = zf.read("report/report.html").decode("utf-8")
    results = Path(cfg["results"])
    assert {p.name for p in (results / "tables").glob("*.csv")} <= names
    assert {f"{name}.png" for name in FIGURE_NAMES} <= names
    captions = json.loads((results / "figures/mini/captions.json").read_text())
    assert captions["asr_by_condition"][:60] in html  # the drawing function's own caption


@pytest.mark.e2e
def test_a_float16_bundle_imports_the_runs_own_vectors(bundled, tmp_path):
    """Vectors recomputed from rounded activations would differ from those the interventions steered along:
    a float16 bundle brings the run's own, and the DAG schedules no `vectors` job."""
    work, cfg, bundle = bundled
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
        run_config = yaml.safe_load(zf.read("provenance/config.yaml"))
    files = [
        (n[len("results/") :], e["rule"]) for n, e in manifest["files"].items() if n.startswith("results/")
    ]
    half = tmp_path / "half.zip"
    make_bundle(results=cfg["results"], files=files, out=half, config=run_config, repo=REPO, float16=True)
    dry = import_run(tmp_path / "a", cfg, half, "--dry-run", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    assert counts["import_bundle"] == 1 and "vectors" not in counts and "analysis_tables" in counts, counts
