"""Figures from synthetic `tables/asr.csv` rows and vector files: files, sizes, palette, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import seaborn as sns
import xarray as xr
from PIL import Image

from toolshift import CONDITIONS
from toolshift.analysis.headline import headline_table
from toolshift.analysis.vectors import compute_vectors
from toolshift.contracts import ASR_COLUMNS
from toolshift.datasets.splits import make_splits
from toolshift.errors import ContractError
from toolshift.report.figures import (
    behaviour,
    headline,
    intervention_cost,
    interventions,
    registry,
    representation,
    style,
)
from toolshift.report.figures.behaviour import (
    plot_asr_by_condition,
    plot_asr_by_judge,
    plot_category_heatmap,
    plot_free_tool_use,
)
from toolshift.report.figures.headline import plot_headline
from toolshift.report.figures.intervention_cost import plot_intervention_cost
from toolshift.report.figures.interventions import (
    dose_spec,
    intervention_kind,
    plot_dose_response,
    plot_interventions,
)
from toolshift.report.figures.representation import (
    plot_cosine_by_layer,
    plot_pca,
    plot_probes,
    plot_projections,
)
from toolshift.report.figures.style import CONDITION_PALETTE, condition_color

FIGURE_MODULES = (behaviour, headline, intervention_cost, interventions, representation)

MODELS = ("fixture-qwen2_5_vl", "fixture-llava")


def synthetic_asr(
    models=MODELS, conditions=CONDITIONS, judge="keyword", n=20, seed=0, n_seeds=2, random_alphas=(1,)
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []

    def add(model, condition, intervention, k):
        p = k / n
        base = condition == "direct" and intervention == "none"
        rows.append(
            {
                "model": model,
                "dataset": "mini",
                "condition": condition,
                "intervention": intervention,
                "judge": judge,
                "n": n,
                "n_unsafe": k,
                "asr": p,
                "asr_ci_low": max(0.0, p - 0.15),
                "asr_ci_high": min(1.0, p + 0.15),
                "rel_reduction": np.nan if base else 0.25,
                "rel_reduction_ci_low": np.nan if base else 0.05,
                "rel_reduction_ci_high": np.nan if base else 0.45,
                "mcnemar_p": np.nan if base else 0.04,
            }
        )

    for m in models:
        for c in conditions:
            add(m, c, "none", int(rng.integers(0, n + 1)))
        for a in (0, 0.5, 1, 2):
            add(m, "direct", f"add_a{a:g}", int(rng.integers(0, n + 1)))
        for s in range(n_seeds):
            for a in random_alphas:
                add(m, "direct", f"random_a{a:g}_s{s}", int(rng.integers(0, n + 1)))
        add(m, "tool", "subtract", 9)
        add(m, "tool", "ablate", 11)
    return pd.DataFrame(rows, columns=list(ASR_COLUMNS))


def synthetic_vectors(model: str, n_layers: int = 6, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    conds = list(CONDITIONS)
    shift_tool = rng.uniform(-1, 1, (len(conds), n_layers))
    shift_tool[0] = np.nan  # the shift of direct from itself has no direction
    shift_tool[1] = 1.0
    return xr.Dataset(
        {
            "cos_tool_refusal": ("layer", rng.uniform(-1, 1, n_layers)),
            "cos_shift_tool": (("condition", "layer"), shift_tool),
            "cos_shift_refusal": (("condition", "layer"), rng.uniform(-1, 1, (len(conds), n_layers))),
            "norm_tool_vector": ("layer", rng.uniform(0.5, 5, n_layers)),
        },
        coords={"layer": np.arange(n_layers), "condition": conds},
        attrs={"model": model, "dataset": "mini"},
    )


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _colours(png) -> set[tuple[int, int, int]]:
    arr = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in row) for row in np.unique(arr, axis=0)}


def _check_written(png, caption: str) -> None:
    assert png.is_file() and png.stat().st_size > 5_000
    svg = png.with_suffix(".svg")
    assert svg.is_file() and svg.stat().st_size > 5_000
    assert "<svg" in svg.read_text(encoding="utf-8")[:2_000]
    width, height = Image.open(png).size
    assert 1000 <= width <= 2000, width
    assert 300 <= height <= 2500, height
    assert caption.endswith(".") and "\n" not in caption
    leftovers = [p.name for p in png.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


SHADES = {"tool_blank_x0.25": "tool_blank", "tool_blank_x4": "tool_blank", "text_trail_long": "text_trail"}
SHADES |= {"image_after": "image_no_tool", "image_turn": "image_no_tool"}
"""The controls drawn in a lighter or darker shade of the condition whose amount or place they vary."""


def test_palette_is_fixed_and_colour_blind_safe():
    import colorsys

    import matplotlib.colors

    assert set(CONDITIONS) <= set(CONDITION_PALETTE)
    assert len(set(CONDITION_PALETTE.values())) == len(CONDITION_PALETTE)
    base = {c: v for c, v in CONDITION_PALETTE.items() if c not in SHADES}
    assert set(base.values()) <= set(sns.color_palette("colorblind").as_hex())
    for condition, parent in SHADES.items():
        (h, light, s), (h0, light0, s0) = (
            colorsys.rgb_to_hls(*matplotlib.colors.to_rgb(CONDITION_PALETTE[c])) for c in (condition, parent)
        )
        assert abs(h - h0) < 0.01 and abs(s - s0) < 0.02 and abs(light - light0) >= 0.15, (
            condition
        )  # lightness only
    assert condition_color("tool_blank_x2") not in CONDITION_PALETTE.values()  # an unlisted dose: a shade


def test_asr_by_condition_writes_png_svg_and_caption(tmp_path):
    png = tmp_path / "figures" / "asr_by_condition.png"
    caption = plot_asr_by_condition(synthetic_asr(), png, "keyword")
    _check_written(png, caption)
    assert "n = 20" in caption and "keyword" in caption and "Wilson" in caption
    colours = _colours(png)
    asr = synthetic_asr()
    for c in CONDITIONS:  # every condition with a bar (ASR above 0 in some model)
        if (asr.loc[asr["condition"] == c, "n_unsafe"] > 0).any():
            assert _rgb(CONDITION_PALETTE[c]) in colours, c


def test_asr_by_condition_colour_follows_condition_not_position(tmp_path):
    png = tmp_path / "subset.png"
    plot_asr_by_condition(synthetic_asr(conditions=("tool", "text_prior")), png, "keyword")
    colours = _colours(png)
    assert _rgb(CONDITION_PALETTE["tool"]) in colours
    assert _rgb(CONDITION_PALETTE["text_prior"]) in colours
    assert _rgb(CONDITION_PALETTE["direct"]) not in colours


def test_cosine_by_layer_writes_png_svg_and_caption(tmp_path):
    vectors = {m: synthetic_vectors(m, seed=i) for i, m in enumerate(MODELS)}
    png = tmp_path / "cosine_by_layer.png"
    caption = plot_cosine_by_layer(vectors, png)
    _check_written(png, caption)
    assert "no confidence intervals" in caption and "no judge" in caption
    assert _rgb(CONDITION_PALETTE["tool_benign"]) in _colours(png)


def test_cosine_by_layer_without_shift_panels(tmp_path):
    vectors = {m: synthetic_vectors(m).drop_vars("cos_shift_tool") for m in MODELS}
    png = tmp_path / "cos.png"
    caption = plot_cosine_by_layer(vectors, png)
    _check_written(png, caption)


def test_dose_response_writes_png_svg_and_caption(tmp_path):
    png = tmp_path / "dose_response.png"
    caption = plot_dose_response(synthetic_asr(), png)
    _check_written(png, caption)
    assert "n = 20" in caption and "keyword" in caption and "Wilson" in caption and "seeds 0, 1" in caption
    colours = _colours(png)
    assert _rgb(CONDITION_PALETTE["direct"]) in colours  # the baseline line


def _dose(intervention):
    spec = dose_spec(intervention)
    return None if spec is None else (spec.kind, spec.alpha, spec.seed)


def test_dose_spec():
    """Dose-response points are read by toolshift.analysis.interventions.parse_intervention_id."""
    assert _dose("add_a0") == ("add", 0.0, None)
    assert _dose("add_a0.5") == ("add", 0.5, None)
    assert _dose("add_a-1") == ("add", -1.0, None)
    assert _dose("add_a1e+06") == ("add", 1e6, None)
    assert _dose("random_a1_s3") == ("random", 1.0, 3)
    assert _dose("random_a0.25_s0") == ("random", 0.25, 0)
    for other in ("none", "subtract", "ablate", "add_a", "random_a1"):
        assert dose_spec(other) is None


def test_empty_inputs_raise_contract_errors(tmp_path):
    empty = pd.DataFrame(columns=list(ASR_COLUMNS))
    with pytest.raises(ContractError, match="no rows"):
        plot_asr_by_condition(empty, tmp_path / "a.png", "keyword")
    with pytest.raises(ContractError, match="no rows"):
        plot_dose_response(empty, tmp_path / "d.png")
    with pytest.raises(ContractError, match="no vector datasets"):
        plot_cosine_by_layer({}, tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_rows_and_variables_are_named(tmp_path):
    asr = synthetic_asr()
    with pytest.raises(ContractError, match="judge 'llamaguard'"):
        plot_asr_by_condition(asr, tmp_path / "a.png", "llamaguard")
    no_add = asr[~asr["intervention"].str.startswith("add_")]
    with pytest.raises(ContractError, match="add_a"):
        plot_dose_response(no_add, tmp_path / "d.png")
    with pytest.raises(ContractError, match="missing column.*asr_ci_low"):
        plot_asr_by_condition(asr.drop(columns="asr_ci_low"), tmp_path / "a.png", "keyword")
    broken = {"m": synthetic_vectors("m").drop_vars("cos_tool_refusal")}
    with pytest.raises(ContractError, match="'m'.*cos_tool_refusal"):
        plot_cosine_by_layer(broken, tmp_path / "c.png")
    odd = asr.assign(condition=asr["condition"].replace("tool", "tool_magic"))
    with pytest.raises(ContractError, match="tool_magic"):
        plot_asr_by_condition(odd, tmp_path / "a.png", "keyword")
    with pytest.raises(ContractError, match=r"\.png"):
        plot_asr_by_condition(asr, tmp_path / "a.jpg", "keyword")
    assert list(tmp_path.iterdir()) == []


def test_dose_response_draws_a_random_band_over_five_seeds(tmp_path):
    png = tmp_path / "dose.png"
    caption = plot_dose_response(synthetic_asr(n_seeds=5, random_alphas=(0.5, 1, 2)), png)
    _check_written(png, caption)
    assert "seeds 0, 1, 2, 3, 4" in caption and "hatched band their range over seeds" in caption
    assert "fewer than" not in caption
    few = plot_dose_response(synthetic_asr(n_seeds=2), tmp_path / "few.png")
    assert "fewer than 5 seeds" in few


@pytest.fixture(scope="module")
def real_vectors() -> dict[str, xr.Dataset]:
    """Vectors files computed from random activations of all eight conditions (with splits)."""
    out = {}
    for k, model in enumerate(MODELS):
        rng = np.random.default_rng(k)
        n, n_layers, d = 40, 5, 12
        ids = [f"p{i:02d}" for i in range(n)]
        harmful = np.arange(n) < n // 2
        prompts = pd.DataFrame(
            {
                "prompt_id": ids,
                "dataset": "mini",
                "category": [f"c{i % 3}" for i in range(n)],
                "harmful": harmful,
            }
        )
        base = rng.standard_normal((n, n_layers, d)) + harmful[:, None, None] * 2.0
        acts = {
            c: xr.Dataset(
                {
                    "resid": (
                        ("prompt_id", "layer", "hidden"),
                        base + j * 0.3 + rng.standard_normal((n, n_layers, d)),
                    )
                },
                coords={"prompt_id": ids, "layer": np.arange(n_layers)},
            )
            for j, c in enumerate(CONDITIONS)
        }
        ds = compute_vectors(acts, prompts, model=model, dataset="mini", splits=make_splits(prompts, seed=0))
        out[f"{model} / mini"] = ds
    return out


def test_pca_probes_and_projection_figures(tmp_path, real_vectors):
    for name, plot, words in (
        ("pca", plot_pca, ("principal components", "test prompts shown")),
        ("probes", plot_probes, ("probes", "test prompts", "5-fold")),
        ("projections", plot_projections, ("refusal direction", "test prompts", "n = 8 harmful")),
    ):
        png = tmp_path / f"{name}.png"
        caption = plot(real_vectors, png)
        _check_written(png, caption)
        for w in words:
            assert w in caption, (name, w)
        colours = _colours(png)
        for c in ("direct", "tool", "text_trail"):
            assert _rgb(CONDITION_PALETTE[c]) in colours, (name, c)


def test_representation_figures_need_their_variables(tmp_path, real_vectors):
    name = next(iter(real_vectors))
    broken = {name: real_vectors[name].drop_vars(["pca", "probe_accuracy", "projection"])}
    for plot, var in ((plot_pca, "pca"), (plot_probes, "probe_accuracy"), (plot_projections, "projection")):
        with pytest.raises(ContractError, match=var):
            plot(broken, tmp_path / "x.png")
        with pytest.raises(ContractError, match="no vector datasets"):
            plot({}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def _by_category(judge="keyword") -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for m in MODELS:
        for cat in ("Fraud", "Hate Speech", "Privacy Violation"):
            for c in CONDITIONS:
                k = int(rng.integers(0, 6))
                rows.append(
                    {
                        **dict.fromkeys(ASR_COLUMNS, np.nan),
                        "model": m,
                        "dataset": "mini",
                        "condition": c,
                        "intervention": "none",
                        "judge": judge,
                        "n": 5,
                        "n_unsafe": k,
                        "asr": k / 5,
                        "asr_ci_low": 0.0,
                        "asr_ci_high": 1.0,
                        "split": "test",
                        "category": cat,
                        "holm_p": np.nan,
                    }
                )
    return pd.DataFrame(rows)


def test_category_heatmap(tmp_path):
    png = tmp_path / "heat.png"
    caption = plot_category_heatmap(_by_category(), png, "keyword")
    _check_written(png, caption)
    assert "n = 5" in caption and "category" in caption and "keyword" in caption
    with pytest.raises(ContractError, match="judge 'other'"):
        plot_category_heatmap(_by_category(), tmp_path / "h2.png", "other")


def test_headline_forest_plot(tmp_path):
    rows = []
    for k, m in enumerate(MODELS):
        for c, p in (("direct", 0.7), ("tool_offered", 0.6), ("tool", 0.4 + 0.1 * k)):
            unsafe = np.random.default_rng(k).random(30) < p
            rows += [
                {
                    "model": m,
                    "dataset": "mini",
                    "condition": c,
                    "intervention": "none",
                    "judge": "keyword",
                    "prompt_id": f"p{i}",
                    "harmful": True,
                    "unsafe": bool(u),
                }
                for i, u in enumerate(unsafe)
            ]
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=300)
    png = tmp_path / "headline.png"
    caption = plot_headline(table, png)
    _check_written(png, caption)
    assert "mean over models" in caption and "bootstrap" in caption and "n = 30" in caption
    assert "pooled over models and prompts" in caption and "absolute" in caption and "tool_offered" in caption
    assert _rgb(CONDITION_PALETTE["tool"]) in _colours(png)
    with pytest.raises(ContractError, match="no rows"):
        plot_headline(table.iloc[:0], tmp_path / "h.png")


# ------------------------------------------------------------------ interventions, judges, cost, free


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, captured (and still written) for planted-value checks."""
    figures = []
    save = style.save_figure

    def capture(fig, out_png):
        figures.append(fig)
        save(fig, out_png)

    for module in FIGURE_MODULES:
        monkeypatch.setattr(module, "save_figure", capture)
    return figures


def _bars(ax, horizontal: bool = True) -> dict[str, tuple[float, str]]:
    """Bar label -> (length, hatch) of the bars drawn on `ax` (one BarContainer per bar)."""
    out = {}
    for container in ax.containers:
        if getattr(container, "patches", None):
            rect = container.patches[0]
            out[container.get_label()] = (
                rect.get_width() if horizontal else rect.get_height(),
                rect.get_hatch() or "",
            )
    return out


def _with_judges(judges=("harmbench", "keyword", "llamaguard"), **kw) -> pd.DataFrame:
    return pd.concat([synthetic_asr(judge=j, seed=k, **kw) for k, j in enumerate(judges)], ignore_index=True)


def test_intervention_kind():
    assert intervention_kind("none") == "none"
    assert intervention_kind("add_a2") == "add"
    assert intervention_kind("random_a1_s0") == "random"
    assert intervention_kind("subtract") == "subtract" and intervention_kind("ablate") == "ablate"
    assert intervention_kind("transfer_a1_from_mini") == "transfer"
    assert intervention_kind("ablate_refusal_tool") == "ablate_refusal"
    assert intervention_kind("mystery") == "other"


def test_interventions_bars_equal_table_values(tmp_path, drawn):
    asr = synthetic_asr(n_seeds=5)
    png = tmp_path / "interventions.png"
    caption = plot_interventions(asr, png, "keyword")
    _check_written(png, caption)
    assert "n = 20" in caption and "keyword judge" in caption and "Wilson" in caption
    assert "α = 1 (default" in caption and "mean over 5" in caption
    colours = _colours(png)
    assert _rgb(CONDITION_PALETTE["direct"]) in colours and _rgb(CONDITION_PALETTE["tool"]) in colours
    ax = drawn[0].axes[0]
    model = ax.get_title().split(" (")[0]
    sub = asr[asr["model"] == model].set_index(["condition", "intervention"])["asr"]
    bars = _bars(ax)
    random = asr[(asr["model"] == model) & asr["intervention"].str.startswith("random_a1_")]["asr"]
    expected = {
        "direct": sub[("direct", "none")],
        "add": sub[("direct", "add_a1")],
        "random": random.mean(),
        "tool": sub[("tool", "none")],
        "subtract": sub[("tool", "subtract")],
        "ablate": sub[("tool", "ablate")],
    }
    assert set(bars) == set(expected)
    for slot, value in expected.items():
        assert bars[slot][0] == pytest.approx(value), slot
    hatches = {slot: h for slot, (_v, h) in bars.items()}
    assert hatches["direct"] == hatches["tool"] == ""
    assert len({hatches[s] for s in ("add", "random", "subtract", "ablate")}) == 4


def test_interventions_use_the_selected_alpha(tmp_path, drawn):
    asr = synthetic_asr(random_alphas=(1, 2))
    selection = pd.DataFrame({"model": list(MODELS), "dataset": "mini", "alpha": [2.0, 0.5]})
    caption = plot_interventions(asr, tmp_path / "i.png", "keyword", selection)
    assert "selected on the validation split" in caption and "none at that α for fixture-llava" in caption
    by_title = {ax.get_title().split(" (")[0]: ax for ax in drawn[0].axes if ax.get_visible()}
    for model, alpha in zip(MODELS, (2, 0.5), strict=True):
        bars = _bars(by_title[model])
        row = asr[(asr["model"] == model) & (asr["intervention"] == f"add_a{alpha:g}")]
        assert bars["add"][0] == pytest.approx(float(row["asr"].iloc[0]))
    assert "random" not in _bars(by_title["fixture-llava"])  # no random run at alpha 0.5
    with pytest.raises(ContractError, match="selection table: no row for model 'fixture-llava'"):
        plot_interventions(asr, tmp_path / "j.png", "keyword", selection.iloc[:1])


def test_interventions_bad_input(tmp_path):
    asr = synthetic_asr()
    only_none = asr[asr["intervention"] == "none"]
    with pytest.raises(ContractError, match="no add_a.*subtract or ablate"):
        plot_interventions(only_none, tmp_path / "i.png", "keyword")
    with pytest.raises(ContractError, match="judge 'llamaguard'"):
        plot_interventions(asr, tmp_path / "i.png", "llamaguard")
    with pytest.raises(ContractError, match="missing column.*asr_ci_high"):
        plot_interventions(asr.drop(columns="asr_ci_high"), tmp_path / "i.png", "keyword")
    doubled = pd.concat([asr, asr[asr["intervention"] == "subtract"]])
    with pytest.raises(ContractError, match="2 rows where one was expected"):
        plot_interventions(doubled, tmp_path / "i.png", "keyword")
    assert list(tmp_path.iterdir()) == []


def test_asr_by_judge_points_equal_table_values(tmp_path, drawn):
    asr = _with_judges()
    png = tmp_path / "asr_by_judge.png"
    caption = plot_asr_by_judge(asr, png)
    _check_written(png, caption)
    assert "harmbench, keyword, llamaguard" in caption and "n = 20" in caption and "Wilson" in caption
    colours = _colours(png)
    for c in CONDITIONS:
        assert _rgb(CONDITION_PALETTE[c]) in colours, c
    ax = drawn[0].axes[0]
    model = ax.get_title()
    for collection in ax.collections:
        judge = collection.get_label()
        if judge not in ("harmbench", "keyword", "llamaguard"):
            continue
        want = asr[(asr["model"] == model) & (asr["judge"] == judge) & (asr["intervention"] == "none")]
        want = want.set_index("condition").loc[list(CONDITIONS), "asr"].to_numpy()
        np.testing.assert_allclose(collection.get_offsets()[:, 0], want)
    assert len({str(c.get_label()) for c in ax.collections} & {"harmbench", "keyword", "llamaguard"}) == 3


def test_asr_by_judge_bad_input(tmp_path):
    asr = _with_judges()
    with pytest.raises(ContractError, match="no condition rows"):
        plot_asr_by_judge(asr[asr["intervention"] != "none"], tmp_path / "j.png")
    with pytest.raises(ContractError, match="duplicate row.*judge 'harmbench'"):
        plot_asr_by_judge(pd.concat([asr, asr.iloc[:1]]), tmp_path / "j.png")
    with pytest.raises(ContractError, match="no rows"):
        plot_asr_by_judge(asr.iloc[:0], tmp_path / "j.png")
    assert list(tmp_path.iterdir()) == []


def synthetic_cost(asr: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for k, r in enumerate(asr[asr["intervention"] != "none"].itertuples(index=False)):
        kl = 0.001 * (k + 1)
        rows.append(
            {
                "model": r.model,
                "dataset": r.dataset,
                "intervention": r.intervention,
                "condition": r.condition,
                "layer": 2,
                "split": "test",
                "n": 15,
                "kl_mean": kl,
                "kl_ci_low": kl * 0.9,
                "kl_ci_high": kl * 1.1,
                "kl_last_mean": kl,
                "kl_generated_mean": kl,
            }
        )
    return pd.DataFrame(rows)


def test_intervention_cost_points_are_kl_against_asr_change(tmp_path, drawn):
    asr = synthetic_asr(n_seeds=5)
    cost = synthetic_cost(asr)
    png = tmp_path / "cost.png"
    caption = plot_intervention_cost(cost, asr, png, "keyword")
    _check_written(png, caption)
    assert "n = 15" in caption and "n = 20" in caption and "keyword judge" in caption
    assert "bootstrap" in caption and "Wilson" in caption and "random-vector controls" in caption
    ax = drawn[0].axes[0]
    model = ax.get_title()
    a = asr[asr["model"] == model].set_index(["condition", "intervention"])["asr"]
    c = cost[cost["model"] == model].set_index("intervention")
    got = {str(col.get_label()): col.get_offsets() for col in ax.collections if col.get_label() != ""}
    assert {"add", "random", "subtract", "ablate"} <= set(got)
    pts = got["subtract"][0]
    assert pts[0] == pytest.approx(c.loc["subtract", "kl_mean"])
    assert pts[1] == pytest.approx(a[("tool", "subtract")] - a[("tool", "none")])
    adds = sorted(i for i in c.index if i.startswith("add_"))
    want = sorted((c.loc[i, "kl_mean"], a[("direct", i)] - a[("direct", "none")]) for i in adds)
    np.testing.assert_allclose(sorted(map(tuple, got["add"])), want)
    assert len(got["random"]) == 5


def test_intervention_figures_take_refusal_ablation_rows(tmp_path, drawn):
    """`ablate_refusal_{condition}` rows (the positive control, one per condition) do not break the
    intervention figures: the bar and dose-response figures leave them out, the cost figure marks them."""
    asr = synthetic_asr()
    extra = asr[asr["intervention"] == "none"].copy()
    extra = extra[extra["condition"].isin(["direct", "tool", "text_prior"])]
    extra["intervention"] = "ablate_refusal_" + extra["condition"]
    extra["asr"] = 0.9
    with_refusal = pd.concat([asr, extra], ignore_index=True)
    for name, draw in (
        ("interventions", lambda p, a: plot_interventions(a, p, "keyword")),
        ("dose", lambda p, a: plot_dose_response(a, p, "keyword")),
    ):
        plain = draw(tmp_path / f"{name}0.png", asr)
        assert draw(tmp_path / f"{name}.png", with_refusal) == plain
    png = tmp_path / "cost.png"
    _check_written(png, plot_intervention_cost(synthetic_cost(with_refusal), with_refusal, png, "keyword"))
    got = {str(col.get_label()): col.get_offsets() for col in drawn[-1].axes[0].collections}
    assert len(got["ablate_refusal"]) == 3 and "other" not in got


def test_intervention_cost_bad_input(tmp_path):
    asr = synthetic_asr()
    cost = synthetic_cost(asr)
    with pytest.raises(ContractError, match="intervention cost table: missing column.*kl_mean"):
        plot_intervention_cost(cost.drop(columns="kl_mean"), asr, tmp_path / "c.png", "keyword")
    with pytest.raises(ContractError, match="matching intervention and base"):
        plot_intervention_cost(cost, asr[asr["intervention"] == "none"], tmp_path / "c.png", "keyword")
    assert list(tmp_path.iterdir()) == []
    # no cost rows (a dataset without harmless prompts): a panel that says why, not an error
    empty = plot_intervention_cost(cost.iloc[:0], asr, tmp_path / "e.png", "keyword")
    assert empty.startswith("Not drawn: no KL cost rows") and (tmp_path / "e.png").is_file()
    caption = plot_intervention_cost(
        cost, asr[asr["intervention"] != "subtract"], tmp_path / "c.png", "keyword"
    )
    assert "2 cost rows without a matching ASR row are left out" in caption


def synthetic_free(models=MODELS, judges=("keyword", "llamaguard"), never=()) -> pd.DataFrame:
    rows = []
    for k, m in enumerate(models):
        for j, judge in enumerate(judges):
            for used in (False, True):
                if used and m in never:
                    continue
                n = 10 + k + 3 * used
                p = (j + 2 * used + 1) / 6
                rows.append(
                    {
                        "model": m,
                        "dataset": "mini",
                        "judge": judge,
                        "used_tool": used,
                        "n": n,
                        "n_unsafe": round(p * n),
                        "asr": p,
                        "asr_ci_low": max(0.0, p - 0.2),
                        "asr_ci_high": min(1.0, p + 0.2),
                        "mean_tool_calls": float(used),
                        "n_malformed_calls": 0,
                        "n_stopped_at_max_turns": 0,
                        "split": "test",
                    }
                )
    return pd.DataFrame(rows)


def test_free_tool_use_bars_and_counts(tmp_path, drawn):
    free = synthetic_free()
    png = tmp_path / "free.png"
    caption = plot_free_tool_use(free, png)
    _check_written(png, caption)
    assert "n = 10–14" in caption and "keyword, llamaguard" in caption and "Wilson" in caption
    assert "never called" not in caption
    assert _rgb(CONDITION_PALETTE["free"]) in _colours(png)
    ax = drawn[0].axes[0]
    model = ax.get_title()
    bars = _bars(ax, horizontal=False)
    sub = free[free["model"] == model]
    assert len(bars) == len(sub) == 4
    for r in sub.itertuples(index=False):
        assert bars[f"{r.judge}|{r.used_tool}"][0] == pytest.approx(r.asr)
    texts = {t.get_text() for t in ax.texts}
    assert {f"n={n}" for n in sub["n"]} <= texts


def test_free_tool_use_draws_what_exists(tmp_path, drawn):
    free = synthetic_free(never=("fixture-llava",))
    free = free.assign(used_tool=free["used_tool"].map(str))  # as a CSV round trip may leave it
    png = tmp_path / "free.png"
    caption = plot_free_tool_use(free, png)
    _check_written(png, caption)
    assert "fixture-llava never called the tool" in caption
    llava = next(ax for ax in drawn[0].axes if ax.get_title() == "fixture-llava")
    assert set(_bars(llava, horizontal=False)) == {"keyword|False", "llamaguard|False"}
    assert sum(t.get_text() == "none" for t in llava.texts) == 2
    empty = plot_free_tool_use(free.iloc[:0], tmp_path / "empty.png")
    assert "No free-condition runs" in empty and "n = 0" in empty
    assert (tmp_path / "empty.svg").is_file()


def test_free_tool_use_bad_input(tmp_path):
    free = synthetic_free()
    with pytest.raises(ContractError, match="free tool use table: missing column.*used_tool"):
        plot_free_tool_use(free.drop(columns="used_tool"), tmp_path / "f.png")
    with pytest.raises(ContractError, match="used_tool value 'maybe'"):
        plot_free_tool_use(free.assign(used_tool="maybe"), tmp_path / "f.png")
    with pytest.raises(ContractError, match="duplicate row"):
        plot_free_tool_use(pd.concat([free, free.iloc[:1]]), tmp_path / "f.png")
    with pytest.raises(ContractError, match="expected a pandas DataFrame"):
        plot_free_tool_use([], tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


def test_new_figures_stay_within_the_page_for_seven_models(tmp_path):
    models = tuple(f"model-{k}-with-a-longer-name" for k in range(7))
    asr = _with_judges(models=models, n_seeds=5)
    for name, draw in (
        ("interventions", lambda p: plot_interventions(asr, p, "keyword")),
        ("judges", lambda p: plot_asr_by_judge(asr, p)),
        ("cost", lambda p: plot_intervention_cost(synthetic_cost(asr), asr, p, "keyword")),
        ("free", lambda p: plot_free_tool_use(synthetic_free(models=models), p)),
    ):
        png = tmp_path / f"{name}.png"
        _check_written(png, draw(png))


# ------------------------------------------------------------------ the figure registry


def test_registry_lists_every_figure_once():
    """Each figure once, each drawing function a plot function of a figure module, every plot function
    (but `plot_not_drawn`) registered, every rule drawing some figure."""
    names = [f.name for f in registry.FIGURES]
    assert len(set(names)) == len(names) == len(registry.FIGURE_PAGES)
    registered = [registry.drawing_function(name) for name in names]
    defined = {
        fn
        for module in FIGURE_MODULES
        for key, fn in vars(module).items()
        if key.startswith("plot_") and getattr(fn, "__module__", None) == module.__name__
    }
    assert set(registered) == defined and len(registered) == len(defined)
    assert {f.rule for f in registry.FIGURES} == set(registry.RULES)
    assert registry.figures_of("headline_figure") == ["headline"]
    with pytest.raises(KeyError, match="no figure"):
        registry.drawing_function("nope")


def test_registry_imports_no_plotting_library():
    """The Snakefile imports the registry for every DAG build: it must stay cheap."""
    import subprocess
    import sys

    code = (
        "import sys, toolshift.report.figures.registry\n"
        "heavy = [m for m in ('matplotlib', 'seaborn', 'pandas', 'xarray') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
