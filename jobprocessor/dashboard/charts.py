"""Server-drawn SVG bar charts (no script, no third-party library): the geometry of stacked bars, pure."""
from __future__ import annotations

from typing import Sequence


def bar_chart(series: Sequence[dict], width: int = 720, height: int = 140, label_every: int = 10) -> dict:
    """Stacked bars of `completed` (below) and `failed` (on top) per bucket of `series` ({at, completed, failed}).
    Returns the SVG size, the peak and, per bar, its x, width and the two rectangles' y and height."""
    n = max(1, len(series))
    top = 14  # room for the peak's label
    usable = height - top - 16  # and for the time labels below
    peak = max([float(s["completed"]) + float(s["failed"]) for s in series] + [0.0])
    scale = usable / peak if peak > 0 else 0.0
    step = width / n
    bars = []
    for i, point in enumerate(series):
        completed, failed = float(point["completed"]), float(point["failed"])
        h_completed, h_failed = completed * scale, failed * scale
        base = top + usable
        bars.append({
            "x": round(i * step + 0.5, 2), "w": round(max(1.0, step - 1.0), 2),
            "y_completed": round(base - h_completed, 2), "h_completed": round(h_completed, 2),
            "y_failed": round(base - h_completed - h_failed, 2), "h_failed": round(h_failed, 2),
            "completed": round(completed), "failed": round(failed), "at": point["at"],
            "label": point["at"].strftime("%H:%M") if i % label_every == 0 else None,
        })
    return {"width": width, "height": height, "peak": round(peak), "bars": bars, "base": top + usable,
            "total_completed": round(sum(float(s["completed"]) for s in series)),
            "total_failed": round(sum(float(s["failed"]) for s in series))}
