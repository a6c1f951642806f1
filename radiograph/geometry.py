"""Where things sit: the model input, the original image and the feature map's cells.

  * `Letterbox`: where an image of some size sits inside the square model input
    (radiograph.imaging.letterbox makes it), and `Letterbox.to_original`, which
    maps a map over the input back onto the original image's pixels;
  * `FeatureGrid`: where a feature map's cells are centred on the model input,
    and `feature_grid`, which works that out from a Keras functional model's
    config by following each cell's receptive field layer by layer (no
    TensorFlow needed);
  * `on_original`: a [0, 1] class activation map placed on the original image;
  * `Box`: an (x, y, width, height) box in original-image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]  # x, y, width, height in original-image pixels


@dataclass(frozen=True)
class FeatureGrid:
    """Where a feature map's cells sit on the square model input: cell (i, j) is centred on the input point
    (first[0] + i * stride[0], first[1] + j * stride[1]), in input pixels (pixel k spans [k, k + 1]).

    The centre is the cell's receptive-field centre (`feature_grid` below works it out from the
    network's kernels, strides and paddings). It is not always the middle of the input tile the cell
    nominally covers: "same" padding of an even input pads one pixel more after than before, so each
    stride-2 stage moves the centre half a pixel of its input down and right, and MobileNetV3's stride-16
    map sits 7.5 input pixels off its nominal tiling.
    """

    stride: tuple[float, float]
    first: tuple[float, float]

    @classmethod
    def nominal(cls, cells: tuple[int, int], size: int) -> "FeatureGrid":
        """Cells tiling the input evenly, each centred on its tile (what a plain resize assumes)."""
        stride = (size / cells[0], size / cells[1])
        return cls(stride, (stride[0] / 2, stride[1] / 2))

    @classmethod
    def from_card(cls, card) -> "FeatureGrid | None":
        """The card's `cam_grid`; None for cards written before it was recorded (the nominal tiling is used)."""
        grid = card.cam_grid
        return cls(tuple(grid["stride"]), tuple(grid["first_cell_centre"])) if grid else None

    def sample(self, heatmap: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The map [h, w] at model-input points (rows `ys`, columns `xs`, in input pixels): linear between its
        cells' centres, constant beyond the outermost ones."""
        rows = _linear_weights((ys - self.first[0]) / self.stride[0], heatmap.shape[0])
        columns = _linear_weights((xs - self.first[1]) / self.stride[1], heatmap.shape[1])
        return (rows @ np.asarray(heatmap, np.float32)) @ columns.T

    def onto_input(self, heatmap: np.ndarray, size: int) -> np.ndarray:
        """The map at every pixel centre of the square model input [size, size]."""
        centres = np.arange(size) + 0.5
        return self.sample(heatmap, centres, centres)

    def as_card(self) -> dict:
        return {"stride": list(self.stride), "first_cell_centre": list(self.first),
                "units": "model-input pixels; cell (i, j) is centred on first + (i, j) * stride"}


def _linear_weights(coordinates: np.ndarray, cells: int) -> np.ndarray:
    """[n, cells]: linear interpolation of a row of `cells` values at fractional cell coordinates, clamped at
    the first and last cell's centres."""
    position = np.clip(coordinates, 0, cells - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((len(position), cells), np.float32)
    rows = np.arange(len(position))
    np.add.at(weights, (rows, low), 1 - (position - low))
    np.add.at(weights, (rows, high), position - low)
    return weights


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `original` (height, width) sits inside the square model input."""

    original: tuple[int, int]
    size: int
    scale: float
    top: int
    left: int
    height: int  # of the resized image inside the square
    width: int

    def to_original(self, heatmap: np.ndarray, grid: FeatureGrid | None = None,
                    shape: tuple[int, int] | None = None) -> np.ndarray:
        """Map a map over the model input back onto the original image: each original pixel's centre is
        placed on the model input and the map is interpolated linearly between its cells' centres (`grid`;
        default: cells tiling the input evenly). `shape`: the pixels of a copy of the whole original at
        another size (the display copy) instead of the original's own."""
        heatmap = np.asarray(heatmap, dtype=np.float32)
        grid = grid or FeatureGrid.nominal(heatmap.shape, self.size)
        height, width = shape or self.original
        ys = self.top + (np.arange(height) + 0.5) * (self.height / height)  # original pixel centres on the input
        xs = self.left + (np.arange(width) + 0.5) * (self.width / width)
        return grid.sample(heatmap, ys, xs)


def on_original(heatmap: np.ndarray, geometry: Letterbox, grid: FeatureGrid | None = None,
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """The [0, 1] map over the model input, mapped onto the original image's pixels (cells placed by `grid`), or
    onto those of a copy of the whole original at another `shape` (the display copy)."""
    return np.clip(geometry.to_original(heatmap, grid, shape), 0.0, 1.0)


# ----------------------------------------------------------------------------- the feature grid of a Keras model

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
        if kind == "InputLayer":
            grids[name] = (1.0, 1.0, 0.5, 0.5)
            input_width = settings["batch_shape"][2] if name == image else input_width
            continue
        spatial = [(grids[source], shape) for source, shape in _inputs(entry) if grids.get(source) is not None]
        grids[name] = _placed(name, kind, settings, spatial, input_width)
        if name == layer:
            stride_y, stride_x, first_y, first_x = grids[name]
            return FeatureGrid((stride_y, stride_x), (first_y, first_x))
    raise ValueError(f"the model has no layer {layer!r} with a spatial map")


def _placed(name: str, kind: str, settings: dict, spatial: list, input_width) -> tuple | None:
    """One layer's output grid (stride y, stride x, first y, first x) from its spatial inputs' (grid, shape)."""
    if not spatial or kind in _GLOBAL or kind in ("Dense", "Flatten", "Reshape"):
        return None
    if kind in _SAME_GRID:
        return _merged(name, {grid for grid, _ in spatial})
    (grid, shape), = spatial
    if kind in ("ZeroPadding2D", "Cropping2D"):  # padding moves the first cell back, cropping forward
        sign = -1 if kind == "ZeroPadding2D" else 1
        (top, _), (left, _) = (_pair(p) for p in _pair_of_pairs(settings["padding" if sign < 0 else "cropping"]))
        return grid[0], grid[1], grid[2] + sign * top * grid[0], grid[3] + sign * left * grid[1]
    if kind in _WINDOWED:
        return _windowed(grid, shape, settings)
    if kind == "MirrorAverage":  # columns paired across the views: centred on the input, a symmetric grid
        columns = shape[2] + settings.get("offset", 0)
        return grid[0], grid[1], grid[2], (input_width - (columns - 1) * grid[1]) / 2
    if kind == "Stitch":  # four grids moved by -+shift, interleaved: half the stride
        shift = settings["shift"]
        if not grid[0] == grid[1] == 4 * shift:
            raise ValueError(f"layer {name} stitches views shifted by {shift} px over a stride of {grid[:2]}: "
                             "they interleave into one grid only when the shift is a quarter of the stride")
        return grid[0] / 2, grid[1] / 2, grid[2] - shift, grid[3] - shift
    raise ValueError(f"cannot place the feature map's cells: layer {name} ({kind}) is not one whose "
                     "effect on the grid is known")


def _merged(name: str, placed: set) -> tuple:
    """Elementwise layers over maps of one stride: the mean of their first cells' centres."""
    if len({grid[:2] for grid in placed}) > 1:
        raise ValueError(f"layer {name} merges maps of different strides {sorted(placed)}")
    return tuple(float(np.mean([grid[k] for grid in placed])) for k in range(4))


def _windowed(grid: tuple, shape: list, settings: dict) -> tuple:
    """A convolution or pooling window: the first centre moves by (window - 1) / 2 - padding before, the stride
    multiplies."""
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
    return grid[0] * strides[0], grid[1] * strides[1], *moved


def _pair_of_pairs(value) -> tuple:
    """Keras padding/cropping: int, (vertical, horizontal), or ((top, bottom), (left, right))."""
    if isinstance(value, int):
        return (value, value), (value, value)
    return tuple(value)
