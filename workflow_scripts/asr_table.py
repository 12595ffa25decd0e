"""Rule asr_table: judged tables + splits -> ASR (test, validation, per category), over-refusal, headline,
the claims' paired contrasts, ASR by zoom scale, the share of the tool gap each added vector closes, the
token counts and the tokens model."""

import pandas as pd

from toolshift.analysis.contrasts import contrasts_table
from toolshift.analysis.headline import headline_table
from toolshift.analysis.interventions import skipped_interventions
from toolshift.analysis.magnification import asr_by_scale_table
from toolshift.analysis.mechanism import tool_gap_table
from toolshift.analysis.tables import (
    asr_by_category_table,
    asr_table,
    free_tool_use_table,
    over_refusal_table,
)
from toolshift.analysis.tokens import token_counts_table, tokens_model_table
from toolshift.common.steps import run_step
from toolshift.contracts import JUDGED_COLUMNS, read_table, write_csv
from toolshift.datasets.splits import read_splits
from toolshift.judges.keyword import detect_refusals, refusal_detector


def main(smk) -> None:
    judged = pd.concat([read_table(p, JUDGED_COLUMNS) for p in smk.input.judged], ignore_index=True)
    splits = pd.concat([read_splits(p) for p in smk.input.splits], ignore_index=True)
    stats = smk.params.stats
    kw = {"n_boot": stats["n_boot"], "seed": stats["seed"], "splits": splits}
    write_csv(asr_table(judged, split="test", **kw), smk.output.asr)
    write_csv(asr_table(judged, split="validation", **kw), smk.output.asr_validation)
    write_csv(asr_by_category_table(judged, split="test", **kw), smk.output.asr_by_category)
    detected = detect_refusals(judged, smk.params.keyword_list)  # over-refusal: a detector, not a judge
    over = {"detector": refusal_detector(smk.params.keyword_list), "splits": splits}
    write_csv(over_refusal_table(detected, split="test", **over), smk.output.over_refusal)
    write_csv(over_refusal_table(detected, split="validation", **over), smk.output.over_refusal_validation)
    write_csv(free_tool_use_table(judged, splits=splits, split="test"), smk.output.free_tool_use)
    write_csv(headline_table(judged, judge=smk.params.judge, split="test", **kw), smk.output.headline)
    margin = stats["equivalence_margin"]
    write_csv(contrasts_table(judged, split="test", equivalence_margin=margin, **kw), smk.output.contrasts)
    write_csv(asr_by_scale_table(judged, splits=splits, split="test"), smk.output.asr_by_scale)
    skipped = skipped_interventions(smk.params.interventions, smk.params.conditions)
    write_csv(tool_gap_table(judged, split="test", skipped=skipped, **kw), smk.output.tool_gap)
    families = dict(smk.params.families)
    write_csv(token_counts_table(judged, families=families, splits=splits), smk.output.token_counts)
    write_csv(tokens_model_table(judged, splits=splits, split="test"), smk.output.tokens_model)


run_step(snakemake, main)
