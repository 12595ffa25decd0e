"""Figures from synthetic `tables/asr.csv` rows and vector files: files, sizes, palette, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import seaborn as sns
import xarray as xr
from PIL import Image

from toolshift import CONDITIONS
from toolshift.contracts import ASR_COLUMNS
from toolshift.errors import ContractError
from toolshift.headline import headline_table
from toolshift.plots import (
    CONDITION_PALETTE,
    parse_dose_id,
    plot_asr_by_condition,
    plot_category_heatmap,
    plot_cosine_by_layer,
    plot_dose_response,
    plot_headline,
    plot_pca,
    plot_probes,
    plot_projections,
)
from toolshift.splits import make_splits
from toolshift.vectors import compute_vectors

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


def test_palette_is_fixed_and_colour_blind_safe():
    assert set(CONDITIONS) <= set(CONDITION_PALETTE)
    assert len(set(CONDITION_PALETTE.values())) == len(CONDITION_PALETTE)
    assert set(CONDITION_PALETTE.values()) <= set(sns.color_palette("colorblind").as_hex())


def test_asr_by_condition_writes_png_svg_and_caption(tmp_path):
    png = tmp_path / "figures" / "asr_by_condition.png"
    caption = plot_asr_by_condition(synthetic_asr(), png, "keyword")
    _check_written(png, caption)
    assert "n = 20" in caption and "keyword" in caption and "Wilson" in caption
    colours = _colours(png)
    for c in CONDITIONS:
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


def test_parse_dose_id():
    assert parse_dose_id("add_a0") == ("add", 0.0, None)
    assert parse_dose_id("add_a0.5") == ("add", 0.5, None)
    assert parse_dose_id("add_a-1") == ("add", -1.0, None)
    assert parse_dose_id("add_a1e+06") == ("add", 1e6, None)
    assert parse_dose_id("random_a1_s3") == ("random", 1.0, 3)
    assert parse_dose_id("random_a0.25_s0") == ("random", 0.25, 0)
    for other in ("none", "subtract", "ablate", "add_a", "random_a1"):
        assert parse_dose_id(other) is None


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
        for c, p in (("direct", 0.7), ("tool", 0.4 + 0.1 * k)):
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
    assert _rgb(CONDITION_PALETTE["tool"]) in _colours(png)
    with pytest.raises(ContractError, match="no rows"):
        plot_headline(table.iloc[:0], tmp_path / "h.png")
