"""Small trend charts, drawn server-side with matplotlib as PNG images: inline attachments in the
digest email, data: URIs on the Campaigns page. No script, no web font: a chart is a picture any
mail client or browser shows, with the same pixels everywhere.

Labels are program ids and fixed captions only (never free text from the CRM), so nothing a
user typed can reach the chart or matplotlib's mathtext parser.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image

PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D")
INK = "#333333"
GRID = "#E5E5E5"
PNG_COLORS = 64
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, PANEL_GAP = 44, 14, 26, 50
MARGIN_BOTTOM, LEGEND_ROW, LEGEND_COLUMNS = 26, 17, 4
TITLE_SIZE, LABEL_SIZE = 10, 9
"""Point sizes: at 100 dpi a 9 pt label is 12.5 CSS pixels, still 8 px on a 375 px phone."""


@dataclass(frozen=True)
class Series:
    """One named series of a panel: bars or a line; NaN marks a period without a value."""

    name: str
    values: Sequence[float]
    kind: Literal["bar", "line"] = "line"
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    """One plot of a chart: its title, its series and how the y axis reads."""

    title: str
    series: Sequence[Series]
    percent: bool = False


def _percent(value: float, _position: int) -> str:
    return f"{value * 100:.0f}%"


def _count(value: float, _position: int) -> str:
    return f"{value / 1000:.0f}k" if abs(value) >= 10_000 else f"{value:.0f}"


def _draw(ax, labels: Sequence[str], panel: Panel, colors: dict[str, str], show_legend: bool) -> None:
    positions = list(range(len(labels)))
    bottom = [0.0] * len(labels)
    for series in panel.series:
        color = colors.setdefault(series.name, PALETTE[len(colors) % len(PALETTE)])
        values = [float(v) for v in series.values]
        if series.kind == "bar":
            heights = [0.0 if math.isnan(v) else v for v in values]
            ax.bar(positions, heights, bottom=bottom, width=0.7, color=color, label=series.name, linewidth=0)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        else:
            ax.plot(
                positions,
                values,
                color=color,
                label=series.name,
                linewidth=1.6,
                marker="o",
                markersize=2.5,
                linestyle="--" if series.dashed else "-",
            )
    ax.set_title(panel.title, loc="left", fontsize=TITLE_SIZE, color=INK, fontweight="bold")
    ax.yaxis.set_major_formatter(FuncFormatter(_percent if panel.percent else _count))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=not panel.percent))
    ax.set_ylim(0, max(ax.get_ylim()[1], 0.01 if panel.percent else 1.0) * 1.08)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    shown = positions[::-1][:: max(1, math.ceil(len(labels) / 5))][::-1]
    ax.set_xticks(shown, [labels[i] for i in shown])
    ax.tick_params(labelsize=LABEL_SIZE, colors=INK, length=0)
    ax.tick_params(axis="x", pad=5)
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color("#BBBBBB")
    if show_legend:
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=min(LEGEND_COLUMNS, len(panel.series)),
            frameon=False,
            fontsize=LABEL_SIZE,
            handlelength=1.2,
            columnspacing=1.0,
            labelcolor=INK,
        )


def render(
    labels: Sequence[str],
    panels: Sequence[Panel],
    size: tuple[int, int],
    scale: float = 2.0,
    stacked: bool = False,
) -> bytes:
    """Draw ``panels`` side by side over the x-axis ``labels`` as one image of ``size`` CSS pixels.

    ``scale`` multiplies the pixel density of a PNG (2.0 stays sharp on high-density screens); the
    PNG is reduced to a small palette, which keeps a chart near 10 kB. A series keeps its color
    across panels; a panel with more than one series gets a legend. ``stacked`` puts the panels
    one above the other (for a narrow screen: the digest on a phone).
    """
    width, height = size
    legend_rows = max(math.ceil(len(p.series) / LEGEND_COLUMNS) if len(p.series) > 1 else 0 for p in panels)
    with rc_context({"font.family": "DejaVu Sans"}):
        figure = Figure(figsize=(width / 100, height / 100), dpi=100 * scale)
        below = MARGIN_BOTTOM + (LEGEND_ROW * legend_rows + 8 if legend_rows else 0)
        figure.subplots_adjust(
            left=MARGIN_LEFT / width,
            right=1 - MARGIN_RIGHT / width,
            top=1 - MARGIN_TOP / height,
            bottom=below / height,
            wspace=PANEL_GAP / (width / len(panels)),
            hspace=(below + MARGIN_TOP) / (height / len(panels)),
        )
        grid = (len(panels), 1) if stacked else (1, len(panels))
        axes = figure.subplots(*grid, squeeze=False).flatten()
        colors: dict[str, str] = {}
        for ax, panel in zip(axes, panels, strict=True):
            _draw(ax, labels, panel, colors, show_legend=len(panel.series) > 1)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        pixels = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = pixels.convert("RGB").quantize(colors=PNG_COLORS, method=Image.Quantize.MEDIANCUT)
    small = io.BytesIO()
    image.save(small, format="PNG", optimize=True)
    return small.getvalue()
