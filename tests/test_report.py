"""The book: fragments from synthetic results, then an offline Jupyter Book build of a copy of book/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift import CONDITIONS
from toolshift.analysis.contrasts import CLAIMS, contrasts_table
from toolshift.analysis.tables import NON_ANSWER_COLUMNS
from toolshift.contracts import ASR_COLUMNS, write_csv
from toolshift.datasets.prompts import build_prompts, load_mini
from toolshift.episodes.build import EPISODE_CONDITIONS, build_episodes, write_episodes
from toolshift.errors import ContractError, ToolshiftError
from toolshift.report.build import build_html, make_book
from toolshift.report.figures.behaviour import plot_asr_by_condition
from toolshift.report.figures.interventions import plot_dose_response
from toolshift.report.figures.registry import FIGURE_PAGES, FIGURES
from toolshift.report.figures.representation import plot_cosine_by_layer
from toolshift.report.links import broken_internal_links
from toolshift.report.pages import (
    CHAPTERS,
    FIXTURE_BANNER,
    TABLE_PAGES,
    collect_figures,
    write_book_pages,
)
from toolshift.report.tables import COMPLETION_CHARS, completions_markdown

REPO = Path(__file__).resolve().parents[1]
REPO_BOOK = REPO / "book"
MODELS = ("fixture-qwen2_5_vl", "fixture-llava")
PAGES = CHAPTERS
RESULTS_PAGES = ("intro", "behaviour", "representation", "interventions", "provenance")


def synthetic_asr(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for m in MODELS:
        ivs = [(c, "none") for c in CONDITIONS] + [("direct", f"add_a{a:g}") for a in (0, 0.5, 1, 2)]
        ivs += [("direct", f"random_a1_s{s}") for s in (0, 1)] + [("tool", "subtract"), ("tool", "ablate")]
        for condition, intervention in ivs:
            k = int(rng.integers(0, n + 1))
            base = condition == "direct" and intervention == "none"
            rows.append(
                {
                    "model": m,
                    "dataset": "mini",
                    "condition": condition,
                    "intervention": intervention,
                    "judge": "keyword",
                    "n": n,
                    "n_unsafe": k,
                    "asr": k / n,
                    "asr_ci_low": max(0.0, k / n - 0.1234),
                    "asr_ci_high": min(1.0, k / n + 0.1111),
                    "rel_reduction": np.nan if base else float(rng.uniform(-0.5, 0.9)),
                    "rel_reduction_ci_low": np.nan if base else -0.6,
                    "rel_reduction_ci_high": np.nan if base else 0.95,
                    "mcnemar_p": np.nan if base else float(rng.uniform(0, 1)),
                    # the non-answer sensitivity columns: j of the n replies did not answer
                    **_non_answers(k, n, j=int(rng.integers(0, n - k + 1))),
                }
            )
    return pd.DataFrame(rows, columns=[*ASR_COLUMNS, *NON_ANSWER_COLUMNS])


def _non_answers(k: int, n: int, j: int) -> dict:
    return {
        "n_non_answer": j,
        "non_answer_rate": j / n,
        "asr_non_answer_as_safe": k / n,
        "asr_non_answer_excluded": k / (n - j),
        "asr_non_answer_excluded_ci_low": max(0.0, k / (n - j) - 0.0432),
        "asr_non_answer_excluded_ci_high": min(1.0, k / (n - j) + 0.0321),
    }


def synthetic_contrasts() -> pd.DataFrame:
    """The claims' contrasts of a judged table where tool lowers ASR and subtract raises it back."""
    ids = [f"h{i:02d}" for i in range(40)]
    runs = {("direct", "none"): 30, ("tool", "none"): 8, ("tool", "subtract"): 28, ("tool", "ablate"): 10}
    rows = [
        {"model": m, "dataset": "mini", "condition": c, "intervention": i, "judge": "keyword",
         "prompt_id": p, "harmful": True, "unsafe": j < k}
        for m in MODELS for (c, i), k in runs.items() for j, p in enumerate(ids)
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    # tool's lower ASR partly rests on non-answers: excluding them, subtract vs tool flips for one model
    frame["outcome"] = np.where(frame["unsafe"], "unsafe", "refusal")
    calls = (frame["model"] == MODELS[0]) & (frame["condition"] == "tool") & (frame["intervention"] == "none")
    frame.loc[calls & ~frame["unsafe"], "outcome"] = "non_answer"
    return contrasts_table(frame, n_boot=200)


def synthetic_vectors(model: str, seed: int, n_layers: int = 5) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    conds = list(CONDITIONS)
    return xr.Dataset(
        {
            "cos_tool_refusal": ("layer", rng.uniform(-1, 1, n_layers)),
            "cos_shift_tool": (("condition", "layer"), rng.uniform(-1, 1, (len(conds), n_layers))),
            "cos_shift_refusal": (("condition", "layer"), rng.uniform(-1, 1, (len(conds), n_layers))),
            "norm_tool_vector": ("layer", rng.uniform(0.5, 5, n_layers)),
        },
        coords={"layer": np.arange(n_layers), "condition": conds},
        attrs={"model": model, "dataset": "mini", "selected_layer": 2},
    )


def synthetic_over_refusal(n: int = 20) -> pd.DataFrame:
    rows = []
    for i, m in enumerate(MODELS):
        for j, (condition, intervention) in enumerate([("direct", "none"), ("direct", "add_a1")]):
            k = 3 + 5 * i + 7 * j
            rows.append(
                {
                    "model": m, "dataset": "mini", "condition": condition, "intervention": intervention,
                    "judge": "keyword", "n": n, "n_refused": k, "refusal_rate": k / n,
                    "refusal_ci_low": k / n - 0.0987, "refusal_ci_high": k / n + 0.0876,
                    "split": "test", "n_non_answer": i + j, "detector": "keyword:default",
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


CONFIG = {
    "results": "results",
    "models": {
        m: {"family": m.split("-", 1)[1], "source": "fixture", "fixture": {"seed": i}}
        for i, m in enumerate(MODELS)
    },
    "datasets": ["mini"],
    "judges": ["keyword"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("results")
    asr = synthetic_asr()
    write_csv(asr, root / "tables" / "asr.csv")
    vectors = {}
    for i, m in enumerate(MODELS):
        path = root / "vectors" / m / "mini.nc"
        path.parent.mkdir(parents=True)
        synthetic_vectors(m, i).to_netcdf(path, engine="h5netcdf")
        vectors[m] = path
    figures = {
        name: root / "figures" / f"{name}.png"
        for name in ("asr_by_condition", "cosine_by_layer", "dose_response")
    }
    captions = {
        "asr_by_condition": plot_asr_by_condition(asr, figures["asr_by_condition"], "keyword"),
        "cosine_by_layer": plot_cosine_by_layer(
            {m: xr.open_dataset(p, engine="h5netcdf").load() for m, p in vectors.items()},
            figures["cosine_by_layer"],
        ),
        "dose_response": plot_dose_response(asr, figures["dose_response"]),
    }
    (root / "figures" / "captions.json").write_text(json.dumps(captions), encoding="utf-8")
    over = synthetic_over_refusal()
    write_csv(over, root / "tables" / "over_refusal.csv")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=2)
    episodes = {}
    for c in EPISODE_CONDITIONS:
        episodes[c] = root / "episodes" / "mini" / f"{c}.jsonl"
        write_episodes(build_episodes(prompts, c, root), episodes[c])
    bench = root / "benchmarks" / "infer"
    bench.mkdir(parents=True)
    (bench / "m.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n12.5\t0:00:12\t321.0\t10.0\n")
    planted = pd.DataFrame(
        {"check": ["tool_vector_cosine"], "description": ["The tool vector is recovered."], "planted": [1.0],
         "recovered": [0.9987], "criterion": ["cos > 0.99"], "passed": [True]}
    )  # fmt: skip
    return {
        "asr": asr,
        "asr_csv": root / "tables" / "asr.csv",
        "over_refusal": over,
        "over_refusal_csv": root / "tables" / "over_refusal.csv",
        "vectors": vectors,
        "figures": figures,
        "captions": captions,
        "captions_json": root / "figures" / "captions.json",
        "root": root,
        "prompts": prompts,
        "episodes": episodes,
        "tables": {
            "validation_planted": planted,
            "judge_human_agreement": pd.DataFrame(columns=["judge", "n", "accuracy", "kappa"]),
            "contrasts": synthetic_contrasts(),
        },
    }


def _copy_book(dest: Path) -> Path:
    shutil.copytree(REPO_BOOK, dest, ignore=shutil.ignore_patterns("_build", "_generated"))
    return dest


@pytest.fixture(scope="module")
def built(results, tmp_path_factory) -> Path:
    book = _copy_book(tmp_path_factory.mktemp("fixture") / "book")
    write_book_pages(
        book,
        asr_csv=results["asr_csv"],
        figures=results["figures"],
        vectors=results["vectors"],
        config=CONFIG,
        fixture_models=list(MODELS),
        captions=results["captions"],
        over_refusal_csv=results["over_refusal_csv"],
        tables=results["tables"],
        episodes=results["episodes"],
        results_root=results["root"],
        prompts={"mini": results["prompts"]},
        benchmarks_dir=results["root"] / "benchmarks",
        repo_dir=REPO,
    )
    with pytest.MonkeyPatch.context() as mp:  # any network access would fail fast
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            mp.setenv(var, "http://127.0.0.1:9")
        for var in ("NO_PROXY", "no_proxy"):
            mp.delenv(var, raising=False)
        index = build_html(book)
    assert index == book.resolve() / "_build" / "html" / "index.html"
    return index.parent


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if a.get("href"):
            self.hrefs.append(a["href"])
        if tag != "img" and a.get("src"):
            self.srcs.append(a["src"])


def _links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _text(page: Path) -> str:
    return " ".join(page.read_text(encoding="utf-8").split())


def _all_text(built: Path) -> str:
    return " ".join(_text(built / f"{page}.html") for page in PAGES)


def test_every_page_is_built_in_toc_order(built):
    assert (built / "index.html").is_file()
    for page in PAGES:
        assert (built / f"{page}.html").is_file(), page
    toc = (REPO_BOOK / "_toc.yml").read_text(encoding="utf-8")
    assert [ln.split(":", 1)[1].strip() for ln in toc.splitlines() if "file:" in ln or "root:" in ln] == list(
        CHAPTERS
    )
    for page in CHAPTERS:  # every page links to the next one, in reading order
        assert (REPO_BOOK / f"{page}.md").is_file()


def test_images_and_internal_links_resolve(built):
    assert broken_internal_links(built) == []
    for name in ("asr_by_condition", "cosine_by_layer", "dose_response"):
        page = built / f"{FIGURE_PAGES[name]}.html"
        assert [i for i in _links(page).imgs if i.endswith(f"{name}.png")], name
        assert [h for h in _links(page).hrefs if h.endswith(f"{name}.svg")], name
    # the attack image, its zoom, the unsafe, benign and blank override images of the examples and the blank
    # images of the size dose (a quarter and four times the zoom's pixels)
    method_imgs = {i for i in _links(built / "method.html").imgs if "images" in i or "overrides" in i}
    assert len(method_imgs) == 7, method_imgs


def test_every_table_section_is_present(built):
    for name, page in TABLE_PAGES.items():
        html = (built / f"{page}.html").read_text(encoding="utf-8")
        assert f'id="table-{name.replace("_", "-")}"' in html, name


def test_interventions_state_each_claim_next_to_its_test(built):
    page = _text(built / "interventions.html")
    shown = ("tool_use_lowers_asr", "removing_shift_raises_asr")  # the claims whose runs the fixture has
    for claim in [c for c in CLAIMS if c.id in shown]:
        assert claim.id in page, claim.id
    html = (built / "interventions.html").read_text(encoding="utf-8")
    for m in MODELS:
        assert f'id="table-contrasts-{m.replace("_", "-")}-mini"' in html, m
    assert "supported" in page and "not shown" in page and "-55.0 [" in page  # tool - direct, points


def test_method_shows_one_example_per_condition(built):
    html = (built / "method.html").read_text(encoding="utf-8")
    for condition in EPISODE_CONDITIONS:
        assert re.search(rf'class="sd-tab-label"[^>]*>\s*{condition}</label>', html), condition
    assert html.count("The model generates its answer here") == len(EPISODE_CONDITIONS)


def test_fixture_banner_on_results_bearing_pages(built):
    for page in RESULTS_PAGES:
        assert FIXTURE_BANNER in _text(built / f"{page}.html"), page
    for page in ("method", "validation", "reproduce"):
        assert FIXTURE_BANNER not in _text(built / f"{page}.html"), page


def test_headline_numbers_appear(built, results):
    asr = results["asr"]
    intro, behaviour = _text(built / "intro.html"), _text(built / "behaviour.html")
    for m in MODELS:
        tool = asr[(asr.model == m) & (asr.condition == "tool") & (asr.intervention == "none")].iloc[0]
        cell = f"{100 * tool.asr:.1f} [{100 * tool.asr_ci_low:.1f}, {100 * tool.asr_ci_high:.1f}]"
        rel = f"{100 * tool.rel_reduction:.1f} [{100 * tool.rel_reduction_ci_low:.1f}, "
        assert cell in intro and rel in intro
        assert cell in behaviour
        assert m in intro
    for r in asr.itertuples():
        assert f"{100 * r.asr:.1f} [{100 * r.asr_ci_low:.1f}, {100 * r.asr_ci_high:.1f}]" in behaviour
    interventions = _text(built / "interventions.html")
    for r in results["over_refusal"].itertuples():
        cell = f"{100 * r.refusal_rate:.1f} [{100 * r.refusal_ci_low:.1f}, {100 * r.refusal_ci_high:.1f}]"
        assert cell in interventions
    everything = _all_text(built)
    for caption in results["captions"].values():
        assert caption[:60] in everything


def test_non_answers_and_the_over_refusal_detector_are_shown(built, results):
    behaviour, interventions = _text(built / "behaviour.html"), _text(built / "interventions.html")
    assert "ASR, non-answers excluded" in behaviour and "non-answer rate" in behaviour
    for r in results["asr"][results["asr"]["intervention"] == "none"].itertuples():
        lo, hi = r.asr_non_answer_excluded_ci_low, r.asr_non_answer_excluded_ci_high
        assert f"{100 * r.asr_non_answer_excluded:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in behaviour
        assert f"{100 * r.non_answer_rate:.1f}" in behaviour
    assert "keyword:default" in interventions and "independent of every judge" in interventions
    contrasts = results["tables"]["contrasts"]
    flips = contrasts[contrasts["verdict"] != contrasts["verdict_non_answers_excluded"]]
    assert len(flips) and interventions.count("(<strong>flips</strong>)") == len(flips)


def test_validation_shows_the_planted_table_and_says_what_is_missing(built):
    text = _text(built / "validation.html")
    assert "tool_vector_cosine" in text and "0.9987" in text and "cos &gt; 0.99" in text
    assert "FigStep pixel fidelity was not checked in this run" in text
    assert "No human-labelled file is configured" in text


def test_provenance_has_config_versions_commit_and_runtimes(built):
    text = _text(built / "provenance.html")
    import toolshift

    assert toolshift.__version__ in text
    assert "fixture-qwen2_5_vl" in text and "judges" in text
    assert "fixture (built offline from a seed)" in _text(built / "method.html")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:
        assert commit.stdout.strip() in text
    assert "| infer" not in text and "12.5" in text and "321" in text


def test_provenance_lists_the_locked_versions_and_every_difference(tmp_path):
    """The software table: installed beside locked, every package off the lock, the whole lock."""
    from toolshift.report.environment import software_markdown

    lock = tmp_path / "lock.txt"
    lock.write_text(
        "".join(f"{n}=={v} \\\n    --hash=sha256:{'a' * 64}\n" for n, v in
                [("torch", "2.14.1"), ("transformers", "5.25.0"), ("numpy", "2.4.6")]),
        encoding="utf-8",
    )  # fmt: skip
    same = {"torch": "2.14.1", "transformers": "5.25.0", "numpy": "2.4.6"}
    text = software_markdown(lock, same)
    assert "| `transformers` | 5.25.0 | 5.25.0 |" in text and "3 packages at exact versions" in text
    assert "is the locked one" in text and "differ from the lock" not in text
    assert "torch==2.14.1\ntransformers==5.25.0" in text.split("Every locked package (3")[1]
    moved = {**same, "transformers": "5.24.0", "rocrate": "0.16.0"}
    text = software_markdown(lock, moved)
    assert "**2 package(s) differ from the lock**" in text
    assert "| `transformers` | 5.25.0 | 5.24.0 |" in text and "| `rocrate` | not locked | 0.16.0 |" in text
    missing = software_markdown(tmp_path / "none.txt", same)
    assert "No lock to compare with" in missing and "none.txt" in missing


def test_make_book_without_fixture_models(results, tmp_path):
    """The book rule's one call; a hub model only: no banner; absent figures are noted, not fatal."""
    book = _copy_book(tmp_path / "book")
    figures = {"asr_by_condition": results["figures"]["asr_by_condition"]}
    config = {
        "models": {"qwen": {"family": "qwen2_5_vl", "source": "hub", "hub_id": "Qwen/Qwen2.5-VL-7B-Instruct",
                            "revision": "main"}},
        "headline_judge": "keyword",
        "book": {"show_completions": False},
    }  # fmt: skip
    index = make_book(
        book_dir=book,
        asr_csv=results["asr_csv"],
        figures=figures,
        captions_json=results["captions_json"],
        vectors=list(results["vectors"].values()),
        config=config,
        index_out=book / "_build" / "html" / "index.html",
        over_refusal_csv=None,
    )
    assert "{warning}" not in (book / "_generated" / "banner.md").read_text(encoding="utf-8")
    built = index.parent
    assert FIXTURE_BANNER not in _text(built / "intro.html")
    assert _all_text(built).count("figure was not produced in this run") == len(FIGURE_PAGES) - 1
    assert "unpinned" in _text(built / "method.html")
    assert "over-refusal table was not produced" in _text(built / "interventions.html")
    assert results["captions"]["asr_by_condition"][:60] in _text(built / "behaviour.html")
    assert "No episode files were given" in _text(built / "method.html")


def test_figures_per_dataset_are_collected_and_each_shown(results, tmp_path):
    """figures/{dataset}/{name}.png (+ captions.json per folder) and figures/headline.png: one block each."""
    src = results["figures"]["asr_by_condition"]
    paths = []
    for dataset in ("alpha", "beta"):
        folder = tmp_path / "results" / "figures" / dataset
        folder.mkdir(parents=True)
        shutil.copyfile(src, folder / "asr_by_condition.png")
        (folder / "captions.json").write_text(json.dumps({"asr_by_condition": f"ASR of dataset {dataset}."}))
        paths += [folder / "asr_by_condition.png", folder / "captions.json"]
    top = tmp_path / "results" / "figures"
    shutil.copyfile(src, top / "headline.png")
    (top / "captions.json").write_text(json.dumps({"headline": "The headline."}))
    paths += [top / "headline.png", top / "captions.json"]
    figures, captions = collect_figures(paths)
    assert set(figures) == {"asr_by_condition", "headline"} and set(figures["asr_by_condition"]) == {
        "alpha",
        "beta",
    }
    assert captions["asr_by_condition"] == {"alpha": "ASR of dataset alpha.", "beta": "ASR of dataset beta."}
    assert captions["headline"] == "The headline."
    book = _copy_book(tmp_path / "book")
    write_book_pages(
        book, asr_csv=results["asr_csv"], figures=figures, captions=captions, vectors=results["vectors"],
        config=CONFIG, fixture_models=list(MODELS),
    )  # fmt: skip
    md = (book / "_generated" / "fig_asr_by_condition.md").read_text(encoding="utf-8")
    assert md.count("```{figure}") == 2 and ":name: fig-asr-by-condition-alpha" in md
    assert "ASR of dataset beta." in md and "/_generated/figures/beta/asr_by_condition.png" in md
    assert (book / "_generated" / "figures" / "alpha" / "asr_by_condition.png").is_file()
    assert "The headline." in (book / "_generated" / "fig_headline.md").read_text(encoding="utf-8")


def test_failed_build_raises_and_leaves_no_index(results, tmp_path):
    book = _copy_book(tmp_path / "book")
    write_book_pages(
        book,
        asr_csv=results["asr_csv"],
        figures=results["figures"],
        vectors=results["vectors"],
        config=CONFIG,
        fixture_models=list(MODELS),
    )
    (book / "_build" / "html").mkdir(parents=True)
    (book / "_build" / "html" / "index.html").write_text("stale", encoding="utf-8")
    with open(book / "behaviour.md", "a", encoding="utf-8") as fh:
        fh.write("\n```{include} _generated/missing.md\n```\n")
    with pytest.raises(ToolshiftError, match="missing.md"):
        build_html(book)
    assert not (book / "_build" / "html" / "index.html").exists()


def test_bad_inputs(results, tmp_path):
    book = _copy_book(tmp_path / "book")
    kwargs = {
        "asr_csv": results["asr_csv"],
        "figures": results["figures"],
        "vectors": results["vectors"],
        "config": CONFIG,
        "fixture_models": list(MODELS),
    }
    with pytest.raises(ContractError, match="nope.png"):
        write_book_pages(book, **{**kwargs, "figures": {"asr_by_condition": tmp_path / "nope.png"}})
    empty = tmp_path / "asr.csv"
    write_csv(pd.DataFrame(columns=list(ASR_COLUMNS)), empty)
    with pytest.raises(ContractError, match="no rows"):
        write_book_pages(book, **{**kwargs, "asr_csv": empty})
    with pytest.raises(ContractError, match="not found"):
        write_book_pages(book, **{**kwargs, "vectors": {"m": tmp_path / "missing.nc"}})
    with pytest.raises(ContractError, match="_config.yml"):
        write_book_pages(tmp_path, **kwargs)
    assert not (book / "_generated").exists()


def test_completions_are_redacted_unless_asked_and_then_truncated():
    long_text = "word " * 100
    judged = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "condition": ["direct", "direct", "direct", "tool"],
            "intervention": ["none"] * 4,
            "prompt_id": ["p3", "p1", "p2", "p1"],
            "harmful": [True, True, True, False],
            "unsafe": [True, False, True, True],
            "response": [long_text, "short | reply", "second", "harmless one"],
        }
    )
    redacted = completions_markdown(judged, show=False)
    assert "redacted" in redacted and "word" not in redacted and "short" not in redacted
    shown = completions_markdown(judged, show=True)
    rows = [line for line in shown.splitlines() if line.startswith("| `m`")]
    assert [row.split("|")[3].strip() for row in rows] == ["`p1`", "`p2`"]  # first two by id, harmful only
    assert "short \\| reply" in shown and "harmless one" not in shown
    cut = completions_markdown(judged.assign(prompt_id=["p0", "p1", "p2", "p1"]), show=True)
    assert ("word " * 100).strip()[:COMPLETION_CHARS] + "…" in cut


def test_every_figure_goes_on_a_chapter_page():
    """The figure registry names a book page for each figure; each is one of the chapters."""
    assert {f.page for f in FIGURES} <= set(CHAPTERS)
    assert list(FIGURE_PAGES) == [f.name for f in FIGURES]
