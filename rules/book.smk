# Stage 10 (last): the Jupyter Book, built from the result files only.


rule book:
    input:
        asr=res("tables/asr.csv"),
        over_refusal=res("tables/over_refusal.csv"),
        headline=res("tables/headline.csv"),
        analysis=[res(f"tables/{t}.csv") for t in ["asr_by_category", *ANALYSIS_TABLES]],
        figures=rules.figures.output,
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=HF_MODELS, dataset=DATASETS),
        judged=expand(
            res("judged/{judge}/{model}/{dataset}.parquet"),
            judge=config["headline_judge"],
            model=MODELS,
            dataset=DATASETS,
        ),
    output:
        BOOK_INDEX,
    log:
        res("logs/book.log"),
    benchmark:
        res("benchmarks/book.tsv")
    conda:
        ENV
    params:
        book_dir=lambda wc, output: results_root_of(output[0], "_build/html/index.html"),
        config=config,
    script:
        "../workflow_scripts/build_book.py"
