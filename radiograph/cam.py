"""Class activation maps from the ONNX `features` output, and overlays on the user's image.

With the head feature map -> GlobalAveragePooling -> Dense, Grad-CAM on a
class's logit equals ReLU(features @ W[:, c]) up to a positive scale (the
gradient of the logit with respect to each feature-map cell is W[:, c] / (h*w)),
so serving computes it from one matrix product on the features ONNX Runtime
already returned. W is the Dense kernel, read from the fp32 ONNX file.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from radiograph.imaging import Letterbox


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


def class_activation_map(features: np.ndarray, kernel: np.ndarray, class_index: int) -> np.ndarray:
    """ReLU(features @ W[:, c]) for one image's features [h, w, K]; [h, w], not normalised."""
    return np.maximum(features.astype(np.float32) @ kernel[:, class_index], 0.0)


def normalise(heatmap: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale to [0, 1]; a map with no positive evidence stays all zero (and is reported as flat)."""
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if not np.isfinite(peak) or peak <= 1e-12:
        return np.zeros_like(heatmap, dtype=np.float32), True
    return (heatmap / peak).astype(np.float32), False


def on_original(heatmap: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """The [0, 1] map over the model input, mapped onto the original image's pixels."""
    return np.clip(geometry.to_original(heatmap), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray | None, opacity: float = 0.4) -> np.ndarray:
    """RGB uint8: the grayscale image with a colour map blended where the heatmap is warm."""
    gray = np.clip(image, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if heatmap is None or not 0 < opacity:
        return rgb
    colours = cv2.cvtColor(cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    weight = (np.clip(opacity, 0, 1) * np.clip(heatmap, 0, 1))[..., None]  # cold regions keep the film visible
    return (rgb * (1 - weight) + colours * weight).round().astype(np.uint8)
