"""Class activation maps from the ONNX `features` output, and overlays on the user's image.

With the head feature map -> GlobalAveragePooling -> Dense, Grad-CAM on a
class's logit equals ReLU(features @ W[:, c]) up to a positive scale (the
gradient of the logit with respect to each feature-map cell is W[:, c] / (h*w)),
so serving computes it from one matrix product on the features ONNX Runtime
already returned. W is the Dense kernel, read from the fp32 ONNX file. A class
scored against an alternative (the card's heatmap_versus: logit_c - logit_a) is
the same product with W[:, c] - W[:, a]: `cam_kernel` folds the scores in.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from radiograph.imaging import FeatureGrid, Letterbox


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


# Layers that keep a map's grid as it is (elementwise, per-pixel or channel-wise); anything else that is not a
# convolution, pooling, padding or mirror layer is refused, so a new kind of layer cannot shift maps silently.
_SAME_GRID = {"Activation", "ReLU", "BatchNormalization", "LayerNormalization", "Rescaling", "Normalization",
              "Dropout", "SpatialDropout2D", "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
              "Minimum", "MirrorPair", "StitchViews", "Identity"}
_WINDOWED = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D"}
_GLOBAL = {"GlobalAveragePooling2D", "GlobalMaxPooling2D"}


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _inputs(layer: dict) -> list[tuple[str, list]]:
    """(producing layer, shape) of every tensor a layer's first call takes."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append((value["config"]["keras_history"][0], value["config"]["shape"]))
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(layer["inbound_nodes"][:1])
    return found


def feature_grid(config: dict, layer: str = "features") -> FeatureGrid:
    """Where the cells of `layer`'s map sit on the model input, from a Keras functional model's config (the
    `config.json` of a .keras file or `model.get_config()`; no TensorFlow needed).

    Each cell is placed on its receptive field's centre, followed layer by layer: a window of k pixels
    (dilated), stride s and padding p before the first window moves the first cell's centre by
    ((k - 1) / 2 - p) input cells and multiplies the stride by s. After MirrorAverage (a map averaged with
    its mirror image's map, mirrored back, columns paired with an offset) a column is the mean of two
    columns of centres, one from each view, so its centre is the mean of theirs: the grid is centred on the
    input. After Stitch (the maps of four views moved by -+shift interleaved) the stride halves.
    """
    config = config.get("config", config)
    (image,) = [name for name, *_ in config["input_layers"]] if isinstance(config["input_layers"][0], list) \
        else [config["input_layers"][0]]
    grids: dict[str, tuple | None] = {}  # layer -> (stride y, stride x, first y, first x); None: no grid (global)
    input_width = None
    for entry in config["layers"]:
        name, kind, settings = entry["name"], entry["class_name"], entry["config"]
        inputs = _inputs(entry)
        if kind == "InputLayer":
            grids[name] = (1.0, 1.0, 0.5, 0.5)
            input_width = settings["batch_shape"][2] if name == image else input_width
            continue
        spatial = [(grids[source], shape) for source, shape in inputs if grids.get(source) is not None]
        if not spatial or kind in _GLOBAL or kind in ("Dense", "Flatten", "Reshape"):
            grids[name] = None
        elif kind in _SAME_GRID:
            placed = {grid for grid, _ in spatial}
            if len({grid[:2] for grid in placed}) > 1:
                raise ValueError(f"layer {name} merges maps of different strides {sorted(placed)}")
            grids[name] = tuple(float(np.mean([grid[k] for grid in placed])) for k in range(4))
        elif kind == "ZeroPadding2D":
            (grid, _), = spatial
            (top, _), (left, _) = (_pair(p) for p in _pair_of_pairs(settings["padding"]))
            grids[name] = (grid[0], grid[1], grid[2] - top * grid[0], grid[3] - left * grid[1])
        elif kind == "Cropping2D":
            (grid, _), = spatial
            (top, _), (left, _) = (_pair(p) for p in _pair_of_pairs(settings["cropping"]))
            grids[name] = (grid[0], grid[1], grid[2] + top * grid[0], grid[3] + left * grid[1])
        elif kind in _WINDOWED:
            (grid, shape), = spatial
            kernel = _pair(settings.get("kernel_size") or settings["pool_size"])
            strides = _pair(settings.get("strides") or kernel)
            dilation = _pair(settings.get("dilation_rate", 1))
            moved = []
            for axis in (0, 1):
                window = dilation[axis] * (kernel[axis] - 1) + 1
                before = 0
                if settings["padding"] == "same":  # TensorFlow's rule: the odd pixel of padding goes after
                    cells = -(-shape[1 + axis] // strides[axis])
                    before = max((cells - 1) * strides[axis] + window - shape[1 + axis], 0) // 2
                moved.append(grid[2 + axis] + grid[axis] * ((window - 1) / 2 - before))
            grids[name] = (grid[0] * strides[0], grid[1] * strides[1], *moved)
        elif kind == "MirrorAverage":  # columns paired across the views: centred on the input, a symmetric grid
            (grid, shape), = spatial
            columns = shape[2] + settings.get("offset", 0)
            grids[name] = (grid[0], grid[1], grid[2], (input_width - (columns - 1) * grid[1]) / 2)
        elif kind == "Stitch":  # four grids moved by -+shift, interleaved: half the stride
            (grid, _), = spatial
            shift = settings["shift"]
            if not grid[0] == grid[1] == 4 * shift:
                raise ValueError(f"layer {name} stitches views shifted by {shift} px over a stride of "
                                 f"{grid[:2]}: they interleave into one grid only when the shift is a quarter "
                                 "of the stride")
            grids[name] = (grid[0] / 2, grid[1] / 2, grid[2] - shift, grid[3] - shift)
        else:
            raise ValueError(f"cannot place the feature map's cells: layer {name} ({kind}) is not one whose "
                             "effect on the grid is known")
        if name == layer:
            stride_y, stride_x, first_y, first_x = grids[name]
            return FeatureGrid((stride_y, stride_x), (first_y, first_x))
    raise ValueError(f"the model has no layer {layer!r} with a spatial map")


def _pair_of_pairs(value) -> tuple:
    """Keras padding/cropping: int, (vertical, horizontal), or ((top, bottom), (left, right))."""
    if isinstance(value, int):
        return (value, value), (value, value)
    return tuple(value)


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


def on_original(heatmap: np.ndarray, geometry: Letterbox, grid: FeatureGrid | None = None,
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """The [0, 1] map over the model input, mapped onto the original image's pixels (cells placed by `grid`), or
    onto those of a copy of the whole original at another `shape` (the display copy)."""
    return np.clip(geometry.to_original(heatmap, grid, shape), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray | None, opacity: float = 0.4) -> np.ndarray:
    """RGB uint8: the grayscale image with a colour map blended where the heatmap is warm."""
    gray = np.clip(image, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if heatmap is None or not 0 < opacity:
        return rgb
    colours = cv2.cvtColor(cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    weight = (np.float32(np.clip(opacity, 0, 1)) * np.clip(heatmap, 0, 1).astype(np.float32))[..., None]
    blended = colours.astype(np.float32)  # rgb + (colours - rgb) * weight, in place: cold regions keep the film
    blended -= rgb
    blended *= weight
    blended += rgb
    return np.rint(blended, out=blended).astype(np.uint8)


# ----------------------------------------------------------------------------- the hottest region, and localisation

Box = tuple[float, float, float, float]  # x, y, width, height in original-image pixels


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
