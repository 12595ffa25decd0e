"""The representation chapter's figures, drawn from the vector files (`vectors/{model}/{dataset}.nc`):
cosines by layer, PCA of the last-token states, linear probes, projections on the tool vector."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from toolshift.analysis.vectors import evaluation_prompts, refusal_position
from toolshift.errors import ContractError
from toolshift.report.figures.style import (
    CONDITION_ORDER,
    CONDITION_PALETTE,
    check_conditions,
    condition_color,
    datasets_text,
    grid_shape,
    model_style,
    n_text,
    new_figure,
    save_figure,
    seaborn_style,
)

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
        return f"n = {n_text(ns)} harmful {'train ' if split else ''}prompts per model"
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
    n_rows_shift, ncols = grid_shape(len(shift)) if shift else (0, 1)
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(0.9 + 2.9 * (1 + n_rows_shift))
        grid = fig.add_gridspec(1 + n_rows_shift, ncols)
        ax0 = fig.add_subplot(grid[0, :])
        for i, m in enumerate(models):
            da = cos_tr[m]
            x = _layers(da)
            ax0.plot(
                x, da.values, label=textwrap.shorten(m, 40), markevery=max(1, len(x) // 16), **model_style(i)
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
            + f" ({datasets_text(datasets)}; {_n_prompts_text(vectors)}); point estimates, no judge is "
            "involved and no confidence intervals are shown."
        )
        save_figure(fig, out_png)
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
    nrows, ncols = grid_shape(len(vectors))
    shown: list[str] = []
    split_labels = set()
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.4 + 3.0 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (name, ds) in zip(axes, vectors.items(), strict=False):
            layer = _selected_layer(ds, name)
            mask, label = _eval_prompts(ds)
            split_labels.add(label)
            harmful = np.asarray(ds["harmful"].values, dtype=bool)[mask]
            conds = check_conditions(ds["condition"].values)
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
        save_figure(fig, out_png)
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
    nrows, ncols = grid_shape(len(vectors))
    kinds = set()
    shown: list[str] = []
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.4 + 2.9 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (name, ds) in zip(axes, vectors.items(), strict=False):
            test = ds["probe_test_accuracy"] if "probe_test_accuracy" in ds else None
            use_test = test is not None and bool(np.isfinite(test.values).any())
            kinds.add("test" if use_test else "cv")
            acc = test if use_test else cv[name]
            x = _layers(acc)
            for c in check_conditions(acc["condition"].values):
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
        save_figure(fig, out_png)
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
    nrows, ncols = grid_shape(len(vectors))
    shown: list[str] = []
    ns: list[int] = []
    labels = set()
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.4 + 2.9 * nrows)
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
            for c in check_conditions(pos["condition"].values):
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
            f"n = {n_text(ns)} harmful per model); bands are 95 % normal confidence intervals of the mean, "
            "and no judge is involved."
        )
        save_figure(fig, out_png)
    return caption
