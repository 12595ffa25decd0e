"""What every figure shares: the page size, the fixed colour of each condition, saving (PNG + SVG) and the
checks and captions' wording common to the figures.

Every figure is written as PNG (150 dpi) with an SVG of the same name beside it, both atomically
(`save_figure`), and each plotting function returns a one-sentence caption (n, judge, intervals) for the
book. Each condition has one fixed colour-blind-safe colour (`CONDITION_PALETTE`, from seaborn's
"colorblind" palette and shades of it) that every figure uses.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import matplotlib.patches
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from toolshift import CONDITIONS, blank_scale, condition_order
from toolshift.contracts import ASR_COLUMNS, require_columns
from toolshift.errors import ContractError
from toolshift.files import atomic_path

matplotlib.use("Agg")

DPI = 150
"""Resolution of the PNG figures."""

PAGE_WIDTH_IN = 9.0
"""Figure width in inches: 1350 px at `DPI`, shown at the book's page width."""


def shade(colour: str, lightness: float) -> str:
    """`colour` (hex) with its HLS lightness set to `lightness` (0-1): a lighter or darker shade of the same
    hue, for the controls that vary one condition's amount (the blank size dose, the padded trail)."""
    import colorsys

    import matplotlib.colors

    hue, _, saturation = colorsys.rgb_to_hls(*matplotlib.colors.to_rgb(colour))
    return str(matplotlib.colors.to_hex(colorsys.hls_to_rgb(hue, lightness, saturation)))


CONDITION_PALETTE: dict[str, str] = {
    "direct": "#0173b2",
    "tool_offered": "#ece133",
    "tool": "#de8f05",
    "tool_unsafe": "#d55e00",
    "tool_benign": "#029e73",
    "tool_blank": "#cc78bc",
    "tool_blank_x0.25": shade("#cc78bc", 0.82),
    "tool_blank_x4": shade("#cc78bc", 0.38),
    "text_trail": "#ca9161",
    "text_prior": "#56b4e9",
    "image_no_tool": "#949494",
    "image_after": shade("#949494", 0.35),
    "image_turn": shade("#949494", 0.75),
    "text_trail_long": shade("#ca9161", 0.35),
    "free": "#fbafe4",
}
"""One fixed colour per condition, the same in every figure: seaborn's "colorblind" colours, and for the
controls that vary another condition's amount or place a lighter or darker shade of its colour (the blank
size dose of `tool_blank`, `text_trail_long` of `text_trail`, `image_after` and `image_turn` of
`image_no_tool`): they differ in lightness, which colour-blind readers see. A blank dose not listed here
gets a `tool_blank` shade by its scale (`condition_color`)."""

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


def condition_color(condition: str) -> str:
    """The fixed colour of a condition (a blank size dose not in CONDITION_PALETTE: a `tool_blank` shade,
    lighter below scale 1, darker above); an unknown condition is a contract error."""
    scale = blank_scale(condition)
    if condition not in CONDITION_PALETTE and scale is not None:
        return shade(CONDITION_PALETTE["tool_blank"], min(0.85, max(0.3, 0.62 - 0.06 * math.log2(scale))))
    try:
        return CONDITION_PALETTE[condition]
    except KeyError:
        raise ContractError(
            f"condition {condition!r} has no colour; expected one of {', '.join(CONDITION_PALETTE)}"
        ) from None


def check_asr(asr: pd.DataFrame) -> None:
    if not isinstance(asr, pd.DataFrame):
        raise ContractError(f"asr table: expected a pandas DataFrame, got {type(asr).__name__}")
    require_columns(asr, ASR_COLUMNS, "asr table")
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


def n_text(values: Iterable[float]) -> str:
    ns = sorted({int(v) for v in values if pd.notna(v)})
    if not ns:
        return "unknown"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def datasets_text(datasets: Iterable[str]) -> str:
    ds = [str(d) for d in dict.fromkeys(datasets)]
    return ("dataset " if len(ds) == 1 else "datasets ") + ", ".join(ds)


def panel_title(model: str, dataset: str, several_datasets: bool) -> str:
    title = textwrap.fill(str(model), 30)
    return f"{title}\n({dataset})" if several_datasets else title


def grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(max_cols, n_panels))
    return math.ceil(n_panels / ncols), ncols


def model_style(i: int) -> dict[str, object]:
    return {
        "color": INTERVENTION_COLOR,
        "marker": _MODEL_MARKERS[i % len(_MODEL_MARKERS)],
        "linestyle": _MODEL_LINESTYLES[i % len(_MODEL_LINESTYLES)],
    }


MAX_HEIGHT_IN = 16.0
"""The tallest figure, in inches (2400 px at `DPI`)."""


def rows_height(n_rows: int, n_items: int, per_item_in: float, per_row_in: float, top_in: float) -> float:
    """The height of a figure of `n_rows` panel rows, each `n_items` items of `per_item_in` inches plus
    `per_row_in`, under a `top_in` title: the items are drawn closer where that would pass MAX_HEIGHT_IN."""
    room = (MAX_HEIGHT_IN - top_in - n_rows * per_row_in) / max(1, n_rows * n_items)
    return top_in + n_rows * (min(per_item_in, max(room, 0.12)) * n_items + per_row_in)


def new_figure(height_in: float) -> Figure:
    return Figure(figsize=(PAGE_WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, out_png: str | Path) -> None:
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


def seaborn_style():
    return sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=1.0)


def plot_not_drawn(out_png: str | Path, reason: str) -> str:
    """A figure the run's config gives no data for (e.g. the dose-response curve of a run without `add`
    interventions): a panel that says so, and the caption `Not drawn: {reason}`."""
    caption = f"Not drawn: {reason}"
    fig = new_figure(1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(caption, 90), ha="center", va="center", fontsize=10, wrap=True)
    save_figure(fig, out_png)
    return caption


def check_conditions(conditions: Iterable[str]) -> list[str]:
    conds = [str(c) for c in conditions]
    for c in conds:
        condition_color(c)
    return sorted(set(conds), key=condition_order)


def rows_for_judge(asr: pd.DataFrame, judge: str) -> pd.DataFrame:
    check_asr(asr)
    return asr[asr["judge"] == pick_judge(asr, judge)]


def model_panels(rows: pd.DataFrame) -> tuple[list[tuple[str, str]], bool]:
    panels = list(dict.fromkeys(zip(rows["model"].astype(str), rows["dataset"].astype(str), strict=True)))
    return panels, rows["dataset"].nunique() > 1


def single_row(rows: pd.DataFrame, what: str) -> pd.Series | None:
    """The single row of `rows` (None when empty); several rows are a contract error naming `what`."""
    if rows.empty:
        return None
    if len(rows) > 1:
        raise ContractError(f"{what}: {len(rows)} rows where one was expected")
    return rows.iloc[0]
