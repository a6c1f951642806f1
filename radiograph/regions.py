"""A heatmap described in words: where its hottest region lies, in the task's terms, and how much it covers.

    from radiograph.regions import describe
    from radiograph.registry import get_task
    describe(heatmap, get_task("chest14").anatomy)["text"]
    # "Hottest region: patient's right lung, upper zone, covering 6% of the image; the map is at least half its
    #  maximum over 9% of the image, counting every region (radiological convention: ...)."

The heatmap is one class's map placed on the whole original image (radiograph.geometry.on_original; the letterbox
undone), so fractions of its width and height are fractions of the film's. Its hottest region
(radiograph.cam.hottest_region: the connected part at or above half the maximum that holds the maximum) is named
by the band its centroid falls in (registry.Anatomy: equal bands of the image, named per task); its area over the
image's is the coverage. The warm fraction counts every pixel at or above half the maximum, connected to the
hottest region or not. A map with no positive evidence (None: flat) is said to be so, and nothing is named.
"""
from __future__ import annotations

import numpy as np

from radiograph.cam import hottest_region
from radiograph.registry import Anatomy

FLAT_TEXT = "No positive evidence for this class: its map is flat, so no region is named."


def describe(heatmap: np.ndarray | None, anatomy: Anatomy, region: tuple | None = None) -> dict:
    """JSON-serialisable: `flat`; else the hottest region's `row` and `column` names, its `place` in words, its
    centroid as fractions of the image's width and height, `hottest_region_fraction` (its area over the image's),
    `warm_fraction` (pixels at or above half the maximum), the anatomy's `terms`; always `text`, one sentence or two.
    `region` is hottest_region(heatmap) where the caller has it already."""
    peak = float(np.max(heatmap, initial=0.0, where=np.isfinite(heatmap))) if heatmap is not None else 0.0
    if not peak > 0:
        return {"flat": True, "text": FLAT_TEXT}
    _, mask = region if region is not None else hottest_region(heatmap)
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    x_fraction, y_fraction = (xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height  # pixel centres
    row, column = anatomy.zone(x_fraction, y_fraction)
    place = anatomy.place.format(row=row, column=column)
    covered = float(mask.mean())
    warm = float((heatmap >= 0.5 * peak).mean())
    text = (f"Hottest region: {place}, covering {percent(covered)} of the image; the map is at least half its "
            f"maximum over {percent(warm)} of the image, counting every region ({anatomy.terms}).")
    return {"flat": False, "row": row, "column": column, "place": place,
            "centroid_fraction_xy": [round(float(x_fraction), 3), round(float(y_fraction), 3)],
            "hottest_region_fraction": round(covered, 4), "warm_fraction": round(warm, 4), "terms": anatomy.terms,
            "text": text}


def percent(fraction: float) -> str:
    """A share of the image in words: whole percents, and "under 1%" rather than a misleading 0%."""
    return "under 1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"
