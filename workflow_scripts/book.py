"""Rule book (the last rule): result files -> the Jupyter Book's generated pages -> HTML, in one call
(toolshift.report.build.make_book: write_book_pages, then build_html)."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.report.build import make_book
from toolshift.report.pages import collect_figures


def main(smk) -> None:
    results = Path(smk.params.results)
    figures, captions = collect_figures([*smk.input.figures, *smk.input.captions, *smk.input.headline_figure])
    make_book(
        book_dir=Path(smk.params.book_dir),
        asr_csv=Path(smk.input.asr),
        over_refusal_csv=Path(smk.input.over_refusal),
        figures=figures,
        captions_json=None,
        captions=captions,
        vectors=[Path(p) for p in smk.input.vectors],
        config=dict(smk.params.config),
        index_out=Path(smk.output[0]),
        sources=Path(smk.params.repo) / "book",
        judged=[Path(p) for p in smk.input.judged],
        headline_csv=Path(smk.input.headline),
        tables={Path(p).stem: Path(p) for p in smk.input.analysis},
        episodes={Path(p).stem: Path(p) for p in smk.input.episodes},
        results_root=results,
        prompts={Path(p).parent.name: Path(p) for p in smk.input.prompts},  # data/{dataset}/prompts.parquet
        splits={Path(p).stem: Path(p) for p in smk.input.splits},  # splits/{dataset}.parquet
        benchmarks_dir=results / "benchmarks",
        repo_dir=Path(smk.params.repo),
        bundle_record=smk.input.bundle_record[0] if smk.input.bundle_record else None,  # rules/bundle.smk
    )


run_step(snakemake, main)
