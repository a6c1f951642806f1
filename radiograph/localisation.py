"""Localisation metrics: how well class activation maps point at the true boxes of findings.

The measures of the ChestX-ray8 paper (Wang et al. 2017): the pointing game
(`pointing_hit`: the map's maximum lies in a true box) and IoBB, intersection
over the detected box's area (`iobb`), where the detected box is the map's
hottest region. `score_finding` scores one finding from one image's features,
`localisation_summary` sums findings up per class and over all. Pure numpy and
radiograph modules: evaluation on a test split and epoch selection on the
validation findings both use them.
"""
from __future__ import annotations

import numpy as np

from radiograph.cam import class_activation_map, hottest_region, normalise
from radiograph.geometry import Box, on_original

IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75)


def pointing_hit(heatmap: np.ndarray, boxes: list[Box]) -> bool:
    """Pointing game: the heatmap's maximum lies inside one of the true boxes."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return any(bx <= x + 0.5 <= bx + bw and by <= y + 0.5 <= by + bh for bx, by, bw, bh in boxes)


def iobb(predicted: Box, truth: Box) -> float:
    """Intersection over the detected box's area (ChestX-ray8, Wang et al. 2017)."""
    px, py, pw, ph = predicted
    tx, ty, tw, th = truth
    inter = max(0.0, min(px + pw, tx + tw) - max(px, tx)) * max(0.0, min(py + ph, ty + th) - max(py, ty))
    return inter / (pw * ph) if pw * ph > 0 else 0.0


def score_finding(features: np.ndarray, kernel: np.ndarray, class_index: int, geometry, boxes,
                  grid=None) -> tuple[bool, float]:
    """One finding's pointing-game hit and best IoBB: its class's CAM from one image's features [h, w, K],
    mapped onto the original image (cells placed by `grid`, a FeatureGrid); the hottest region (>= half the
    maximum, holding it) is the detected box."""
    heatmap, flat = normalise(class_activation_map(features, kernel, class_index))
    full = on_original(heatmap, geometry, grid)
    region = None if flat else hottest_region(full)
    hit = region is not None and pointing_hit(full, boxes)
    return hit, max(iobb(region[0], b) for b in boxes) if region else 0.0


def localisation_summary(scores: dict[str, list[tuple[bool, float]]]) -> dict:
    """Pointing game and IoBB > T over every finding, their mean over classes, and per class."""
    def summary(rows):
        hits, overlaps = np.array([r[0] for r in rows], float), np.array([r[1] for r in rows])
        return {"findings": len(rows), "pointing_game": float(hits.mean()),
                "iobb": {str(t): float((overlaps > t).mean()) for t in IOBB_THRESHOLDS}}

    per_class = {label: summary(rows) for label, rows in sorted(scores.items())}
    every = [row for rows in scores.values() for row in rows]
    return {**(summary(every) if every else {"findings": 0}),
            "pointing_game_mean_over_classes": float(np.mean([c["pointing_game"] for c in per_class.values()]))
            if per_class else None, "per_class": per_class}
