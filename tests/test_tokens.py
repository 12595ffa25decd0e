"""Token tables (toolshift.analysis.tokens): what each condition holds constant, and the logistic model of
unsafe on the tokens after the instruction recovering a planted dose."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from toolshift.analysis.tokens import (
    TOKENS_TERM,
    fit_tokens_model,
    level_of,
    token_counts_table,
    tokens_model_table,
)
from toolshift.contracts import TOKEN_COLUMNS, TOKEN_COUNT_COLUMNS, TOKENS_MODEL_COLUMNS
from toolshift.errors import ContractError

AFTER = {
    "direct": 5, "tool": 100, "tool_blank": 100, "tool_blank_x4": 300, "text_trail": 60,
    "text_trail_long": 140, "text_prior": 5, "image_no_tool": 5, "image_after": 45, "image_turn": 95,
}  # fmt: skip
"""Tokens after the instruction per condition (a prompt adds 0-4 of its own)."""


ONE_IMAGE = ("direct", "text_prior", "text_trail", "text_trail_long")


def world(logit, n: int = 300, seed: int = 0, judges=("keyword",)) -> pd.DataFrame:
    """A judged table of one model: `logit(condition, tokens)` is the log-odds of an unsafe answer."""
    rng = np.random.default_rng(seed)
    rows = []
    for condition, after in AFTER.items():
        extra = rng.integers(0, 5, n)
        tokens = after + extra
        p = 1 / (1 + np.exp(-np.array([logit(condition, t) for t in tokens])))
        unsafe = rng.random(n) < p
        for i in range(n):
            for judge in judges:
                rows.append(
                    {
                        "model": "m", "dataset": "d", "judge": judge, "condition": condition,
                        "intervention": "none", "prompt_id": f"p{i:03d}", "harmful": True,
                        "unsafe": bool(unsafe[i]), "n_images": 1 + (condition not in ONE_IMAGE),
                        "n_visual_tokens": 30, "n_text_tokens": 60 + int(tokens[i]),
                        "n_after_instruction": int(tokens[i]), "n_visual_after_instruction": 0,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def term(table: pd.DataFrame, name: str) -> pd.Series:
    (row,) = table[table["term"] == name].itertuples(index=False)
    return pd.Series(row._asdict())


def test_levels_merge_the_conditions_that_differ_only_in_tokens():
    assert [level_of(c) for c in ("tool_blank_x4", "tool_blank_x0.25", "tool_blank")] == ["tool_blank"] * 3
    assert level_of("text_trail_long") == "text_trail" and level_of("image_after") == "image_no_tool"
    assert [level_of(c) for c in ("direct", "tool", "image_turn", "text_prior")] == [
        "direct", "tool", "image_turn", "text_prior"
    ]  # fmt: skip


def test_the_model_recovers_a_planted_dose():
    """The dilution world: every token after the instruction lowers the log-odds by 0.012, whatever it is;
    the conditions add nothing. The tokens term is found, the level terms are not."""
    table = tokens_model_table(world(lambda c, t: 1.5 - 0.012 * t), split="test")
    assert list(table.columns) == list(TOKENS_MODEL_COLUMNS)
    dose = term(table, TOKENS_TERM)
    assert dose.ci_low < -0.012 < dose.ci_high and dose.coef < 0 and dose.p < 1e-4
    assert dose.coef == pytest.approx(-0.012, abs=0.004)
    assert dose.reference == "direct" and bool(dose.converged) and dose.note == ""
    assert set(table["split"]) == {"all"} and set(table["n"]) == {len(AFTER) * 300}
    levels = table[table["term"].str.startswith("level[")]
    assert sorted(levels["term"]) == sorted(
        f"level[{c}]"
        for c in ("tool", "tool_blank", "text_trail", "text_prior", "image_no_tool", "image_turn")
    )
    assert (levels["p"] > 0.001).all()  # no condition effect was planted
    assert table["term"].iloc[0] == "Intercept" and table["term"].iloc[-1] == TOKENS_TERM


def test_a_condition_effect_without_a_dose_leaves_the_tokens_term_empty():
    """The tool world: the tool turn (and its overrides) lowers the log-odds by 2; tokens do nothing. The
    tool level carries the effect and the tokens term's interval covers 0."""
    tool = ("tool", "tool_blank", "tool_blank_x4")
    table = tokens_model_table(world(lambda c, t: 1.0 - 2.0 * (c in tool), seed=1))
    dose = term(table, TOKENS_TERM)
    assert dose.ci_low < 0 < dose.ci_high and dose.p > 0.05
    assert term(table, "level[tool]").coef < -1 and term(table, "level[tool]").p < 1e-6


def test_coefficients_equal_statsmodels_on_the_same_design():
    import statsmodels.api as sm

    frame = world(lambda c, t: 1.0 - 0.01 * t, n=80, seed=2)
    terms, info = fit_tokens_model(frame)
    levels = frame["condition"].map(level_of)
    names = sorted(set(levels) - {"direct"})
    design = pd.DataFrame({"Intercept": 1.0, **{n: (levels == n).astype(float) for n in names}})
    design[TOKENS_TERM] = frame[TOKENS_TERM].astype(float)
    fit = sm.Logit(frame["unsafe"].astype(float), design).fit(disp=0)
    got = {t["term"]: t for t in terms}
    assert got[TOKENS_TERM]["coef"] == pytest.approx(fit.params[TOKENS_TERM], rel=1e-5)
    assert got[TOKENS_TERM]["se"] == pytest.approx(fit.bse[TOKENS_TERM], rel=1e-4)
    assert got[TOKENS_TERM]["p"] == pytest.approx(fit.pvalues[TOKENS_TERM], rel=1e-4)
    assert got["level[tool]"]["coef"] == pytest.approx(fit.params["tool"], rel=1e-5)
    assert info["n"] == len(frame) and info["n_unsafe"] == int(frame["unsafe"].sum())


def test_levels_without_variation_are_dropped_and_degenerate_tables_say_why():
    frame = world(lambda c, t: 1.5 - 0.012 * t, n=200, seed=3)
    frame.loc[frame["condition"] == "image_turn", "unsafe"] = True  # all unsafe: its indicator absorbs it
    terms, info = fit_tokens_model(frame)
    assert info["dropped_levels"] == "image_turn" and "level[image_turn]" not in {t["term"] for t in terms}
    assert info["n"] == 9 * 200 and info["converged"]
    same = frame.assign(unsafe=True)
    terms, info = fit_tokens_model(same)
    assert [t["term"] for t in terms] == [TOKENS_TERM] and math.isnan(terms[0]["coef"])
    assert "all equal" in info["note"]
    flat = frame.assign(n_after_instruction=frame["condition"].map(AFTER))  # tokens fixed by the condition
    flat = flat[~flat["condition"].isin(["tool_blank_x4", "text_trail_long", "image_after"])]
    terms, info = fit_tokens_model(flat)
    assert "does not vary within the levels" in info["note"] and math.isnan(terms[0]["p"])


def test_unknown_counts_free_and_interventions_are_left_out():
    frame = world(lambda c, t: 1.0 - 0.01 * t, n=60, seed=4)
    extra = frame[frame["condition"] == "direct"].assign(intervention="add_a1", unsafe=False)
    free = frame[frame["condition"] == "direct"].assign(condition="free")
    unknown = frame.assign(n_after_instruction=-1, model="api-model")
    table = tokens_model_table(pd.concat([frame, extra, free, unknown]))
    assert set(table["model"]) == {"m", "api-model"}
    assert set(table.loc[table["model"] == "m", "n"]) == {len(frame)}
    api = table[table["model"] == "api-model"]
    assert len(api) == 1 and "no response with a token count" in api["note"].iloc[0]


def test_token_counts_table_means_ranges_and_families():
    frame = world(lambda c, t: 0.0, n=20, seed=5, judges=("keyword", "llamaguard"))
    frame.loc[(frame["condition"] == "tool") & (frame["prompt_id"] == "p000"), "n_visual_tokens"] = -1
    table = token_counts_table(frame, families={"m": "qwen2_5_vl"})
    assert list(table.columns) == list(TOKEN_COUNT_COLUMNS)
    assert list(table["condition"]) == [
        "direct", "tool", "tool_blank", "tool_blank_x4", "text_trail", "text_prior", "image_no_tool",
        "image_after", "image_turn", "text_trail_long",
    ]  # fmt: skip
    assert set(table["n"]) == {20} and set(table["family"]) == {"qwen2_5_vl"}  # one row per prompt, not judge
    tool = table.set_index("condition").loc["tool"]
    sub = frame[(frame["condition"] == "tool") & (frame["judge"] == "keyword")]
    assert tool["n_after_instruction"] == pytest.approx(sub["n_after_instruction"].mean())
    assert (tool["n_after_instruction_min"], tool["n_after_instruction_max"]) == (
        sub["n_after_instruction"].min(),
        sub["n_after_instruction"].max(),
    )
    assert tool["n_visual_tokens"] == 30 and tool["n_images"] == 2  # the unknown count left out
    assert token_counts_table(frame)["family"].eq("").all()
    with pytest.raises(ContractError, match="lacks the token column"):
        token_counts_table(frame.drop(columns=list(TOKEN_COLUMNS[:1])))


def test_book_shows_the_counts_per_family_and_the_tokens_term():
    from toolshift.report.tables import analysis_table_markdown

    frame = world(lambda c, t: 1.5 - 0.012 * t, n=40, seed=6)
    frame = pd.concat([frame, frame.assign(model="m2"), frame.assign(model="other")])
    families = {"m": "qwen2_5_vl", "m2": "qwen2_5_vl", "other": "llava"}
    md = analysis_table_markdown("token_counts", token_counts_table(frame, families=families))
    assert md.startswith("(table-token-counts)=\n**What each condition holds constant, in tokens.**")
    assert (
        md.count("```{table} qwen2_5_vl: m / d") == 1 and "m2" in md and "```{table} llava: other / d" in md
    )
    assert "| `tool` | 40 | 2 | 30 |" in md and "tokens after T [range]" in md
    md = analysis_table_markdown("tokens_model", tokens_model_table(frame), judge="keyword")
    assert "`n_after_instruction`" in md and "Judge **keyword**" in md and "dilution predicts" in md
