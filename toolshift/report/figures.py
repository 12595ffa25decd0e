"""The report's figures, drawn from result files (`tables/asr.csv`, `vectors/{model}/{dataset}.nc`).

Every figure is written as PNG (150 dpi) with an SVG of the same name beside it, both atomically, and
each plotting function returns a one-sentence caption (n, judge, intervals) for the book. Each
condition has one fixed colour-blind-safe colour (`CONDITION_PALETTE`, from seaborn's "colorblind"
palette) that every figure uses.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from toolshift import CONDITIONS
from toolshift.analysis.headline import HEADLINE_COLUMNS, MEAN_MODEL
from toolshift.analysis.interventions import MIN_RANDOM_SEEDS
from toolshift.analysis.vectors import evaluation_prompts, refusal_position
from toolshift.contracts import atomic_path, require_columns
from toolshift.errors import ContractError

matplotlib.use("Agg")

DPI = 150
"""Resolution of the PNG figures."""

PAGE_WIDTH_IN = 9.0
"""Figure width in inches: 1350 px at `DPI`, shown at the book's page width."""

CONDITION_PALETTE: dict[str, str] = {
    "direct": "#0173b2",
    "tool_offered": "#ece133",
    "tool": "#de8f05",
    "tool_unsafe": "#d55e00",
    "tool_benign": "#029e73",
    "tool_blank": "#cc78bc",
    "text_trail": "#ca9161",
    "text_prior": "#56b4e9",
    "image_no_tool": "#949494",
    "free": "#fbafe4",
}
"""One fixed colour per condition (seaborn "colorblind" colours), the same in every figure."""

CONDITION_ORDER: tuple[str, ...] = tuple(CONDITIONS) + tuple(
    c for c in CONDITION_PALETTE if c not in CONDITIONS
)
"""The order conditions are shown in: `toolshift.CONDITIONS`, then the free-tool condition."""

INTERVENTION_COLOR = "#222222"
"""Colour of the `add` dose-response curve (not a condition colour)."""

RANDOM_COLOR = "#666666"
"""Colour of the random-vector controls (not a condition colour)."""

_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_MODEL_LINESTYLES = ("-", "--", "-.", ":")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ADD_RE = re.compile(rf"^add_a(?P<alpha>{_NUMBER})$")
_RANDOM_RE = re.compile(rf"^random_a(?P<alpha>{_NUMBER})_s(?P<seed>\d+)$")
_ASR_NEEDED = (
    "model",
    "dataset",
    "condition",
    "intervention",
    "judge",
    "n",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
)


# --------------------------------------------------------------------------- helpers


def parse_dose_id(intervention: str) -> tuple[str, float, int | None] | None:
    """Parse `add_a{alpha:g}` -> ("add", alpha, None), `random_a{alpha:g}_s{seed}` -> ("random", alpha, seed).

    Any other id (`none`, `subtract`, `ablate`, ...) gives None.
    """
    m = _ADD_RE.match(str(intervention))
    if m:
        return "add", float(m["alpha"]), None
    m = _RANDOM_RE.match(str(intervention))
    if m:
        return "random", float(m["alpha"]), int(m["seed"])
    return None


def condition_color(condition: str) -> str:
    """The fixed colour of a condition; an unknown condition is a contract error."""
    try:
        return CONDITION_PALETTE[condition]
    except KeyError:
        raise ContractError(
            f"condition {condition!r} has no colour; expected one of {', '.join(CONDITION_PALETTE)}"
        ) from None


def _check_asr(asr: pd.DataFrame) -> None:
    if not isinstance(asr, pd.DataFrame):
        raise ContractError(f"asr table: expected a pandas DataFrame, got {type(asr).__name__}")
    require_columns(asr, _ASR_NEEDED, "asr table")
    if asr.empty:
        raise ContractError("asr table: no rows (expected rows of tables/asr.csv)")


def pick_judge(asr: pd.DataFrame, judge: str | None) -> str:
    """`judge` if the ASR table has rows for it (else a one-line error); by default `keyword` if present."""
    judges = [str(j) for j in pd.unique(asr["judge"])]
    if judge is not None:
        if judge not in judges:
            raise ContractError(
                f"asr table: no rows for judge {judge!r}; judges present: {', '.join(judges)}"
            )
        return judge
    return "keyword" if "keyword" in judges else sorted(judges)[0]


def _n_text(values: Iterable[float]) -> str:
    ns = sorted({int(v) for v in values if pd.notna(v)})
    if not ns:
        return "unknown"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _datasets_text(datasets: Iterable[str]) -> str:
    ds = [str(d) for d in dict.fromkeys(datasets)]
    return ("dataset " if len(ds) == 1 else "datasets ") + ", ".join(ds)


def _panel_title(model: str, dataset: str, several_datasets: bool) -> str:
    title = textwrap.fill(str(model), 30)
    return f"{title}\n({dataset})" if several_datasets else title


def _grid(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(max_cols, n_panels))
    return math.ceil(n_panels / ncols), ncols


def _model_style(i: int) -> dict[str, object]:
    return {
        "color": INTERVENTION_COLOR,
        "marker": _MODEL_MARKERS[i % len(_MODEL_MARKERS)],
        "linestyle": _MODEL_LINESTYLES[i % len(_MODEL_LINESTYLES)],
    }


def _new_figure(height_in: float) -> Figure:
    return Figure(figsize=(PAGE_WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def _save(fig: Figure, out_png: str | Path) -> None:
    """Write the PNG and the SVG beside it, both or neither."""
    png = Path(out_png)
    if png.suffix.lower() != ".png":
        raise ContractError(f"{png}: a figure path must end in .png (the SVG is written beside it)")
    svg = png.with_suffix(".svg")
    with (
        matplotlib.rc_context({"svg.hashsalt": "toolshift", "svg.fonttype": "path"}),
        atomic_path(png) as tmp_png,
        atomic_path(svg) as tmp_svg,
    ):
        fig.savefig(tmp_png, format="png", dpi=DPI, metadata={"Software": None})
        fig.set_layout_engine("none")  # the SVG keeps the PNG's layout: computed once, both files agree
        fig.savefig(tmp_svg, format="svg", metadata={"Date": None})


def _style():
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=1.0)


def plot_not_drawn(out_png: str | Path, reason: str) -> str:
    """A figure the run's config gives no data for (e.g. the dose-response curve of a run without `add`
    interventions): a panel that says so, and the caption `Not drawn: {reason}`."""
    caption = f"Not drawn: {reason}"
    fig = _new_figure(1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(caption, 90), ha="center", va="center", fontsize=10, wrap=True)
    _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- ASR by condition


def plot_asr_by_condition(asr: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """Bars of ASR per condition (condition rows of `tables/asr.csv`), one panel per model.

    Error bars are the table's 95 % Wilson intervals. Returns the figure's one-sentence caption.
    """
    _check_asr(asr)
    rows = asr[(asr["intervention"] == "none") & (asr["judge"] == judge)]
    if rows.empty:
        judges = ", ".join(str(j) for j in pd.unique(asr["judge"]))
        raise ContractError(
            f"asr table: no condition rows (intervention 'none') for judge {judge!r}; "
            f"judges present: {judges}"
        )
    for c in pd.unique(rows["condition"]):
        condition_color(str(c))
    dup = rows.duplicated(["model", "dataset", "condition"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ContractError(
            f"asr table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"condition {r['condition']!r}, judge {judge!r}"
        )
    conditions = [c for c in CONDITION_ORDER if c in set(rows["condition"])]
    panels = list(dict.fromkeys(zip(rows["model"], rows["dataset"], strict=True)))
    several_datasets = rows["dataset"].nunique() > 1
    nrows, ncols = _grid(len(panels))
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(0.6 + nrows * (0.32 * len(conditions) + 1.1))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        ypos = np.arange(len(conditions))
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)].set_index("condition")
            sub = sub.reindex(conditions)
            have = sub["asr"].notna().to_numpy()
            vals = sub["asr"].to_numpy(dtype=float)
            low = np.clip(vals - sub["asr_ci_low"].to_numpy(dtype=float), 0, None)
            high = np.clip(sub["asr_ci_high"].to_numpy(dtype=float) - vals, 0, None)
            ax.barh(
                ypos[have],
                vals[have],
                xerr=np.vstack([low[have], high[have]]),
                color=[CONDITION_PALETTE[c] for c, h in zip(conditions, have, strict=True) if h],
                edgecolor="white",
                error_kw={"ecolor": "black", "elinewidth": 1.2, "capsize": 3},
            )
            ax.set_title(_panel_title(model, dataset, several_datasets), fontsize="medium")
            ax.set_xlim(0, 1.03)  # room for the caps of intervals that end at 100 %
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, conditions)
            ax.grid(axis="y", visible=False)
        axes[0].invert_yaxis()  # shared: the first condition on top in every panel
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)  # keeps '100%' and '0%' apart
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="medium")
        caption = (
            f"Attack success rate (ASR) on the harmful prompts of {_datasets_text(rows['dataset'])} "
            f"for each condition and model (n = {_n_text(rows['n'])} prompts per bar), judged by the "
            f"{judge} judge; error bars are 95 % Wilson confidence intervals."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- cosines per layer


def _layers(da: xr.DataArray) -> np.ndarray:
    if "layer" in da.coords:
        return np.asarray(da["layer"].values)
    return np.arange(da.sizes["layer"])


def _require_var(ds: xr.Dataset, model: str, name: str, dims: tuple[str, ...]) -> xr.DataArray:
    if name not in ds.variables:
        raise ContractError(f"vectors for model {model!r}: missing variable {name!r}")
    da = ds[name]
    if set(da.dims) != set(dims):
        raise ContractError(f"vectors for model {model!r}: {name} has dims {da.dims}, expected {dims}")
    if da.sizes.get("layer", 0) == 0:
        raise ContractError(f"vectors for model {model!r}: {name} has no layers")
    return da


def _n_prompts_text(vectors: Mapping[str, xr.Dataset]) -> str:
    ns = []
    for ds in vectors.values():
        for key in ("n_harmful", "n_prompts"):
            if key in ds.attrs:
                ns.append(int(ds.attrs[key]))
                break
    if len(ns) == len(vectors):
        split = any(str(ds.attrs.get("splits", "all")) != "all" for ds in vectors.values())
        return f"n = {_n_text(ns)} harmful {'train ' if split else ''}prompts per model"
    return "n as recorded in each model's vector file"


def plot_cosine_by_layer(vectors: Mapping[str, xr.Dataset], out_png: str | Path) -> str:
    """Cosine of the tool vector with the refusal direction per layer, one line per model.

    When the vector files hold `cos_shift_tool`, one more panel per model shows the cosine of each
    condition's shift (from `direct`) with the tool vector. Returns the one-sentence caption.
    """
    if not vectors:
        raise ContractError("vectors: no vector datasets given (expected vectors/{model}/{dataset}.nc)")
    models = list(vectors)
    cos_tr = {m: _require_var(vectors[m], m, "cos_tool_refusal", ("layer",)) for m in models}
    shift = {
        m: _require_var(vectors[m], m, "cos_shift_tool", ("condition", "layer"))
        for m in models
        if "cos_shift_tool" in vectors[m].variables
    }
    for da in shift.values():
        for c in da["condition"].values:
            condition_color(str(c))
    datasets = [str(vectors[m].attrs.get("dataset", "?")) for m in models]
    n_rows_shift, ncols = _grid(len(shift)) if shift else (0, 1)
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(0.9 + 2.9 * (1 + n_rows_shift))
        grid = fig.add_gridspec(1 + n_rows_shift, ncols)
        ax0 = fig.add_subplot(grid[0, :])
        for i, m in enumerate(models):
            da = cos_tr[m]
            x = _layers(da)
            ax0.plot(
                x, da.values, label=textwrap.shorten(m, 40), markevery=max(1, len(x) // 16), **_model_style(i)
            )
        ax0.set_title("cos(tool vector, refusal direction) per layer", fontsize="medium")
        ax0.set_ylabel("cosine")
        ax0.legend(
            fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=min(3, len(models))
        )
        axes = [ax0]
        used: list[str] = []
        for k, (m, da) in enumerate(shift.items()):
            ax = fig.add_subplot(grid[1 + k // ncols, k % ncols], sharey=ax0)
            axes.append(ax)
            conds = [str(c) for c in da["condition"].values]
            x = _layers(da)
            for c in [c for c in CONDITION_ORDER if c in conds]:
                y = da.sel(condition=c).values.astype(float)
                if np.all(np.isnan(y)):
                    continue  # e.g. the shift of `direct` from itself
                ax.plot(x, y, color=CONDITION_PALETTE[c], linewidth=2)
                used.append(c)
            ax.set_title(textwrap.fill(m, 30), fontsize="small")
            if k % ncols == 0:
                ax.set_ylabel("cos(shift, tool vector)")
            else:
                ax.tick_params(labelleft=False)
        for ax in axes:
            ax.set_xlabel("decoder layer")
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="black", linewidth=0.8)
        if used:
            shown = [c for c in CONDITION_ORDER if c in used]
            handles = [Line2D([], [], color=CONDITION_PALETTE[c], linewidth=2) for c in shown]
            fig.legend(
                handles,
                shown,
                loc="outside lower center",
                ncols=min(4, len(shown)),
                fontsize="small",
                title="condition (shift from direct)",
                title_fontsize="small",
            )
        caption = (
            "Cosine between the tool vector (mean tool minus direct residual stream) and the refusal "
            "direction at each decoder layer, one line per model"
            + (
                ", and per model the cosine between each condition's shift from direct and the tool vector"
                if shift
                else ""
            )
            + f" ({_datasets_text(datasets)}; {_n_prompts_text(vectors)}); point estimates, no judge is "
            "involved and no confidence intervals are shown."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- dose response


def plot_dose_response(asr: pd.DataFrame, out_png: str | Path, judge: str | None = None) -> str:
    """ASR against alpha for the `add_a{alpha}` interventions, with random-vector controls and baselines.

    One panel per model: the `add` curve with its 95 % Wilson band, the `random_a{alpha}_s{seed}`
    controls as points with Wilson error bars, and the `direct` (and `tool`) ASR as horizontal lines.
    `judge` defaults to `keyword` if present, else the first judge in sorted order. Returns the caption.
    """
    _check_asr(asr)
    judge = pick_judge(asr, judge)
    rows = asr[asr["judge"] == judge].copy()
    parsed = rows["intervention"].map(parse_dose_id)
    rows["kind"] = parsed.map(lambda p: p[0] if p else None)
    rows["alpha"] = parsed.map(lambda p: p[1] if p else np.nan)
    rows["seed"] = parsed.map(lambda p: p[2] if p else None)
    add = rows[rows["kind"] == "add"]
    if add.empty:
        raise ContractError(f"asr table: no 'add_a{{alpha}}' intervention rows for judge {judge!r}")
    rand = rows[rows["kind"] == "random"]
    base = rows[rows["intervention"] == "none"]
    panels = list(dict.fromkeys(zip(add["model"], add["dataset"], strict=True)))
    several_datasets = add["dataset"].nunique() > 1
    nrows, ncols = _grid(len(panels))
    seeds = sorted({int(s) for s in rand["seed"]})
    spread = float(np.ptp(add["alpha"])) or 1.0
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(0.9 + 3.2 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):

            def pick(df: pd.DataFrame, model: str = model, dataset: str = dataset) -> pd.DataFrame:
                return df[(df["model"] == model) & (df["dataset"] == dataset)]

            for cond, ls in (("direct", "--"), ("tool", ":")):
                b = pick(base)[pick(base)["condition"] == cond]
                if len(b):
                    ax.axhline(
                        float(b["asr"].iloc[0]),
                        color=CONDITION_PALETTE[cond],
                        linestyle=ls,
                        linewidth=2,
                        label=f"{cond} (no intervention)",
                    )
            a = pick(add).sort_values("alpha")
            ax.fill_between(
                a["alpha"],
                a["asr_ci_low"],
                a["asr_ci_high"],
                color=INTERVENTION_COLOR,
                alpha=0.15,
                linewidth=0,
            )
            ax.plot(
                a["alpha"],
                a["asr"],
                color=INTERVENTION_COLOR,
                marker="o",
                linewidth=2,
                label="direct + α·tool vector",
            )
            r = pick(rand)
            if len(r):
                by_alpha = r.groupby("alpha")["asr"].agg(["min", "max", "mean", "size"]).sort_index()
                banded = by_alpha[by_alpha["size"] >= 2]
                if len(banded) >= 2:
                    ax.fill_between(
                        banded.index,
                        banded["min"],
                        banded["max"],
                        facecolor="none",
                        edgecolor=RANDOM_COLOR,
                        hatch="///",
                        linewidth=0.8,
                        label="direct + α·random vector: range over seeds",
                    )
                    ax.plot(
                        banded.index,
                        banded["mean"],
                        color=RANDOM_COLOR,
                        linestyle="--",
                        linewidth=1.5,
                        label="direct + α·random vector: mean over seeds",
                    )
                offsets = r["seed"].map(
                    lambda s: (seeds.index(int(s)) - (len(seeds) - 1) / 2) * 0.015 * spread
                )
                ax.plot(
                    r["alpha"] + offsets,
                    r["asr"],
                    "x",
                    color=RANDOM_COLOR,
                    markersize=6,
                    label="direct + α·random vector (norm-matched), one seed",
                )
            ax.set_title(_panel_title(model, dataset, several_datasets), fontsize="medium")
            ax.set_ylim(-0.03, 1.03)  # points at 0 % and 100 % stay whole
            ax.set_yticks(np.linspace(0, 1, 6))
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_xlabel("α (multiple of the tool vector)")
        axes[0].set_ylabel("ASR")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, labels = {}, []
        for ax in axes[: len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
        fig.legend(
            [handles[lab] for lab in labels], labels, loc="outside lower center", ncols=2, fontsize="small"
        )
        used = pd.concat([add, rand]) if len(rand) else add
        few = (
            f" (fewer than {MIN_RANDOM_SEEDS} seeds: a thin control)"
            if 0 < len(seeds) < MIN_RANDOM_SEEDS
            else ""
        )
        seeds_text = (
            f"crosses are norm-matched random vectors (seeds {', '.join(str(s) for s in seeds)}{few}), the "
            "hatched band their range over seeds and the dashed grey line their mean at each α"
            if seeds
            else "no random-vector controls were run"
        )
        caption = (
            f"ASR on the harmful prompts of {_datasets_text(add['dataset'])} when α times the tool vector "
            f"is added to direct runs (n = {_n_text(used['n'])} prompts per point), judged by the {judge} "
            "judge; "
            f"the shaded band is the 95 % Wilson confidence interval of the tool-vector curve, {seeds_text}, "
            "and the horizontal lines are the direct and tool ASR without intervention."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- representation figures


def _eval_prompts(ds: xr.Dataset) -> tuple[np.ndarray, str]:
    """The prompts a representation figure shows: the test split when the file has one, else all."""
    return evaluation_prompts(ds)


def _selected_layer(ds: xr.Dataset, name: str) -> int:
    layers = [int(x) for x in _layers(ds["layer"] if "layer" in ds else ds)]
    layer = ds.attrs.get("selected_layer")
    if layer is None:
        return layers[len(layers) // 2]
    if int(layer) not in layers:
        raise ContractError(f"vectors {name!r}: selected_layer {layer} is not one of its layers")
    return int(layer)


def _check_conditions(conditions: Iterable[str]) -> list[str]:
    conds = [str(c) for c in conditions]
    for c in conds:
        condition_color(c)
    return [c for c in CONDITION_ORDER if c in conds]


def _condition_legend(fig: Figure, conditions: list[str], title: str, marker: str | None = None) -> None:
    if marker:
        handles = [
            Line2D([], [], color=CONDITION_PALETTE[c], marker=marker, linestyle="none", markersize=7)
            for c in conditions
        ]
    else:
        handles = [Line2D([], [], color=CONDITION_PALETTE[c], linewidth=2) for c in conditions]
    fig.legend(
        handles,
        conditions,
        loc="outside lower center",
        ncols=min(4, len(conditions)),
        fontsize="small",
        title=title,
        title_fontsize="small",
    )


def plot_pca(vectors: Mapping[str, xr.Dataset], out_png: str | Path) -> str:
    """PC1 vs PC2 of the last-token states at each file's selected layer, coloured by condition.

    One panel per vectors file; circles are harmful prompts, triangles harmless ones; the test prompts
    are shown when the file has a split. Returns the caption.
    """
    if not vectors:
        raise ContractError("vectors: no vector datasets given (expected vectors/{model}/{dataset}.nc)")
    for name, ds in vectors.items():
        _require_var(ds, name, "pca", ("condition", "prompt_id", "layer", "component"))
    nrows, ncols = _grid(len(vectors))
    shown: list[str] = []
    split_labels = set()
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.4 + 3.0 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (name, ds) in zip(axes, vectors.items(), strict=False):
            layer = _selected_layer(ds, name)
            mask, label = _eval_prompts(ds)
            split_labels.add(label)
            harmful = np.asarray(ds["harmful"].values, dtype=bool)[mask]
            conds = _check_conditions(ds["condition"].values)
            ratio = (
                ds["pca_explained_variance_ratio"].sel(layer=layer).values
                if ("pca_explained_variance_ratio" in ds)
                else np.full(2, np.nan)
            )
            for c in conds:
                xy = ds["pca"].sel(condition=c, layer=layer).values[mask]
                for is_harmful, marker in ((True, "o"), (False, "^")):
                    pts = xy[harmful == is_harmful]
                    ax.scatter(
                        pts[:, 0],
                        pts[:, 1],
                        s=14,
                        marker=marker,
                        color=CONDITION_PALETTE[c],
                        alpha=0.75,
                        linewidths=0,
                    )
                shown.append(c)
            ax.set_title(f"{textwrap.fill(name, 32)}\nlayer {layer}", fontsize="small")
            ax.set_xlabel(
                f"PC1 ({100 * ratio[0]:.0f} %)" if np.isfinite(ratio[0]) else "PC1", fontsize="small"
            )
            ax.set_ylabel(
                f"PC2 ({100 * ratio[1]:.0f} %)" if np.isfinite(ratio[1]) else "PC2", fontsize="small"
            )
        for ax in axes[len(vectors) :]:
            ax.set_visible(False)
        _condition_legend(
            fig, [c for c in CONDITION_ORDER if c in shown], "condition (● harmful, ▲ harmless)", "o"
        )
        which = "test" if split_labels == {"test"} else "all"
        caption = (
            "First two principal components of the last-token residual stream at each model's selected "
            f"layer (PCA fitted on the train prompts of all conditions pooled; {which} prompts shown), one "
            "point per prompt and condition, circles harmful and triangles harmless; percentages are the "
            "variance explained, and no judge or interval is involved."
        )
        _save(fig, out_png)
    return caption


def plot_probes(vectors: Mapping[str, xr.Dataset], out_png: str | Path) -> str:
    """Accuracy per layer of harmful-vs-harmless probes fitted on ``direct`` and scored on each condition.

    Solid lines: accuracy on the test prompts (probe fitted on all train prompts), or the train-split
    cross-validated accuracy when the file has no test prompts; the dashed black line is the CV accuracy
    on ``direct`` itself; the dotted line is chance (0.5). Returns the caption.
    """
    if not vectors:
        raise ContractError("vectors: no vector datasets given (expected vectors/{model}/{dataset}.nc)")
    cv = {n: _require_var(ds, n, "probe_accuracy", ("condition", "layer")) for n, ds in vectors.items()}
    nrows, ncols = _grid(len(vectors))
    kinds = set()
    shown: list[str] = []
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.4 + 2.9 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (name, ds) in zip(axes, vectors.items(), strict=False):
            test = ds["probe_test_accuracy"] if "probe_test_accuracy" in ds else None
            use_test = test is not None and bool(np.isfinite(test.values).any())
            kinds.add("test" if use_test else "cv")
            acc = test if use_test else cv[name]
            x = _layers(acc)
            for c in _check_conditions(acc["condition"].values):
                y = acc.sel(condition=c).values.astype(float)
                if np.all(np.isnan(y)):
                    continue
                ax.plot(x, y, color=CONDITION_PALETTE[c], linewidth=2, marker="o", markersize=3)
                shown.append(c)
            if "direct" in cv[name]["condition"].values:
                ax.plot(
                    x, cv[name].sel(condition="direct").values, color="black", linestyle="--", linewidth=1.2
                )
            ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
            if "selected_layer" in ds.attrs:
                ax.axvline(int(ds.attrs["selected_layer"]), color="#999999", linewidth=1)
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_title(textwrap.fill(name, 32), fontsize="small")
            ax.set_xlabel("decoder layer")
        axes[0].set_ylabel("probe accuracy")
        for ax in axes[len(vectors) :]:
            ax.set_visible(False)
        _condition_legend(
            fig, [c for c in CONDITION_ORDER if c in shown], "condition the direct probe is scored on"
        )
        which = (
            "test prompts"
            if kinds == {"test"}
            else "cross-validation folds of the train prompts"
            if kinds == {"cv"}
            else "test prompts (or train CV folds where a file has no test prompts)"
        )
        folds = sorted({int(ds.attrs.get("probe_folds", 0)) for ds in vectors.values()})
        caption = (
            "Accuracy of linear harmful-vs-harmless probes (L2 logistic regression) fitted on the direct "
            f"states of the train prompts and scored on each condition's {which}, per decoder layer; the "
            f"dashed black line is the {'/'.join(map(str, folds))}-fold cross-validated accuracy on direct, "
            "the dotted line chance and the grey vertical line the selected layer; point estimates, no "
            "judge and no intervals."
        )
        _save(fig, out_png)
    return caption


def plot_projections(vectors: Mapping[str, xr.Dataset], out_png: str | Path) -> str:
    """Where each condition puts harmful prompts along the refusal direction, per layer.

    The projection onto the unit refusal direction is rescaled per layer so that 0 is the mean of the
    harmless ``direct`` prompts and 1 the mean of the harmful ``direct`` prompts; lines are the means
    of the harmful prompts (test split when present) per condition with 95 % normal intervals of the
    mean. Returns the caption.
    """
    if not vectors:
        raise ContractError("vectors: no vector datasets given (expected vectors/{model}/{dataset}.nc)")
    for name, ds in vectors.items():
        _require_var(ds, name, "projection", ("condition", "prompt_id", "layer"))
    nrows, ncols = _grid(len(vectors))
    shown: list[str] = []
    ns: list[int] = []
    labels = set()
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.4 + 2.9 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (name, ds) in zip(axes, vectors.items(), strict=False):
            mask, label = _eval_prompts(ds)
            labels.add(label)
            harmful = np.asarray(ds["harmful"].values, dtype=bool)[mask]
            pos = refusal_position(ds)
            x = _layers(pos)
            if not np.isfinite(pos.values).any():
                ax.text(
                    0.5,
                    0.5,
                    "no refusal direction\n(no harmless prompts)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize="small",
                )
                ax.set_title(textwrap.fill(name, 32), fontsize="small")
                continue
            ns.append(int(harmful.sum()))
            for c in _check_conditions(pos["condition"].values):
                vals = pos.sel(condition=c).values[harmful]
                mean = vals.mean(axis=0)
                half = (
                    1.96 * vals.std(axis=0, ddof=1) / np.sqrt(vals.shape[0])
                    if vals.shape[0] > 1
                    else 0 * mean
                )
                ax.plot(x, mean, color=CONDITION_PALETTE[c], linewidth=2)
                ax.fill_between(
                    x, mean - half, mean + half, color=CONDITION_PALETTE[c], alpha=0.15, linewidth=0
                )
                shown.append(c)
            ax.axhline(0, color="black", linestyle=":", linewidth=1)
            ax.axhline(1, color="black", linestyle="--", linewidth=1)
            ax.set_title(textwrap.fill(name, 32), fontsize="small")
            ax.set_xlabel("decoder layer")
        axes[0].set_ylabel("position along refusal direction")
        for ax in axes[len(vectors) :]:
            ax.set_visible(False)
        _condition_legend(fig, [c for c in CONDITION_ORDER if c in shown], "condition (harmful prompts)")
        which = "test" if labels == {"test"} else "all"
        caption = (
            "Projection of the last-token state of harmful prompts onto the refusal direction (estimated "
            "on the train prompts), per layer and condition, rescaled so that 0 (dotted) is the mean of "
            f"harmless and 1 (dashed) the mean of harmful direct prompts ({which} prompts, "
            f"n = {_n_text(ns)} harmful per model); bands are 95 % normal confidence intervals of the mean, "
            "and no judge is involved."
        )
        _save(fig, out_png)
    return caption


def plot_category_heatmap(asr_by_category: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """ASR per prompt category (rows) and condition (columns), one heatmap per model and dataset.

    Reads ``tables/asr_by_category.csv`` rows with intervention ``none``. Returns the caption.
    """
    _check_asr(asr_by_category)
    require_columns(asr_by_category, ("category",), "asr by category table")
    rows = asr_by_category[
        (asr_by_category["intervention"] == "none")
        & (asr_by_category["judge"] == judge)
        & (asr_by_category["category"] != "all")
    ]
    if rows.empty:
        raise ContractError(f"asr by category table: no per-category condition rows for judge {judge!r}")
    conditions = _check_conditions(pd.unique(rows["condition"]))
    categories = sorted(pd.unique(rows["category"]).astype(str))
    panels = list(dict.fromkeys(zip(rows["model"], rows["dataset"], strict=True)))
    several = rows["dataset"].nunique() > 1
    nrows, ncols = _grid(len(panels), max_cols=3)
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.6 + nrows * (0.21 * len(categories) + 1.5))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        mesh = None
        for k, (ax, (model, dataset)) in enumerate(zip(axes, panels, strict=False)):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            grid = sub.pivot_table(index="category", columns="condition", values="asr", aggfunc="first")
            grid = grid.reindex(index=categories, columns=conditions)
            mesh = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="rocket_r", aspect="auto")
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{100 * v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > 0.6 else "black",
                    )
            ax.set_xticks(range(len(conditions)), conditions, rotation=45, ha="right", fontsize="x-small")
            ax.set_yticks(
                range(len(categories)),
                categories if k % ncols == 0 else [""] * len(categories),
                fontsize="x-small",
            )
            ax.grid(False)
            ax.set_title(_panel_title(model, dataset, several), fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if mesh is not None:
            bar = fig.colorbar(
                mesh,
                ax=axes.tolist(),
                location="bottom",
                shrink=0.5,
                aspect=40,
                format=PercentFormatter(1.0, 0),
            )
            bar.set_label("ASR", fontsize="small")
            bar.ax.tick_params(labelsize="x-small")
        caption = (
            "ASR per prompt category and condition on the harmful prompts of "
            f"{_datasets_text(rows['dataset'])} (n = {_n_text(rows['n'])} prompts per cell, numbers in %), "
            f"judged by the {judge} judge; point "
            "estimates (the Wilson intervals of each cell are in tables/asr_by_category.csv)."
        )
        _save(fig, out_png)
    return caption


def plot_headline(headline: pd.DataFrame, out_png: str | Path) -> str:
    """Forest plot of the headline table: each model's relative ASR reduction (tool vs direct) and the
    mean over models, with their bootstrap CIs, one block per dataset. Returns the caption."""
    if not isinstance(headline, pd.DataFrame) or headline.empty:
        raise ContractError("headline table: no rows (expected rows of tables/headline.csv)")
    require_columns(headline, HEADLINE_COLUMNS, "headline table")
    labels, est, lo, hi, bold = [], [], [], [], []
    for dataset in dict.fromkeys(headline["dataset"]):
        block = headline[headline["dataset"] == dataset]
        block = pd.concat([block[block["model"] != MEAN_MODEL], block[block["model"] == MEAN_MODEL]])
        for r in block.itertuples(index=False):
            labels.append(f"{r.model} ({dataset})")
            est.append(r.rel_reduction)
            lo.append(r.rel_reduction_ci_low)
            hi.append(r.rel_reduction_ci_high)
            bold.append(r.model == MEAN_MODEL)
    est_a, lo_a, hi_a = (np.asarray(v, dtype=float) for v in (est, lo, hi))
    y = np.arange(len(labels))
    r0 = headline.iloc[0]
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(max(2.4, 1.2 + 0.42 * len(labels)))
        ax = fig.subplots()
        for i in range(len(labels)):
            colour = "black" if bold[i] else CONDITION_PALETTE.get(str(r0["condition"]), INTERVENTION_COLOR)
            if np.isfinite(lo_a[i]) and np.isfinite(hi_a[i]):
                ax.plot([lo_a[i], hi_a[i]], [y[i], y[i]], color=colour, linewidth=3 if bold[i] else 1.8)
            if np.isfinite(est_a[i]):
                ax.plot(
                    est_a[i],
                    y[i],
                    marker="D" if bold[i] else "o",
                    color=colour,
                    markersize=8 if bold[i] else 6,
                )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [textwrap.shorten(t, 60) for t in labels], fontsize="small")
        for tick, b in zip(ax.get_yticklabels(), bold, strict=True):
            tick.set_fontweight("bold" if b else "normal")
        ax.set_ylim(len(labels) - 0.5, -0.5)  # top to bottom, markers at the ends stay whole
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(f"relative ASR reduction, {r0['condition']} vs {r0['reference']}")
        ax.grid(axis="y", visible=False)
        caption = (
            f"Relative reduction of ASR from {r0['reference']} to {r0['condition']} on the {r0['split']} "
            f"harmful prompts (n = {_n_text(headline.loc[headline['model'] != MEAN_MODEL, 'n'])} per model), "
            f"judged by the {r0['judge']} judge, per model and as the mean over models (diamonds, the "
            f"headline); lines are {100 * float(r0['conf']):g} % paired bootstrap confidence intervals "
            f"({int(r0['n_boot'])} resamples of the prompts within each model)."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- interventions


INTERVENTION_HATCHES: dict[str, str] = {
    "none": "",
    "add": "///",
    "random": "...",
    "subtract": "\\\\\\",
    "ablate": "xxx",
    "transfer": "---",
    "ablate_refusal": "ooo",
}
"""Hatching per intervention kind (the bar keeps its base condition's colour); `none` is solid."""

HATCH_COLOR = "white"
"""Colour of the hatching drawn over a condition-coloured bar."""

_JUDGE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_COST_NEEDED = ("model", "dataset", "intervention", "condition", "n", "kl_mean", "kl_ci_low", "kl_ci_high")
_FREE_NEEDED = ("model", "dataset", "judge", "used_tool", "n", "asr", "asr_ci_low", "asr_ci_high")
_SELECTION_NEEDED = ("model", "dataset", "alpha")


def intervention_kind(intervention: str) -> str:
    """`none`, or the kind of an intervention id (add, subtract, ablate, random, transfer, ablate_refusal);
    else `other`."""
    if intervention == "none":
        return "none"
    parsed = parse_dose_id(intervention)
    if parsed:
        return parsed[0]
    if intervention in ("subtract", "ablate"):
        return str(intervention)
    if str(intervention).startswith("ablate_refusal_"):
        return "ablate_refusal"
    return "transfer" if str(intervention).startswith("transfer_") else "other"


def _rows_for_judge(asr: pd.DataFrame, judge: str) -> pd.DataFrame:
    _check_asr(asr)
    return asr[asr["judge"] == pick_judge(asr, judge)]


def _panels(rows: pd.DataFrame) -> tuple[list[tuple[str, str]], bool]:
    panels = list(dict.fromkeys(zip(rows["model"].astype(str), rows["dataset"].astype(str), strict=True)))
    return panels, rows["dataset"].nunique() > 1


def _one(rows: pd.DataFrame, what: str) -> pd.Series | None:
    """The single row of `rows` (None when empty); several rows are a contract error naming `what`."""
    if rows.empty:
        return None
    if len(rows) > 1:
        raise ContractError(f"{what}: {len(rows)} rows where one was expected")
    return rows.iloc[0]


def _selected_alphas(
    selection: pd.DataFrame | None, panels: list[tuple[str, str]], judge: str
) -> dict[tuple[str, str], float]:
    if selection is None:
        return dict.fromkeys(panels, 1.0)
    if not isinstance(selection, pd.DataFrame):
        raise ContractError(f"selection table: expected a pandas DataFrame, got {type(selection).__name__}")
    require_columns(selection, _SELECTION_NEEDED, "selection table")
    out = {}
    for model, dataset in panels:
        sel = selection[(selection["model"] == model) & (selection["dataset"] == dataset)]
        if len(sel) > 1 and "judge" in sel.columns and (sel["judge"] == judge).any():
            sel = sel[sel["judge"] == judge]
        row = _one(sel, f"selection table, model {model!r}, dataset {dataset!r}")
        if row is None:
            raise ContractError(
                f"selection table: no row for model {model!r}, dataset {dataset!r} (expected its alpha)"
            )
        alpha = float(row["alpha"])
        # no alpha met the validation criteria (`none_qualifies`): show alpha = 1, the average tool shift
        out[(model, dataset)] = alpha if math.isfinite(alpha) else 1.0
    return out


def _alpha_rows(rows: pd.DataFrame, kind: str, alpha: float) -> pd.DataFrame:
    parsed = rows["intervention"].map(parse_dose_id)
    keep = parsed.map(lambda p: bool(p) and p[0] == kind and math.isclose(p[1], alpha, abs_tol=1e-9))
    return rows[keep.to_numpy(dtype=bool)]


def _hatch_handles(kinds: list[str], labels: Mapping[str, str]) -> list[matplotlib.patches.Patch]:
    return [
        matplotlib.patches.Patch(
            facecolor="#8c8c8c", edgecolor=HATCH_COLOR, hatch=INTERVENTION_HATCHES[k], label=labels[k]
        )
        for k in kinds
    ]


def plot_interventions(
    asr: pd.DataFrame, out_png: str | Path, judge: str, selection: pd.DataFrame | None = None
) -> str:
    """Ablation and subtraction: ASR of direct and tool runs with and without each intervention, per model.

    Bars, top to bottom: direct; direct + α·tool vector (α from `selection`, i.e. tables/selection.csv,
    else 1, and 1 where no α met the selection criteria); the mean over seeds of direct + α·random vector
    (error bar: range over seeds); tool; tool − tool vector (subtract); tool with the tool direction
    ablated. Colour is the base condition's, hatching the intervention; other error bars are the table's
    95 % Wilson intervals. Missing bars (an intervention not run) are marked "not run". Returns the caption.
    """
    rows = _rows_for_judge(asr, judge)
    kinds = rows["intervention"].map(intervention_kind)
    if not kinds.isin(["add", "subtract", "ablate"]).any():
        raise ContractError(
            f"asr table: no add_a{{alpha}}, subtract or ablate intervention rows for judge {judge!r}"
        )
    panels, several = _panels(rows[kinds != "none"])
    alphas = _selected_alphas(selection, panels, judge)
    slots = ("direct", "add", "random", "tool", "subtract", "ablate")
    slot_labels = {
        "direct": "direct",
        "add": "direct + α·tool vec.",
        "random": "direct + α·random vec.",
        "tool": "tool",
        "subtract": "tool − tool vec.",
        "ablate": "tool, tool dir. ablated",
    }
    base_of = {"direct": "direct", "add": "direct", "random": "direct", "tool": "tool"}
    base_of |= {"subtract": "tool", "ablate": "tool"}
    kind_of = {"direct": "none", "tool": "none"} | {k: k for k in ("add", "random", "subtract", "ablate")}
    ns: list[float] = []
    seed_counts: set[int] = set()
    missing_random: list[str] = []
    ypos = np.arange(len(slots))
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.3 + _grid(len(panels))[0] * (0.34 * len(slots) + 1.0))
        nrows, ncols = _grid(len(panels))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            alpha = alphas[(model, dataset)]
            where = f"asr table, model {model!r}, dataset {dataset!r}"
            for y, slot in zip(ypos, slots, strict=True):
                cond = sub[sub["condition"] == base_of[slot]]
                colour = CONDITION_PALETTE[base_of[slot]]
                if slot in ("direct", "tool"):
                    picked = cond[cond["intervention"] == "none"]
                elif slot in ("subtract", "ablate"):
                    picked = cond[cond["intervention"] == slot]
                else:
                    picked = _alpha_rows(cond, slot, alpha)
                if picked.empty:
                    if slot == "random":
                        missing_random.append(model)
                    ax.text(
                        0.02, y, "not run", va="center", fontsize="x-small", color="#555555", style="italic"
                    )
                    continue
                if slot == "random":
                    vals = picked["asr"].to_numpy(dtype=float)
                    value, lo, hi = float(vals.mean()), float(vals.min()), float(vals.max())
                    seed_counts.add(len(picked))
                else:
                    r = _one(picked, f"{where}, {slot_labels[slot]}")
                    value, lo, hi = float(r["asr"]), float(r["asr_ci_low"]), float(r["asr_ci_high"])
                ns.extend(picked["n"].tolist())
                ax.barh(
                    [y],
                    [value],
                    xerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                    color=colour,
                    edgecolor=HATCH_COLOR,
                    linewidth=0,
                    hatch=INTERVENTION_HATCHES[kind_of[slot]],
                    error_kw={"ecolor": "black", "elinewidth": 1.2, "capsize": 3},
                    label=slot,
                )
            title = f"{model} (α = {alpha:g})"
            ax.set_title(_panel_title(title, dataset, several), fontsize="small")
            ax.set_xlim(0, 1.02)
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, [slot_labels[s] for s in slots], fontsize="small")
            ax.grid(axis="y", visible=False)
            ax.axhline(2.5, color="#999999", linewidth=0.8)
        axes[0].invert_yaxis()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="small")
        legend_labels = {
            "none": "no intervention",
            "add": "+ α·tool vector",
            "random": "+ α·random vector (mean over seeds)",
            "subtract": "− tool vector",
            "ablate": "tool direction ablated",
        }
        colour_handles = [
            matplotlib.patches.Patch(facecolor=CONDITION_PALETTE[c], label=f"base: {c}")
            for c in ("direct", "tool")
        ]
        fig.legend(
            handles=colour_handles + _hatch_handles(list(legend_labels), legend_labels),
            loc="outside upper center",
            ncols=4,
            fontsize="x-small",
            handlelength=2.6,
            handleheight=1.4,
        )
        values = sorted(set(alphas.values()))
        source = "selected on the validation split" if selection is not None else "default, no selection"
        alpha_text = (
            f"α = {values[0]:g} ({source})"
            if len(values) == 1
            else f"α {source} per model (shown in each panel title)"
        )
        seeds = "/".join(str(s) for s in sorted(seed_counts))
        random_text = (
            f"the random-vector bar is the mean over {seeds} norm-matched seeds with their range as error bar"
            if seed_counts
            else "no random-vector control was run at that α"
        )
        if seed_counts and missing_random:
            random_text += f" (none at that α for {', '.join(dict.fromkeys(missing_random))})"
        caption = (
            f"ASR on the harmful prompts of {_datasets_text(rows['dataset'])} for direct and tool runs "
            f"without and with an intervention at the tool vector's layer ({alpha_text}), per model "
            f"(n = {_n_text(ns)} prompts per run), judged by the {judge} judge; colour is the base condition "
            f"and hatching the intervention, {random_text}, and the other error bars are 95 % Wilson "
            "confidence intervals."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- ASR under every judge


def plot_asr_by_judge(asr: pd.DataFrame, out_png: str | Path) -> str:
    """ASR per condition (intervention ``none``) under every judge of `tables/asr.csv`, one panel per model.

    Each condition is a row; its judges sit side by side (one marker shape per judge, filled with the
    condition's colour) with the table's 95 % Wilson intervals. Returns the caption.
    """
    _check_asr(asr)
    rows = asr[asr["intervention"] == "none"]
    if rows.empty:
        raise ContractError("asr table: no condition rows (intervention 'none')")
    conditions = _check_conditions(pd.unique(rows["condition"]))
    judges = sorted(str(j) for j in pd.unique(rows["judge"]))
    if len(judges) > len(_JUDGE_MARKERS):
        raise ContractError(f"asr table: {len(judges)} judges, at most {len(_JUDGE_MARKERS)} can be drawn")
    dup = rows.duplicated(["model", "dataset", "condition", "judge"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ContractError(
            f"asr table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"condition {r['condition']!r}, judge {r['judge']!r}"
        )
    panels, several = _panels(rows)
    nrows, ncols = _grid(len(panels))
    step = 0.8 / len(judges)
    offsets = {j: (k - (len(judges) - 1) / 2) * step for k, j in enumerate(judges)}
    row_in = max(0.32, 0.11 * len(judges) + 0.06)
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.0 + nrows * (row_in * len(conditions) + 0.9))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        ypos = np.arange(len(conditions))
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            for judge in judges:
                s = sub[sub["judge"] == judge].set_index("condition").reindex(conditions)
                have = s["asr"].notna().to_numpy()
                if not have.any():
                    continue
                vals = s["asr"].to_numpy(dtype=float)[have]
                low = np.clip(vals - s["asr_ci_low"].to_numpy(dtype=float)[have], 0, None)
                high = np.clip(s["asr_ci_high"].to_numpy(dtype=float)[have] - vals, 0, None)
                y = ypos[have] + offsets[judge]
                ax.errorbar(vals, y, xerr=np.vstack([low, high]), fmt="none", ecolor="black", elinewidth=1)
                ax.scatter(
                    vals,
                    y,
                    marker=_JUDGE_MARKERS[judges.index(judge)],
                    s=30,
                    c=[CONDITION_PALETTE[c] for c, h in zip(conditions, have, strict=True) if h],
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=3,
                    label=judge,
                )
            ax.set_title(_panel_title(model, dataset, several), fontsize="small")
            ax.set_xlim(-0.03, 1.03)
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, conditions, fontsize="small")
            ax.set_ylim(len(conditions) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
            for y in ypos[1:]:
                ax.axhline(y - 0.5, color="#dddddd", linewidth=0.6)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="small")
        handles = [
            Line2D(
                [], [], marker=_JUDGE_MARKERS[k], color="#8c8c8c", markeredgecolor="black", linestyle="none"
            )
            for k in range(len(judges))
        ]
        fig.legend(
            handles,
            judges,
            loc="outside upper center",
            ncols=len(judges),
            fontsize="small",
            title="judge",
            title_fontsize="small",
        )
        caption = (
            f"ASR on the harmful prompts of {_datasets_text(rows['dataset'])} for each condition and model "
            f"under each judge ({', '.join(judges)}; one marker shape per judge, side by side within a "
            f"condition; n = {_n_text(rows['n'])} prompts per point); error bars are 95 % Wilson confidence "
            "intervals."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- intervention cost


def plot_intervention_cost(cost: pd.DataFrame, asr: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """What each intervention costs (mean next-token KL on harmless prompts, tables/intervention_cost.csv)
    against the ASR change it buys (intervened ASR minus its base condition's ASR), one panel per model.

    Horizontal bars: the cost table's 95 % bootstrap CI of the mean KL; vertical bars: the intervened
    run's 95 % Wilson interval shifted by the base ASR. Random-vector controls are grey crosses.
    Returns the caption.
    """
    if not isinstance(cost, pd.DataFrame):
        raise ContractError(
            f"intervention cost table: expected a pandas DataFrame, got {type(cost).__name__}"
        )
    require_columns(cost, _COST_NEEDED, "intervention cost table")
    if cost.empty:
        raise ContractError(
            "intervention cost table: no rows (expected rows of tables/intervention_cost.csv)"
        )
    rows = _rows_for_judge(asr, judge)
    points = []
    unmatched = 0
    for r in cost.itertuples(index=False):
        key = (rows["model"] == r.model) & (rows["dataset"] == r.dataset) & (rows["condition"] == r.condition)
        where = f"asr table, model {r.model!r}, dataset {r.dataset!r}, condition {r.condition!r}"
        treated = _one(rows[key & (rows["intervention"] == r.intervention)], f"{where}, {r.intervention}")
        base = _one(rows[key & (rows["intervention"] == "none")], f"{where}, none")
        if treated is None or base is None or not math.isfinite(float(r.kl_mean)):
            unmatched += 1
            continue
        condition_color(str(r.condition))
        delta = float(treated["asr"]) - float(base["asr"])
        points.append(
            {
                "model": str(r.model),
                "dataset": str(r.dataset),
                "condition": str(r.condition),
                "kind": intervention_kind(str(r.intervention)),
                "alpha": (parse_dose_id(str(r.intervention)) or (None, np.nan))[1],
                "kl": float(r.kl_mean),
                "kl_lo": float(r.kl_ci_low),
                "kl_hi": float(r.kl_ci_high),
                "delta": delta,
                "d_lo": float(treated["asr_ci_low"]) - float(base["asr"]),
                "d_hi": float(treated["asr_ci_high"]) - float(base["asr"]),
                "n_cost": int(r.n),
                "n_asr": int(treated["n"]),
            }
        )
    if not points:
        raise ContractError(
            f"intervention cost table: none of its {len(cost)} rows has a matching intervention and base "
            f"row in the asr table for judge {judge!r}"
        )
    pts = pd.DataFrame(points)
    panels, several = _panels(pts)
    nrows, ncols = _grid(len(panels))
    styles = {
        "add": {"marker": "o", "label": "direct + α·tool vector (line: increasing α)"},
        "random": {"marker": "x", "label": "direct + α·random vector (control), one seed"},
        "subtract": {"marker": "v", "label": "tool − tool vector"},
        "ablate": {"marker": "s", "label": "tool, tool direction ablated"},
        "transfer": {"marker": "D", "label": "direct + α·other dataset's tool vector"},
        "ablate_refusal": {"marker": "*", "label": "refusal direction ablated (colour: its condition)"},
        "other": {"marker": "P", "label": "other intervention"},
    }
    axes_style, context = _style()
    with axes_style, context:
        fig = _new_figure(1.5 + 2.8 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        shown: list[str] = []
        for k, (ax, (model, dataset)) in enumerate(zip(axes, panels, strict=False)):
            sub = pts[(pts["model"] == model) & (pts["dataset"] == dataset)]
            add = sub[sub["kind"] == "add"].sort_values("alpha")
            if len(add) > 1:
                ax.plot(add["kl"], add["delta"], color=CONDITION_PALETTE["direct"], linewidth=1, zorder=2)
            for kind, style in styles.items():
                s = sub[sub["kind"] == kind]
                if s.empty:
                    continue
                colour = RANDOM_COLOR if kind == "random" else [CONDITION_PALETTE[c] for c in s["condition"]]
                xerr = np.vstack(
                    [np.clip(s["kl"] - s["kl_lo"], 0, None), np.clip(s["kl_hi"] - s["kl"], 0, None)]
                )
                yerr = np.vstack(
                    [np.clip(s["delta"] - s["d_lo"], 0, None), np.clip(s["d_hi"] - s["delta"], 0, None)]
                )
                ax.errorbar(
                    s["kl"],
                    s["delta"],
                    xerr=xerr,
                    yerr=yerr,
                    fmt="none",
                    ecolor="#777777",
                    elinewidth=0.8,
                    zorder=1,
                )
                ax.scatter(
                    s["kl"],
                    s["delta"],
                    marker=style["marker"],
                    c=colour,
                    s=36,
                    edgecolors=None if kind == "random" else "black",
                    linewidths=0.6,
                    zorder=3,
                    label=kind,
                )
                shown.append(kind)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlim(left=0)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            ax.xaxis.get_offset_text().set_fontsize("x-small")
            ax.tick_params(labelsize="small")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_title(_panel_title(model, dataset, several), fontsize="small")
            if k // ncols == nrows - 1 or k + ncols >= len(panels):
                ax.set_xlabel("mean KL on harmless prompts (nats)", fontsize="small")
        axes[0].set_ylabel("ASR change vs. no intervention", fontsize="small")
        for k in range(0, len(panels), ncols):
            axes[k].set_ylabel("ASR change vs. no intervention", fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        kinds = [k for k in styles if k in shown]
        handles = [
            Line2D(
                [],
                [],
                marker=styles[k]["marker"],
                linestyle="none",
                color=RANDOM_COLOR
                if k == "random"
                else "#8c8c8c"
                if k == "ablate_refusal"
                else CONDITION_PALETTE["tool" if k in ("subtract", "ablate") else "direct"],
                markeredgecolor=RANDOM_COLOR if k == "random" else "black",
            )
            for k in kinds
        ]
        fig.legend(
            handles,
            [styles[k]["label"] for k in kinds],
            loc="outside lower center",
            ncols=2,
            fontsize="x-small",
        )
        skipped = f"; {unmatched} cost rows without a matching ASR row are left out" if unmatched else ""
        caption = (
            "Cost of each intervention, the mean next-token KL divergence between the unhooked and hooked "
            f"model on harmless prompts (n = {_n_text(pts['n_cost'])} per point), against the ASR change it "
            f"buys on the harmful prompts of {_datasets_text(pts['dataset'])} (intervened minus the base "
            f"condition without intervention, n = {_n_text(pts['n_asr'])}), judged by the {judge} judge, "
            "per model; horizontal bars are 95 % bootstrap confidence intervals of the mean KL, vertical "
            "bars the 95 % Wilson interval of the intervened ASR (the base ASR's own uncertainty not "
            f"included), grey crosses the random-vector controls{skipped}."
        )
        _save(fig, out_png)
    return caption


# --------------------------------------------------------------------------- free tool use


def _as_bool(values: pd.Series, what: str) -> pd.Series:
    mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False}
    out = values.map(lambda v: mapping.get(v, mapping.get(str(v))))
    if out.isna().any():
        bad = values[out.isna()].iloc[0]
        raise ContractError(f"{what}: used_tool value {bad!r} is not a boolean")
    return out.astype(bool)


def plot_free_tool_use(free: pd.DataFrame, out_png: str | Path) -> str:
    """ASR of `free` runs split by whether the model called the tool (tables/free_tool_use.csv), per model
    and judge, with n on each bar and 95 % Wilson error bars.

    A group with no runs (e.g. a model that never calls the tool) gets no bar and a "none" mark, and the
    caption says which; an empty table (no free runs) gives a placeholder figure. Returns the caption.
    """
    if not isinstance(free, pd.DataFrame):
        raise ContractError(f"free tool use table: expected a pandas DataFrame, got {type(free).__name__}")
    require_columns(free, _FREE_NEEDED, "free tool use table")
    axes_style, context = _style()
    if free.empty:
        with axes_style, context:
            fig = _new_figure(2.0)
            ax = fig.subplots()
            ax.set_axis_off()
            ax.text(
                0.5, 0.5, "no free-condition runs were judged", ha="center", va="center", fontsize="medium"
            )
            _save(fig, out_png)
        return (
            "No free-condition runs were judged (n = 0), so there is no ASR split by tool use to show, under "
            "any judge, and no confidence interval."
        )
    free = free.assign(used_tool=_as_bool(free["used_tool"], "free tool use table"))
    dup = free.duplicated(["model", "dataset", "judge", "used_tool"])
    if dup.any():
        r = free[dup].iloc[0]
        raise ContractError(
            f"free tool use table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"judge {r['judge']!r}, used_tool {r['used_tool']}"
        )
    judges = sorted(str(j) for j in pd.unique(free["judge"]))
    panels, several = _panels(free)
    nrows, ncols = _grid(len(panels))
    colour = CONDITION_PALETTE["free"]
    groups = ((False, "did not call the tool", ""), (True, "called the tool", "///"))
    width = 0.38
    never: list[str] = []
    always: list[str] = []
    with axes_style, context:
        fig = _new_figure(1.2 + 2.6 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = free[(free["model"] == model) & (free["dataset"] == dataset)]
            name = f"{model} ({dataset})" if several else model
            if not sub["used_tool"].any():
                never.append(name)
            if sub["used_tool"].all():
                always.append(name)
            for g, (used, _label, hatch) in enumerate(groups):
                for x, judge in enumerate(judges):
                    xpos = x + (g - 0.5) * width
                    r = sub[(sub["judge"] == judge) & (sub["used_tool"] == used)]
                    if r.empty:
                        ax.text(
                            xpos,
                            0.02,
                            "none",
                            ha="center",
                            va="bottom",
                            fontsize="xx-small",
                            color="#555555",
                            style="italic",
                            rotation=90,
                        )
                        continue
                    r = r.iloc[0]
                    v, lo, hi = float(r["asr"]), float(r["asr_ci_low"]), float(r["asr_ci_high"])
                    ax.bar(
                        [xpos],
                        [v],
                        width=width * 0.95,
                        yerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]],
                        color=colour,
                        edgecolor="#444444",
                        linewidth=0.8,
                        hatch=hatch,
                        error_kw={"ecolor": "black", "elinewidth": 1.1, "capsize": 3},
                        label=f"{judge}|{used}",
                    )
                    ax.text(
                        xpos,
                        min(hi, 1.0) + 0.03,
                        f"n={int(r['n'])}",
                        ha="center",
                        va="bottom",
                        rotation=90,
                        fontsize="xx-small",
                    )
            ax.set_xticks(range(len(judges)), judges, fontsize="small")
            ax.set_xlim(-0.6, len(judges) - 0.4)
            ax.set_ylim(0, 1.32)  # room for the n labels above a bar at 100 %
            ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.tick_params(axis="y", labelsize="small")
            ax.grid(axis="x", visible=False)
            ax.set_title(_panel_title(model, dataset, several), fontsize="small")
        for k in range(0, len(panels), ncols):
            axes[k].set_ylabel("ASR (free condition)", fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles = [
            matplotlib.patches.Patch(facecolor=colour, edgecolor="#444444", hatch=h, label=lab)
            for _u, lab, h in groups
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
        missing = []
        if never:
            missing.append(
                f"{', '.join(never)} never called the tool, so only the did-not-call bars are drawn"
            )
        if always:
            missing.append(f"{', '.join(always)} always called the tool, so only the called bars are drawn")
        split = ""
        if "split" in free.columns:
            labels = sorted(str(s) for s in pd.unique(free["split"]))
            split = f" ({'/'.join(labels)} split)" if labels != ["all"] else ""
        caption = (
            f"ASR of the free condition (the model may call the zoom_in tool) on the harmful prompts of "
            f"{_datasets_text(free['dataset'])}{split}, split by whether the model called the tool, per "
            f"model and judge ({', '.join(judges)}; n = {_n_text(free['n'])} runs per bar, each bar "
            "labelled with its n); error bars are 95 % Wilson confidence intervals, and the split is the "
            "model's own choice, so the comparison is correlational"
            + (f"; {'; '.join(missing)}" if missing else "")
            + "."
        )
        _save(fig, out_png)
    return caption
