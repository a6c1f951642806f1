"""Class activation maps from the ONNX `features` output, and overlays on the user's image.

With the head feature map -> GlobalAveragePooling -> Dense, Grad-CAM on a
class's logit equals ReLU(features @ W[:, c]) up to a positive scale (the
gradient of the logit with respect to each feature-map cell is W[:, c] / (h*w)),
so serving computes it from one matrix product on the features ONNX Runtime
already returned. W is the Dense kernel, read from the fp32 ONNX file. A class
scored against an alternative (the card's heatmap_versus: logit_c - logit_a) is
the same product with W[:, c] - W[:, a]: `cam_kernel` folds the scores in.

Here: the kernel (`dense_kernel`, `score_matrix`, `score_names`, `cam_kernel`),
the maps (`class_activation_map(s)`, `normalise(_each)`) and drawing them
(`overlay` in one of `COLORMAPS`, `hottest_region`, `outline`). Placing a map on the original image
is radiograph.geometry's (`on_original`); scoring maps against true boxes is
radiograph.localisation's.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from radiograph.geometry import Box

# The colour maps an overlay can be drawn in (OpenCV's), the default first. viridis is perceptually uniform (equal
# steps of the map are equal steps of lightness) and stays readable with every common colour-vision deficiency; its
# middle is a saturated teal, where cividis's is a near-neutral grey that vanishes on a grayscale film
# (docs/gradcam.md). jet, the rainbow, is kept for those used to it: its bright bands invent edges the map lacks.
COLORMAPS = {"viridis": cv2.COLORMAP_VIRIDIS, "cividis": cv2.COLORMAP_CIVIDIS, "jet": cv2.COLORMAP_JET}
DEFAULT_COLORMAP = "viridis"
METHODS = ("gradcam", "gradcam++")  # heatmap methods: Grad-CAM on every path, Grad-CAM++ on the Keras one only


def dense_kernel(onnx_path: Path, num_classes: int) -> np.ndarray:
    """The logits layer's kernel [K, C] from the ONNX graph (the MatMul on the pooled features)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {i.name: i for i in graph.initializer}
    for node in reversed(graph.node):
        if node.op_type == "MatMul":
            for name in node.input:
                if name in initializers:
                    kernel = numpy_helper.to_array(initializers[name])
                    if kernel.ndim == 2 and kernel.shape[1] == num_classes:
                        return kernel.astype(np.float32)
    raise ValueError(f"{onnx_path} has no MatMul with a [K, {num_classes}] kernel: not a GAP -> Dense head")


def score_matrix(labels, versus) -> np.ndarray:
    """[C, C]: column c combines the logits into class c's heatmap score (its logit, minus its alternative's);
    `versus` holds (class, alternative) label pairs (a card's or a TaskSpec's heatmap_versus)."""
    labels = list(labels)
    scores = np.eye(len(labels), dtype=np.float32)
    for label, alternative in versus:
        scores[labels.index(alternative), labels.index(label)] = -1.0
    return scores


def score_names(labels, versus) -> list[str]:
    """What each class's heatmap explains, in words: "logit(c)" or "logit(c) - logit(a)"."""
    labels = list(labels)
    scores = score_matrix(labels, versus)
    return [" - ".join(f"logit({labels[i]})" for i in [c, *np.flatnonzero(scores[:, c] < 0)]) for c in range(len(labels))]


def cam_kernel(onnx_path: Path, card) -> np.ndarray:
    """[K, C]: the Dense kernel with each class's score folded in; ReLU(features @ it[:, c]) is class c's map."""
    return dense_kernel(onnx_path, len(card.labels)) @ score_matrix(card.labels, card.heatmap_versus)


def class_activation_map(features: np.ndarray, kernel: np.ndarray, class_index: int) -> np.ndarray:
    """ReLU(features @ W[:, c]) for one image's features [h, w, K]; [h, w], not normalised."""
    return class_activation_maps(features, kernel[:, [class_index]])[0]


def class_activation_maps(features: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Every class's ReLU(features @ W[:, c]) at once: features [h, w, K] -> [C, h, w], not normalised."""
    height, width, channels = features.shape
    maps = np.asarray(features, np.float32).reshape(-1, channels) @ kernel  # one [h*w, K] @ [K, C] product
    return np.maximum(maps, 0.0, out=maps).T.reshape(-1, height, width)


def normalise(heatmap: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale to [0, 1]; a map with no positive evidence stays all zero (and is reported as flat)."""
    scaled, flat = normalise_each(np.asarray(heatmap)[None])
    return scaled[0], flat[0]


def normalise_each(heatmaps: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """`normalise` of every map in [C, h, w] at once (serving computes all of a model's classes per image)."""
    peaks = heatmaps.reshape(len(heatmaps), -1).max(axis=1) if heatmaps.size else np.zeros(len(heatmaps))
    flat = ~(np.isfinite(peaks) & (peaks > 1e-12))
    scaled = (heatmaps * np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, peaks))[:, None, None]).astype(np.float32)
    scaled[flat] = 0.0  # a map of NaN stays flat, not NaN
    return scaled, flat.tolist()


def colormap_code(name: str) -> int:
    """OpenCV's code of a colour map in `COLORMAPS`; an unknown name is a ValueError that lists the known ones."""
    try:
        return COLORMAPS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}") from None


def overlay(image: np.ndarray, heatmap: np.ndarray | None, opacity: float = 0.4,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """RGB uint8: the grayscale image with a colour map (a name in `COLORMAPS`) blended where the heatmap is warm."""
    code = colormap_code(colormap)  # checked even when nothing is drawn: a wrong name is never silently ignored
    gray = np.clip(image, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if heatmap is None or not 0 < opacity:
        return rgb
    colours = cv2.cvtColor(cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), code),
                           cv2.COLOR_BGR2RGB)
    weight = (np.float32(np.clip(opacity, 0, 1)) * np.clip(heatmap, 0, 1).astype(np.float32))[..., None]
    blended = colours.astype(np.float32)  # rgb + (colours - rgb) * weight, in place: cold regions keep the film
    blended -= rgb
    blended *= weight
    blended += rgb
    return np.rint(blended, out=blended).astype(np.uint8)


# ----------------------------------------------------------------------------- the hottest region

def hottest_region(heatmap: np.ndarray, threshold: float = 0.5) -> tuple[Box, np.ndarray] | None:
    """The connected region of heatmap >= threshold * max that holds the maximum: (bounding box, mask)."""
    if not heatmap.size or heatmap.max() <= 0:
        return None
    binary = (heatmap >= threshold * heatmap.max()).astype(np.uint8)
    _, components, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    label = components[y, x]
    left, top, width, height = (float(v) for v in stats[label, :4])
    return (left, top, width, height), components == label


def outline(picture: np.ndarray, region: tuple[Box, np.ndarray], colour=(255, 255, 255)) -> np.ndarray:
    """Draw the hottest region's contour and bounding box on an RGB picture (a copy)."""
    (x, y, w, h), mask = region
    drawn = picture.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(picture.shape[:2]) / 300))
    cv2.drawContours(drawn, contours, -1, colour, thickness)
    cv2.rectangle(drawn, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), colour, thickness)
    return drawn
