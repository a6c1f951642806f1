"""Heatmaps for served predictions: Keras Grad-CAM where TensorFlow is installed, the ONNX CAM path otherwise.

    explainer = Explainer(OnnxModel("models/knee"))      # path "auto": keras if importable, else onnx
    heatmap, flat = explainer.heatmap(batch, output.features[0], class_index)
    heatmaps, flat = explainer.heatmaps(batch, output.features[0])   # every class at once: [C, h, w]
    explainer.path                                        # "keras-gradcam", "keras-gradcam++" or "onnx-cam"
    explainer.methods                                     # ("gradcam", "gradcam++") on the Keras path, else ("gradcam",)
    explainer.heatmaps_by_method(batch, features)         # {method: ([C, h, w], flat)}: one Jacobian for both

Both give the same map for Grad-CAM (tests/test_gradcam.py proves it within
1e-4 after normalisation), so the light install (onnxruntime, no TensorFlow)
loses nothing but Grad-CAM++. The Keras model file is verified against the
card like the ONNX file, and loaded with safe_mode=True.
"""
from __future__ import annotations

import numpy as np

from radiograph.cam import (METHODS, cam_kernel, class_activation_map, class_activation_maps, normalise, normalise_each,
                            score_matrix)
from radiograph.inference import OnnxModel

CAM_PATHS = ("auto", "keras", "onnx")


def tensorflow_available() -> bool:
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


class Explainer:
    def __init__(self, model: OnnxModel, path: str = "auto", method: str = "gradcam"):
        if path not in CAM_PATHS:
            raise ValueError(f"path must be one of {', '.join(CAM_PATHS)}, got {path!r}")
        self.model = model
        self.kernel = cam_kernel(model.card.verify(model.folder, "model.onnx"), model.card)
        self.gradcam = None
        if path == "keras" or (path == "auto" and tensorflow_available()):
            from radiograph.gradcam import GradCam
            from radiograph.layers import load_model

            keras_file = model.card.verify(model.folder, "model.keras")
            self.gradcam = GradCam(load_model(keras_file), method,
                                   score_matrix(model.labels, model.card.heatmap_versus))
        elif method != "gradcam":
            raise ValueError(f"{method} needs TensorFlow (the Keras path); the ONNX path computes Grad-CAM")
        self.path = f"keras-{method}" if self.gradcam else "onnx-cam"
        self.methods = METHODS if self.gradcam else ("gradcam",)

    def method_path(self, method: str) -> str:
        """What computes `method`'s maps here: "keras-gradcam", "keras-gradcam++" or "onnx-cam"."""
        if method not in self.methods:
            raise ValueError(f"heatmap method {method!r} is not available here; available: {', '.join(self.methods)}"
                             + ("" if self.gradcam else " (Grad-CAM++ needs TensorFlow, the Keras path)"))
        return f"keras-{method}" if self.gradcam else "onnx-cam"

    def heatmap(self, image: np.ndarray, features: np.ndarray | None, class_index: int) -> tuple[np.ndarray, bool]:
        """The [0, 1] map over the model input's grid for one image ([1, H, W, 1]); flat maps stay zero."""
        if self.gradcam is not None:
            return normalise(self.gradcam(image, class_index)[0])
        if features is None:
            raise ValueError("the ONNX path needs the `features` output of the same image")
        return normalise(class_activation_map(features, self.kernel, class_index))

    def heatmaps(self, image: np.ndarray, features: np.ndarray | None) -> tuple[np.ndarray, list[bool]]:
        """Every class's [0, 1] map for one image ([1, H, W, 1]) in one call: [C, h, w] and which are flat."""
        if self.gradcam is not None:
            return normalise_each(self.gradcam.every_class(image))
        if features is None:
            raise ValueError("the ONNX path needs the `features` output of the same image")
        return normalise_each(class_activation_maps(features, self.kernel))

    def heatmaps_by_method(self, image: np.ndarray, features: np.ndarray | None) -> dict[str, tuple[np.ndarray, list[bool]]]:
        """`heatmaps` by every method this path offers ({"gradcam": ..., "gradcam++": ...} on the Keras path, from
        one forward pass and one Jacobian; {"gradcam": ...} on the ONNX path)."""
        if self.gradcam is not None:
            return {method: normalise_each(maps) for method, maps in self.gradcam.every_class_by_method(image).items()}
        return {"gradcam": self.heatmaps(image, features)}
