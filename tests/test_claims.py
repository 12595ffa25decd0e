"""Claim verdicts from the contrast rows (toolshift.analysis.claims): the component and claim rules, the
claims table of synthetic contrasts shaped like each planted world's, and the tokens model's dose claim."""

from __future__ import annotations

import pandas as pd
import pytest

from toolshift.analysis.claims import (
    CLAIM_GROUPS,
    claim_verdict,
    claims_table,
    component_verdict,
    row_verdict,
)
from toolshift.analysis.contrasts import CLAIMS
from toolshift.contracts import CLAIMS_COLUMNS, CONTRASTS_COLUMNS

S, C, N, INC = "supported", "contradicted", "not shown", "inconclusive"

# the verdicts each contrast id gets in each world, as lists of row verdicts (several rows: several
# overrides, alphas, seeds, controls)
WORLD_ROWS: dict[str, dict[str, list[str]]] = {
    "tool": {
        "tool_use_lowers_asr": [S],
        "tool_offered_is_not_tool_use": [S],
        "override_beats_text_trail": [S, S, S],
        "override_beats_text_trail_long": [S, S, S],
        "tool_beats_image_after": [S],
        "tool_beats_image_turn": [S],
        "text_trail_equivalent_to_direct": [S],
        "text_trail_long_equivalent_to_direct": [S],
        "text_prior_equivalent_to_direct": [S],
        "removing_shift_raises_asr": [S, S],
        "adding_shift_beats_random": [S] * 6,
        "adding_shift_beats_orthogonal_component": [S],
        "refusal_ablation_raises_asr": [N, S],  # direct is at the ceiling: the tool row carries it
        "adding_shift_beats_control_shift": [S, S, S],
        "adding_shift_beats_covariance_random": [S, S, S],
        "relative_shift_lowers_asr": [S, S, S],
        "removing_shift_raises_asr_more_in_tool": [S, S],
        "removing_shift_beats_random_removal": [S, S],
        "orthogonal_component_lowers_asr": [N],  # a diagnostic: in no claim
    },
    "trace": {
        "tool_use_lowers_asr": [S],
        "tool_offered_is_not_tool_use": [S],
        "override_beats_text_trail": [N, N, N],
        "override_beats_text_trail_long": [N, N, N],
        "tool_beats_image_after": [S],
        "tool_beats_image_turn": [S],
        "text_trail_equivalent_to_direct": [C],
        "text_trail_long_equivalent_to_direct": [C],
        "text_prior_equivalent_to_direct": [S],
        "removing_shift_raises_asr": [S, S],
        "adding_shift_beats_random": [S] * 6,
        "adding_shift_beats_orthogonal_component": [S],
        "refusal_ablation_raises_asr": [N, S],
        "adding_shift_beats_control_shift": [N, S, S],
        "adding_shift_beats_covariance_random": [S, S, S],
        "relative_shift_lowers_asr": [N, S, S],  # h(tool) - h(text_trail) holds no shift
        "removing_shift_raises_asr_more_in_tool": [S, S],
        "removing_shift_beats_random_removal": [S, S],
        "orthogonal_component_lowers_asr": [S],  # either way: a diagnostic
    },
    "null": {
        "tool_use_lowers_asr": [N],
        "tool_offered_is_not_tool_use": [N],
        "override_beats_text_trail": [N, N, N],
        "override_beats_text_trail_long": [N, N, N],
        "tool_beats_image_after": [N],
        "tool_beats_image_turn": [N],
        "text_trail_equivalent_to_direct": [S],  # a model that answers alike everywhere is "equivalent"
        "text_trail_long_equivalent_to_direct": [INC],
        "text_prior_equivalent_to_direct": [S],
        "removing_shift_raises_asr": [N, N],
        "adding_shift_beats_random": [N] * 6,
        "adding_shift_beats_orthogonal_component": [N],
        "refusal_ablation_raises_asr": [N, N],
        "adding_shift_beats_control_shift": [N, N, N],
        "adding_shift_beats_covariance_random": [N, N, N],
        "relative_shift_lowers_asr": [N, N, N],
        "removing_shift_raises_asr_more_in_tool": [N, N],
        "removing_shift_beats_random_removal": [N, N],
        "orthogonal_component_lowers_asr": [N],
    },
}


def contrasts_of(worlds: dict[str, dict[str, list[str]]], judge: str = "keyword") -> pd.DataFrame:
    """A contrasts table (CONTRASTS_COLUMNS) with one row per listed verdict; other columns placeholders."""
    rows = []
    for model, ids in worlds.items():
        for claim, verdicts in ids.items():
            for k, verdict in enumerate(verdicts):
                row = dict.fromkeys(CONTRASTS_COLUMNS, 0)
                row.update(model=model, dataset="mini", judge=judge, split="test", claim=claim,
                           contrast=f"{claim}#{k}", verdict=verdict)  # fmt: skip
                rows.append(row)
    return pd.DataFrame(rows, columns=list(CONTRASTS_COLUMNS))


def test_row_and_component_rules():
    assert [row_verdict(v) for v in (S, C, N, INC, "anything")] == [S, C, N, N, N]
    assert component_verdict([]) == "not tested"
    assert component_verdict([S, S]) == S
    assert component_verdict([S, N]) == N  # "every row" means every row
    assert component_verdict([S, INC]) == N  # an inconclusive equivalence row is not a support
    assert component_verdict([S, C, N]) == C  # one contradicted row contradicts the id
    assert component_verdict([N, S], mode="any") == S
    assert component_verdict([N, C], mode="any") == N
    with pytest.raises(ValueError, match="mode"):
        component_verdict([S], mode="most")


def test_claim_rule():
    mechanism = next(g for g in CLAIM_GROUPS if g.id == "mechanism")
    ok = {"removing_shift_raises_asr": S, "adding_shift_beats_random": S, "refusal_ablation_raises_asr": S,
          "adding_shift_beats_orthogonal_component": S}  # fmt: skip
    assert claim_verdict(mechanism, ok) == S
    assert claim_verdict(mechanism, {**ok, "adding_shift_beats_random": N}) == N
    assert claim_verdict(mechanism, {**ok, "adding_shift_beats_random": C}) == C
    # the positive control failed: the interventions cannot move ASR, so nothing is shown either way
    failed_control = {**ok, "adding_shift_beats_random": C, "refusal_ablation_raises_asr": N}
    assert claim_verdict(mechanism, failed_control) == INC
    assert claim_verdict(mechanism, {k: v for k, v in ok.items() if k != "removing_shift_raises_asr"}) == (
        "not tested"
    )


def test_every_contrast_id_is_in_one_claim_but_the_diagnostic():
    """The components are the contrast ids of tables/contrasts.csv (`CLAIMS`), each in one claim; only the
    diagnostic orthogonal-component row is in none."""
    components = [c.id for g in CLAIM_GROUPS for c in g.components]
    assert len(components) == len(set(components))
    assert set(components) == {c.id for c in CLAIMS} - {"orthogonal_component_lowers_asr"}
    assert set(WORLD_ROWS["tool"]) == {c.id for c in CLAIMS}


def test_the_claims_table_of_three_worlds():
    table = claims_table(contrasts_of(WORLD_ROWS))
    assert list(table.columns) == list(CLAIMS_COLUMNS)
    got = {(r.model, r.claim): r.verdict for r in table.itertuples()}
    assert got == {
        ("null", "behaviour"): N,
        ("null", "controls"): N,
        ("null", "mechanism"): INC,
        ("null", "specificity"): N,
        ("tool", "behaviour"): S,
        ("tool", "controls"): S,
        ("tool", "mechanism"): S,
        ("tool", "specificity"): S,
        ("trace", "behaviour"): S,
        ("trace", "controls"): C,
        ("trace", "mechanism"): S,
        ("trace", "specificity"): N,
    }
    row = table[(table["model"] == "tool") & (table["claim"] == "controls")].iloc[0]
    assert row["n_rows"] == 11 and row["missing"] == ""
    assert "dose" not in set(table["claim"])  # no tokens model given
    assert "override_beats_text_trail: supported" in row["components"]
    assert table["claim"].tolist()[:4] == [g.id for g in CLAIM_GROUPS]


def test_missing_contrasts_make_a_claim_not_tested_and_are_named():
    rows = {k: v for k, v in WORLD_ROWS["tool"].items() if "equivalent" not in k}  # the TOST dropped
    table = claims_table(contrasts_of({"tool": rows})).set_index("claim")
    assert table.loc["controls", "verdict"] == "not tested"
    assert table.loc["controls", "missing"].split("; ") == [
        "text_trail_equivalent_to_direct",
        "text_trail_long_equivalent_to_direct",
        "text_prior_equivalent_to_direct",
    ]
    assert table.loc["behaviour", "verdict"] == S


def test_each_judge_and_split_gets_its_own_verdicts():
    both = pd.concat([contrasts_of({"tool": WORLD_ROWS["tool"]}),
                      contrasts_of({"tool": WORLD_ROWS["trace"]}, judge="llamaguard")])  # fmt: skip
    table = claims_table(both)
    controls = table[table["claim"] == "controls"].set_index("judge")["verdict"]
    assert controls.to_dict() == {"keyword": S, "llamaguard": C}


def tokens_model(coef: float, p: float, model: str = "tool", note: str = "") -> pd.DataFrame:
    keys = {"model": model, "dataset": "mini", "judge": "keyword", "split": "test"}
    rows = [
        {**keys, "term": "Intercept", "coef": 2.0, "p": 0.01, "note": note},
        {**keys, "term": "level[tool]", "coef": -1.0, "p": 0.02, "note": note},
        {**keys, "term": "n_after_instruction", "coef": coef, "p": p, "note": note},
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("coef", "p", "verdict"),
    [(-0.05, 0.001, S), (0.05, 0.001, C), (-0.05, 0.2, N), (float("nan"), float("nan"), N), (0.0, 0.0, N)],
)
def test_the_dose_claim_reads_the_tokens_term(coef, p, verdict):
    table = claims_table(contrasts_of({"tool": WORLD_ROWS["tool"]}), tokens_model(coef, p))
    dose = table[table["claim"] == "dose"].iloc[0]
    assert table["claim"].tolist()[-1] == "dose" and dose["verdict"] == verdict and dose["n_rows"] == 1
    assert dose["components"].startswith(f"n_after_instruction: {verdict}")


def test_a_model_the_tokens_model_lacks_has_its_dose_not_tested():
    table = claims_table(contrasts_of(WORLD_ROWS), tokens_model(-0.1, 0.001, model="trace"))
    dose = table[table["claim"] == "dose"].set_index("model")
    assert dose.loc["trace", "verdict"] == S
    assert dose.loc["tool", "verdict"] == "not tested"
    assert dose.loc["tool", "missing"] == "n_after_instruction"
