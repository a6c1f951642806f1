"""The one image path: file -> one-channel float32 image (0-255) -> letterboxed model input.

Training (train/pipeline.py), export validation, the app and the batch command
all call `load_for_model`, so a model sees at serving time exactly the tensor
it saw in training.

Decoding:
  * PNG (8/16-bit; gray, RGB, RGBA, palette), JPEG (EXIF orientation applied,
    CMYK), BMP and TIFF (8/16-bit, float) through Pillow; colour is reduced to
    luma. Pillow reduces 16-bit *colour* PNG to 8 bits per channel; 16-bit
    grayscale, the radiograph case, keeps its full depth.
  * DICOM through pydicom: first frame of a multi-frame file, Modality LUT
    (Rescale Slope/Intercept), then the VOI LUT sequence or Window
    Center/Width when present, MONOCHROME1 inverted so bone is bright.
Scaling to 0-255: 8-bit data is kept as it is (the public datasets are 8-bit
and models train on raw values); deeper data uses the DICOM window when there
is one, else the 0.5th-99.5th percentile range, so 12/16-bit dynamic range is
mapped, not clipped at 255.

Every failure raises `ImageLoadError` (a ValueError) whose message says what
was wrong and what is accepted; no other exception type escapes.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Source = Union[str, os.PathLike, bytes]

MAX_PIXELS = 100_000_000  # per frame; a header claiming more is refused before decoding
MIN_SIDE = 16
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also opens multi-picture (MPO) files from cameras
ACCEPTED = (
    "accepted: PNG (8/16-bit), JPEG, BMP, TIFF (8/16-bit) or DICOM, "
    f"at least {MIN_SIDE}x{MIN_SIDE} pixels and at most {MAX_PIXELS // 1_000_000} megapixels"
)
PERCENTILES = (0.5, 99.5)

Image.MAX_IMAGE_PIXELS = None  # our own MAX_PIXELS check runs first, with a clearer message


class ImageLoadError(ValueError):
    """An input that is not a readable radiograph; the message says why and what is accepted."""

    def __init__(self, problem: str, name: str = "input"):
        super().__init__(f"{name}: {problem}; {ACCEPTED}.")
        self.problem = problem


def read_image(source: Source, name: str | None = None) -> np.ndarray:
    """Decode a file (path or bytes) to a 2-D float32 image with values in [0, 255]."""
    name = name or (Path(source).name if not isinstance(source, bytes) else "input")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if not data:
            raise ImageLoadError("the file is empty (0 bytes)", name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoders warn about oddities; only errors matter here
            image = _decode_dicom(data, name) if _is_dicom(data, name) else _decode_pil(data, name)
        height, width = image.shape
        if min(height, width) < MIN_SIDE:
            raise ImageLoadError(f"the image is only {width}x{height} pixels", name)
        return image
    except ImageLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - the contract: one error type out (MemoryError included)
        raise ImageLoadError(f"could not be decoded ({type(error).__name__}: {error})", name) from error


def _is_dicom(data: bytes, name: str) -> bool:
    return data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def _check_size(width: int, height: int, name: str) -> None:
    if width < 1 or height < 1:
        raise ImageLoadError(f"the header gives an empty image ({width}x{height})", name)
    if width * height > MAX_PIXELS:
        raise ImageLoadError(f"the header claims {width}x{height} pixels ({width * height / 1e6:.0f} megapixels)", name)


def _decode_pil(data: bytes, name: str) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError("not a recognised image: no complete PNG, JPEG, BMP, TIFF or DICOM header in it "
                             "(the file name does not matter)", name) from None
    except Exception as error:  # truncated header, ...
        raise ImageLoadError(f"not a readable image ({type(error).__name__}: {error})", name) from error
    _check_size(*image.size, name)
    image = ImageOps.exif_transpose(image)  # decodes the first frame; raises on truncated data
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _scale_to_255(np.asarray(image, dtype=np.float32), name)
    if image.mode != "L":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent = no signal
            image = Image.alpha_composite(background, image)
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:
        raise ImageLoadError(f"not a readable DICOM file ({error})", name) from error
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError("the DICOM file has no pixel data (no image in it)", name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), name)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        pixels = pydicom.pixels.pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        if syntax is not None and syntax.is_compressed:
            raise ImageLoadError(
                f"its transfer syntax {syntax.name} is compressed and no installed decoder handles it "
                "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg adds JPEG, JPEG-LS and JPEG 2000)",
                name,
            ) from error
        raise ImageLoadError(f"its pixel data could not be decoded ({error})", name) from error
    if pixels.ndim == 3:  # colour (RGB after pydicom's YBR conversion): luma
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = apply_modality_lut(pixels, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        pixels = apply_voi_lut(np.round(pixels).astype(np.int64), ds, prefer_lut=True)  # a LUT takes integers
        bits = int(lut.LUTDescriptor[2]) or 16
        image = np.clip(pixels / (2.0**bits - 1.0), 0.0, 1.0) * 255.0
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        image = _linear_window(pixels, _first(ds.WindowCenter), _first(ds.WindowWidth))
    elif int(ds.get("BitsStored", 16)) == 8 and pixels.min() >= 0 and pixels.max() <= 255:
        image = pixels  # 8-bit data is kept as it is, as for PNG and JPEG
    else:
        image = _scale_to_255(pixels, name)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # low values are bright
        image = 255.0 - image
    return image.astype(np.float32)


def _first(value) -> float:
    """The first of a possibly multi-valued DICOM number (Window Center may list several)."""
    return float(np.atleast_1d(np.asarray(value, dtype=np.float64))[0])


def _linear_window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear VOI function, mapped to 0-255."""
    scaled = (pixels - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0) * 255.0


def _scale_to_255(pixels: np.ndarray, name: str) -> np.ndarray:
    """Map deep (16-bit, float) data to 0-255 by its robust range (8-bit data never comes here)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    finite = np.isfinite(pixels)
    if not finite.any():
        raise ImageLoadError("the image holds no finite pixel values (all NaN or infinite)", name)
    if not finite.all():
        pixels = np.where(finite, pixels, np.min(pixels[finite]))
    low, high = np.percentile(pixels, PERCENTILES)
    if high <= low:
        return np.zeros(pixels.shape, np.float32)
    return (np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.float32)


@dataclass(frozen=True)
class FeatureGrid:
    """Where a feature map's cells sit on the square model input: cell (i, j) is centred on the input point
    (first[0] + i * stride[0], first[1] + j * stride[1]), in input pixels (pixel k spans [k, k + 1]).

    The centre is the cell's receptive-field centre (radiograph.cam.feature_grid works it out from the
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
    def from_card(cls, card: dict) -> "FeatureGrid | None":
        """The card's `cam_grid`; None for cards written before it was recorded (the nominal tiling is used)."""
        grid = card.get("cam_grid")
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

    def to_original(self, heatmap: np.ndarray, grid: FeatureGrid | None = None) -> np.ndarray:
        """Map a map over the model input back onto the original image: each original pixel's centre is
        placed on the model input and the map is interpolated linearly between its cells' centres (`grid`;
        default: cells tiling the input evenly)."""
        heatmap = np.asarray(heatmap, dtype=np.float32)
        grid = grid or FeatureGrid.nominal(heatmap.shape, self.size)
        height, width = self.original
        ys = self.top + (np.arange(height) + 0.5) * (self.height / height)  # original pixel centres on the input
        xs = self.left + (np.arange(width) + 0.5) * (self.width / width)
        return grid.sample(heatmap, ys, xs)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio so the longer side is `size`, centred on a black square."""
    height, width = image.shape
    scale = size / max(height, width)
    new_height = max(1, min(size, round(height * scale)))
    new_width = max(1, min(size, round(width * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    canvas = np.zeros((size, size), np.float32)
    canvas[top:top + new_height, left:left + new_width] = resized
    return canvas, Letterbox((height, width), size, scale, top, left, new_height, new_width)


def load_for_model(source: Source, size: int, name: str | None = None) -> tuple[np.ndarray, Letterbox, np.ndarray]:
    """The serving and training input: (float32 [size, size, 1] in 0-255, geometry, original image)."""
    image = read_image(source, name)
    boxed, geometry = letterbox(image, size)
    return boxed[..., None], geometry, image


__all__ = ["FeatureGrid", "ImageLoadError", "Letterbox", "letterbox", "load_for_model", "read_image", "ACCEPTED", "MAX_PIXELS"]
