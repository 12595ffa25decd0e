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
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from toolshift import CONDITIONS
from toolshift.contracts import atomic_path, require_columns
from toolshift.errors import ContractError

matplotlib.use("Agg")

DPI = 150
"""Resolution of the PNG figures."""

PAGE_WIDTH_IN = 9.0
"""Figure width in inches: 1350 px at `DPI`, shown at the book's page width."""

CONDITION_PALETTE: dict[str, str] = {
    "direct": "#0173b2",
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


def _pick_judge(asr: pd.DataFrame, judge: str | None) -> str:
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
        fig.savefig(tmp_svg, format="svg", metadata={"Date": None})


def _style():
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=1.0)


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
            ax.set_xlim(0, 1)
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, conditions)
            ax.grid(axis="y", visible=False)
        axes[0].invert_yaxis()  # shared: the first condition on top in every panel
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.06)
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
        return f"n = {_n_text(ns)} harmful prompts per model"
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
    judge = _pick_judge(asr, judge)
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
                offsets = r["seed"].map(
                    lambda s: (seeds.index(int(s)) - (len(seeds) - 1) / 2) * 0.015 * spread
                )
                x = r["alpha"] + offsets
                ax.errorbar(
                    x,
                    r["asr"],
                    yerr=[
                        np.clip(r["asr"] - r["asr_ci_low"], 0, None),
                        np.clip(r["asr_ci_high"] - r["asr"], 0, None),
                    ],
                    fmt="x",
                    color=RANDOM_COLOR,
                    markersize=7,
                    capsize=2,
                    linewidth=1,
                    label="direct + α·random vector (norm-matched)",
                )
            ax.set_title(_panel_title(model, dataset, several_datasets), fontsize="medium")
            ax.set_ylim(0, 1)
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
        seeds_text = (
            f"crosses are norm-matched random vectors (seeds {', '.join(str(s) for s in seeds)})"
            if seeds
            else "no random-vector controls were run"
        )
        caption = (
            f"ASR on the harmful prompts of {_datasets_text(add['dataset'])} when α times the tool vector "
            f"is added to direct runs (n = {_n_text(used['n'])} prompts per point), judged by the {judge} "
            "judge; "
            f"the band and error bars are 95 % Wilson confidence intervals, {seeds_text}, and the horizontal "
            "lines are the direct and tool ASR without intervention."
        )
        _save(fig, out_png)
    return caption
