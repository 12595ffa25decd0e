# Stage 10 (last): the Jupyter Book, built from the result files only.


rule book:
    input:
        asr=res("tables/asr.csv"),
        over_refusal=res("tables/over_refusal.csv"),
        headline=res("tables/headline.csv"),
        analysis=[
            res(f"tables/{t}.csv")
            for t in [
                "asr_by_category",
                "contrasts",
                "asr_by_scale",
                "token_counts",
                "tokens_model",
                *ANALYSIS_TABLES,
                *VALIDATION_TABLES,
            ]
        ],
        figures=expand(
            res("figures/{dataset}/{name}.{ext}"),
            dataset=DATASETS,
            name=DATASET_FIGURES,
            ext=["png", "svg"],
        ),
        captions=expand(
            res("figures/{dataset}/{captions}.json"),
            dataset=DATASETS,
            captions=["captions", "representation.captions"],
        ),
        headline_figure=rules.headline_figure.output,
        vectors=expand(res("vectors/{model}/{dataset}.nc"), model=HF_MODELS, dataset=DATASETS),
        judged=expand(
            res("judged/{judge}/{model}/{dataset}.parquet"),
            judge=config["headline_judge"],
            model=MODELS,
            dataset=DATASETS,
        ),
        episodes=expand(
            res("episodes/{dataset}/{condition}.jsonl"),
            dataset=DATASETS[0],
            condition=CONDITIONS,
        ),
        episode_images=res(f"episodes/{DATASETS[0]}/images"),
        prompt_images=res(f"data/{DATASETS[0]}/images"),
        prompts=expand(res("data/{dataset}/prompts.parquet"), dataset=DATASETS),
        skipped=expand(res("data/{dataset}/skipped.csv"), dataset=DATASETS),  # read beside each prompts file
        splits=expand(res("splits/{dataset}.parquet"), dataset=DATASETS),
    output:
        BOOK_INDEX,
    log:
        res("logs/book.log"),
    benchmark:
        res("benchmarks/book.tsv")
    priority: CRITICAL_PATH
    conda:
        ENV
    params:
        book_dir=book_dir_above_index,
        results=results_above_asr,
        repo=workflow.basedir,
        config=config,
    script:
        "../workflow_scripts/book.py"
