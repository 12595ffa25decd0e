# Stage 10 (last): the Jupyter Book, built from the result files only.


rule book:
    input:
        asr=res("tables/asr.csv"),
        over_refusal=res("tables/over_refusal.csv"),
        figures=rules.figures.output,
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=MODELS, dataset=DATASETS),
    output:
        BOOK_INDEX,
    log:
        res("logs/book.log"),
    benchmark:
        res("benchmarks/book.tsv")
    conda:
        ENV
    params:
        book_dir=config["book_dir"],
        config=config,
    script:
        "../workflow_scripts/build_book.py"
