"""The book rule's work. Rule `book` (rules/book.smk) runs workflow_scripts/book.py, whose one call is
`make_book`: it reads the result files, writes the generated pages
(`toolshift.report.pages.write_book_pages`), then builds the HTML (`build_html`): Jupyter Book 1.x
(Sphinx), every warning an error, no network, and every internal link and image of the result checked
(`toolshift.report.links`).

Chapters (book/_toc.yml, `toolshift.report.pages.CHAPTERS`): overview (`intro`), method, behaviour,
representation, interventions, validation, provenance, reproduce.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.common.guards import claim_book_dir, held_lock
from toolshift.contracts import JUDGED_COLUMNS, read_table
from toolshift.errors import ContractError, ToolshiftError
from toolshift.processes import child_dies_with_parent
from toolshift.report.links import broken_internal_links
from toolshift.report.pages import CaptionSource, FigureSource, fixture_models_of, write_book_pages
from toolshift.report.provenance import attach_skipped


def _read_frames(paths: Mapping[str, str | os.PathLike[str]] | None) -> dict[str, pd.DataFrame]:
    out = {}
    for name, path in (paths or {}).items():
        path = Path(path)
        try:
            out[name] = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ContractError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    return out


def make_book(
    *,
    book_dir: str | os.PathLike[str],
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, FigureSource],
    captions_json: str | os.PathLike[str] | None,
    vectors: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    index_out: str | os.PathLike[str],
    captions: Mapping[str, CaptionSource] | None = None,
    over_refusal_csv: str | os.PathLike[str] | None = None,
    sources: str | os.PathLike[str] | None = None,
    judged: Sequence[str | os.PathLike[str]] = (),
    headline_csv: str | os.PathLike[str] | None = None,
    tables: Mapping[str, str | os.PathLike[str]] | None = None,
    episodes: Mapping[str, str | os.PathLike[str]] | None = None,
    results_root: str | os.PathLike[str] | None = None,
    prompts: Mapping[str, str | os.PathLike[str]] | None = None,
    splits: Mapping[str, str | os.PathLike[str]] | None = None,
    benchmarks_dir: str | os.PathLike[str] | None = None,
    repo_dir: str | os.PathLike[str] | None = None,
    bundle_record: str | os.PathLike[str] | None = None,
) -> Path:
    """The `book` rule's one call (workflow_scripts/book.py): the generated pages from the result files
    (`write_book_pages`), then the HTML (`build_html`).

    `sources` is the repository's static book folder; when `book_dir` is elsewhere (a test's temporary
    directory, a results folder per config) the static pages are copied there first, provided toolshift owns
    that folder (`toolshift.common.guards.claim_book_dir`: new, empty or marked; anything else is refused with
    a ConfigError before a file is touched). `tables`, `prompts` and `splits` map a name to a CSV or parquet
    file (see `write_book_pages`); `bundle_record` is an imported result bundle's record (a JSON file).

    Fixture models (`source: fixture`), `book.show_completions` and `headline_judge` come from the
    config; captions from the JSON object {figure name: caption} the figures rule writes. Returns
    `index_out`, which must be `{book_dir}/_build/html/index.html`.
    """
    if sources is not None:  # write only into a book folder toolshift owns (created and marked here if new)
        claim_book_dir(book_dir, sources)
    if sources is not None and Path(sources).resolve() != Path(book_dir).resolve():
        shutil.copytree(
            sources, book_dir, ignore=shutil.ignore_patterns("_build", "_generated"), dirs_exist_ok=True
        )
    captions = dict(captions or {})
    if captions_json is not None:
        try:
            loaded = json.loads(Path(captions_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ContractError(f"{captions_json}: not a JSON object of captions ({exc})") from None
        if not isinstance(loaded, dict):
            raise ContractError(f"{captions_json}: expected a JSON object {{figure name: caption}}")
        captions.update(loaded)
    labelled: dict[str, str | os.PathLike[str]] = {}
    for path in vectors:
        labelled[f"{Path(path).parent.name} / {Path(path).stem}"] = path  # vectors/{model}/{dataset}.nc
    write_book_pages(
        book_dir,
        asr_csv=asr_csv,
        figures=figures,
        vectors=labelled,
        config=config,
        fixture_models=fixture_models_of(config),
        show_completions=bool((config.get("book") or {}).get("show_completions", False)),
        captions=captions,
        over_refusal_csv=over_refusal_csv,
        judge=config.get("headline_judge"),
        judged=pd.concat([read_table(p, JUDGED_COLUMNS) for p in judged], ignore_index=True)
        if judged
        else None,
        headline=None if headline_csv is None else pd.read_csv(headline_csv),
        tables=_read_frames(tables),
        episodes=episodes,
        results_root=results_root,
        prompts=attach_skipped(_read_frames(prompts), prompts),  # and each dataset's skipped.csv
        splits=_read_frames(splits),
        benchmarks_dir=benchmarks_dir,
        repo_dir=repo_dir,
        bundle_record=None if bundle_record is None else json.loads(Path(bundle_record).read_text("utf-8")),
    )
    index = build_html(book_dir)
    if index != Path(index_out).resolve():
        raise ContractError(f"{index_out}: the book builds to {index}, not to this path")
    return index


_JB_MAIN = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


_ERROR_PATTERNS = (
    r"\bSphinx\w*(Warning|Error)\b: \S",
    r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b",
    r"\b\w+(Error|Exception): \S",
)


def _last_error_line(output: str) -> str:
    """The most telling line of a failed build's output (Sphinx warning or error, else the last line)."""
    lines = [ln.strip() for ln in _ANSI_RE.sub("", output).splitlines() if ln.strip()]
    for pattern in _ERROR_PATTERNS:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1]
    lines = [ln for ln in lines if not set(ln) <= {"="}]
    return lines[-1] if lines else "no output"


def build_html(book_dir: str | os.PathLike[str], *, timeout: float = 900) -> Path:
    """Build the book to HTML with Jupyter Book 1.x, every warning an error; return `_build/html/index.html`.

    The build goes to a temporary folder `_build/.building-*` and replaces `_build/html` only once it has
    passed every check, so a build killed at any point leaves the previous book or none, never a partial
    one whose `index.html` a rerun would take as complete. A failed build (ToolshiftError naming the last
    error line, or the first internal link, image or anchor of the HTML that does not resolve) also removes
    the previous `_build/html`, so it leaves no `index.html` behind. Two builds of one folder at once are
    refused (a lock in `_build/`). Runs Jupyter Book from the current interpreter; needs no network.
    """
    book = Path(book_dir).resolve()
    if not (book / "_config.yml").is_file() or not (book / "_toc.yml").is_file():
        raise ContractError(f"{book}: not a book folder (needs _config.yml and _toc.yml)")
    build = book / "_build"
    html = build / "html"
    build.mkdir(exist_ok=True)
    with held_lock(build / ".lock", f"book folder {book}"):
        for stale in build.glob(".building-*"):  # left behind by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=build))
        try:
            built = _jupyter_book_html(book, tmp, timeout)
            if html.exists():  # the previous book goes only now, and with the temporary folder
                html.rename(tmp / "previous")
            built.rename(html)
        except ToolshiftError:
            shutil.rmtree(html, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return html / "index.html"


def _jupyter_book_html(book: Path, out: Path, timeout: float) -> Path:
    """Build `book` with its output under `out` and check it; the checked `html` folder."""
    cmd = [
        sys.executable,
        "-c",
        _JB_MAIN,
        "build",
        str(book),
        "--path-output",
        str(out),
        "--builder",
        "html",
        "--warningiserror",
        "--all",
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            preexec_fn=child_dies_with_parent,  # a killed book job takes its Jupyter Book build with it
        )
    except subprocess.TimeoutExpired:
        raise ToolshiftError(f"jupyter-book build of {book} timed out after {timeout:g} s") from None
    output = proc.stdout + "\n" + proc.stderr
    html = out / "_build" / "html"
    failed = (
        proc.returncode != 0
        or not (html / "index.html").is_file()
        or "There was an error in building your book" in output
    )
    if failed:
        raise ToolshiftError(f"jupyter-book build of {book} failed: {_last_error_line(output)}")
    broken = broken_internal_links(html)
    if broken:
        raise ToolshiftError(
            f"jupyter-book build of {book}: {len(broken)} internal link(s) do not resolve, first {broken[0]}"
        )
    return html
