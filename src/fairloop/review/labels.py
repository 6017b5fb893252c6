"""Point labels that cover no marker and no other label, placed on a drawn matplotlib axis.

Each label tries offsets around its point, nearest first (rings of 16 directions), and takes the
first whose text box, as the renderer measures it, stays inside the axes and overlaps neither a
marker's box (every scatter point of the axis, at its drawn size) nor a label placed before it.
Labels beyond the first ring get a thin leader line to their point. Call it after the figure's
layout is final (tight_layout): it measures in display pixels.

matplotlib is imported where labels are placed (a heavy import the CLI's other commands never need).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib loads with the figure that needs it (frontier_figure)
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

RINGS = (7, 13, 20, 28, 38, 50, 64)  # offsets from the point, in points
DIRECTIONS = 16
PADDING = 1.0  # pixels kept free around a text box


def offsets() -> list[tuple[float, float, str, str]]:
    """Candidate (dx, dy) offsets in points, up-right first, then around each ring, with the text
    alignment that puts the text's near side, not its centre, at the offset."""
    found = []
    for ring in RINGS:
        for k in range(DIRECTIONS):
            angle = math.pi / 4 + 2 * math.pi * k / DIRECTIONS
            dx, dy = ring * math.cos(angle), ring * math.sin(angle)
            ha = "left" if dx > 0.3 * ring else "right" if dx < -0.3 * ring else "center"
            va = "bottom" if dy > 0.3 * ring else "top" if dy < -0.3 * ring else "center"
            found.append((dx, dy, ha, va))
    return found


def marker_boxes(axis: Axes) -> list[Bbox]:
    """Display boxes of every scatter marker on ``axis`` (size from the collection, edge included)."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    points_to_pixels = axis.figure.dpi / 72
    boxes = []
    for collection in axis.collections:
        if not isinstance(collection, PathCollection) or not collection.get_visible():
            continue
        sizes = collection.get_sizes()
        widths = np.atleast_1d(collection.get_linewidths())
        centres = collection.get_offset_transform().transform(collection.get_offsets())
        for i, (x, y) in enumerate(centres):
            if not np.isfinite([x, y]).all():
                continue
            size = sizes[i % len(sizes)] if len(sizes) else 36.0
            half = (math.sqrt(size) / 2 + widths[i % len(widths)] / 2) * points_to_pixels
            boxes.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
    return boxes


def _overlap(box: Bbox, others: list[Bbox]) -> float:
    """Total area ``box`` shares with ``others`` (pixels squared)."""
    total = 0.0
    for other in others:
        width = min(box.x1, other.x1) - max(box.x0, other.x0)
        height = min(box.y1, other.y1) - max(box.y0, other.y0)
        if width > 0 and height > 0:
            total += width * height
    return total


def place_labels(axis: Axes, labels: list[tuple[str, tuple[float, float], str]], fontsize: float) -> list[Annotation]:
    """Annotate each (text, (x, y) in data coordinates, colour) on ``axis`` where it covers no
    marker and no earlier label; where no offset is free (a crowd beyond the last ring), the
    offset with the least overlap."""
    renderer = axis.figure.canvas.get_renderer()
    inside = axis.get_window_extent(renderer)
    taken = marker_boxes(axis)
    placed = []
    for text, point, colour in labels:
        annotation = axis.annotate(text, point, fontsize=fontsize, color=colour, textcoords="offset points",
                                   xytext=(0, 0), annotation_clip=False)
        best = None
        for dx, dy, ha, va in offsets():
            annotation.xyann = (dx, dy)
            annotation.set_horizontalalignment(ha)
            annotation.set_verticalalignment(va)
            box = annotation.get_window_extent(renderer).padded(PADDING)
            outside = box.x0 < inside.x0 or box.x1 > inside.x1 or box.y0 < inside.y0 or box.y1 > inside.y1
            cost = _overlap(box, taken) + (float("inf") if outside else 0.0)
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), ha, va, box)
            if cost == 0:
                break
        _, offset, ha, va, box = best
        annotation.remove()
        leader = math.hypot(*offset) > RINGS[0] + 1  # away from its point: a thin line says whose it is
        annotation = axis.annotate(text, point, fontsize=fontsize, color=colour, textcoords="offset points",
                                   xytext=offset, ha=ha, va=va, annotation_clip=False,
                                   arrowprops=dict(arrowstyle="-", color=colour, linewidth=0.5, shrinkA=0, shrinkB=2)
                                   if leader else None)
        taken.append(box)
        placed.append(annotation)
    return placed
