"""The one image path: file -> one-channel float32 image (0-255) -> letterboxed model input.

Training, export validation, the app and the batch command
all call `load_for_model`, so a model sees at serving time exactly the tensor
it saw in training.

Decoding (the format comes from the file's bytes, never from its name):
  * PNG (8/16-bit; gray, RGB, RGBA, palette), JPEG (EXIF orientation applied,
    CMYK), BMP and TIFF (8/16-bit, float) through Pillow; colour is reduced to
    luma. Pillow reduces 16-bit *colour* PNG to 8 bits per channel; 16-bit
    grayscale, the radiograph case, keeps its full depth.
  * DICOM through pydicom: the first frame only, Modality LUT (Rescale
    Slope/Intercept or a LUT), then the VOI LUT sequence or Window
    Center/Width when present, MONOCHROME1 inverted so bone is bright.
Scaling to 0-255: 8-bit data is kept as it is (the public datasets are 8-bit
and models train on raw values); deeper data uses the DICOM window when there
is one, else the 0.5th-99.5th percentile range, so 12/16-bit dynamic range is
mapped, not clipped at 255.

Bounded cost, whatever a header claims (docs/input-budget.md has the figures):
  * a file of at most MAX_FILE_BYTES, an image of at most MAX_PIXELS, both
    checked before any pixel is allocated;
  * PNG chunks are walked first (lengths, CRCs, nothing after IEND) and JPEG
    entropy data is decoded strictly (libjpeg-turbo through simplejpeg, at
    1/8 scale), so truncated or corrupt data is refused, never half analysed;
  * a JPEG too big for the display is decoded straight to reduced scale;
  * DICOM: deflated data sets are inflated to a bounded length, the pixel data
    must hold every frame the header claims, and only the first frame is
    decoded; untrustworthy numbers (non-finite or zero Rescale Slope) are
    refused, an invalid window is ignored with a note;
  * one full-size float copy at most; the caller keeps only the model input
    and a display copy of at most DISPLAY_SIDE pixels a side.

Every failure raises `ImageLoadError` (a ValueError) whose message says what
was wrong and what is accepted; no other exception type escapes.

Where the image sits in the model input (`Letterbox`, which `letterbox`
returns) and how maps go back onto it live in radiograph.geometry.
"""
from __future__ import annotations

import dataclasses
import io
import itertools
import math
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radiograph.geometry import Letterbox

Source = Union[str, os.PathLike, bytes]

# A 43 x 43 cm flat-panel detector at 0.1 mm is 4300 x 4300 = 18.5 megapixels; 50-micron mammography
# (24 x 30 cm) is about 28.8. 30 megapixels admits both; a full-size float copy of it is 120 MB, which
# keeps one decode inside DECODE_BUDGET_BYTES with the worst pixel format (4 bytes a pixel) alongside.
MAX_PIXELS = 30_000_000
MAX_FILE_BYTES = 50 * 2**20  # per file; the app's upload limit is the same
MAX_VIEWS = 12  # files of one study in one request (MURA's largest studies have 11 views); a PACS study's too
MAX_REQUEST_BYTES = 200 * 2**20  # all files of one request together (app uploads cut off at the socket; PACS fetches)
DECODE_BUDGET_BYTES = 400 * 2**20  # the peak memory one file may add to a process (tests/test_hostile.py holds it)
DISPLAY_SIDE = 2048  # the longest side of what is kept for display and overlays
MAX_INFLATED_DICOM = 2 * MAX_PIXELS + 16 * 2**20  # a deflated data set: one 16-bit frame of MAX_PIXELS and metadata
MIN_SIDE = 16
MAX_STRIPS = 16384  # TIFF strips or tiles: one-row strips of a 16,384-row film; a million of them take seconds
# Structure a decoder walks one piece at a time in Python: millions of empty pieces fit in 50 MB and cost tens of
# seconds and gigabytes. Real files have a few (JPEG markers before the scan), hundreds (DICOM elements) or a
# few thousand (PNG chunks of 8 kB image data in a 50 MB file).
MAX_JPEG_MARKERS = 1024  # segments before the first scan
MAX_PNG_CHUNKS = 20000
MAX_DICOM_ELEMENTS = 20000  # top-level elements
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also opens multi-picture (MPO) files from cameras
ACCEPTED = (
    "accepted: PNG (8/16-bit), JPEG, BMP, TIFF (8/16-bit) or DICOM, "
    f"at least {MIN_SIDE}x{MIN_SIDE} pixels, at most {MAX_PIXELS // 1_000_000} megapixels "
    f"and {MAX_FILE_BYTES // 2**20} MB"
)
PERCENTILES = (0.5, 99.5)
PERCENTILE_SAMPLE = 8_000_000  # float images larger than this take their range from an even subsample

Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb guard, for every image this process opens

SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
              b"II+\x00": "TIFF", b"MM\x00+": "TIFF", b"BM": "BMP"}
NOT_ACCEPTED = {b"GIF8": "a GIF image", b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive",
                b"RIFF": "a RIFF file (WebP, WAV or AVI)", b"<svg": "an SVG drawing", b"<?xml": "an XML document",
                b"<!DOCTYPE": "an HTML page", b"<html": "an HTML page", b"\x00\x00\x00\x0cjP": "a JPEG 2000 image"}
# libjpeg warnings that leave every pixel decoded (anything else means missing or corrupt image data)
HARMLESS_JPEG_WARNINGS = ("extraneous bytes", "JFIF", "ICC", "Adobe", "unknown APP", "Unsupported marker")


class ImageLoadError(ValueError):
    """An input that is not a readable radiograph; the message says why and what is accepted."""

    def __init__(self, problem: str, name: str = "input"):
        super().__init__(f"{name}: {problem}; {ACCEPTED}.")
        self.problem = problem


class Decoded(NamedTuple):
    """A decoded file: the image (2-D float32, 0-255), the file's own size (height, width; larger than the
    image's where it was decoded at reduced scale), and notes about values the loader did not trust and worked
    around."""

    image: np.ndarray
    original: tuple[int, int]
    notes: tuple[str, ...] = ()
    colourfulness: float = 0.0  # of the file's colour channels before they became luma (0: gray); see Colourfulness
    dicom: dict | None = None  # a DICOM file's SHOWN_TAGS (present ones only); never an IDENTIFYING_TAGS value
    header: object = None  # a DICOM file's identity (pydicom Dataset, no pixel data; see dicom_header), else None


def read_image(source: Source, name: str | None = None) -> np.ndarray:
    """Decode a file (path or bytes) to a 2-D float32 image with values in [0, 255]."""
    return decode(source, name).image


def decode(source: Source, name: str | None = None, reduce_to: int | None = None) -> Decoded:
    """Decode a file (path or bytes). With `reduce_to`, formats that can (JPEG) decode straight to the smallest
    scale whose longer side is still at least `reduce_to` pixels."""
    name = name or (Path(source).name if not isinstance(source, bytes) else "input")
    try:
        data = _read_bytes(source, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoders warn about oddities; the checks here decide
            kind = sniff(data, name)
            decoded = _decode_dicom(data, name) if kind == "DICOM" else _decode_pil(data, name, kind, reduce_to)
        return decoded
    except ImageLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - the contract: one error type out (MemoryError included)
        raise ImageLoadError(f"could not be decoded ({type(error).__name__}: {_short(error)})", name) from error


def _short(error: Exception, limit: int = 200) -> str:
    """An error's text, cut to `limit` characters (a decoder may quote kilobytes of the file)."""
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."


def _read_bytes(source: Source, name: str) -> bytes:
    if isinstance(source, bytes):
        size = len(source)
    else:
        try:
            size = os.stat(source).st_size
        except OSError as error:
            raise ImageLoadError(f"could not be decoded (the file cannot be read: {error.strerror})", name) from None
    if size == 0:
        raise ImageLoadError("the file is empty (0 bytes)", name)
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(f"the file is {size / 2**20:.0f} MB", name)
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def sniff(data: bytes, name: str) -> str:
    """The file's format from its first bytes: PNG, JPEG, TIFF, BMP or DICOM (a DICOM file may lack the
    128-byte preamble; then only its name says so)."""
    if data[128:132] == b"DICM":
        return "DICOM"
    for signature, kind in SIGNATURES.items():
        if data.startswith(signature):
            return kind
    head = data[:16].lstrip()
    for signature, what in NOT_ACCEPTED.items():
        if head.startswith(signature):
            raise ImageLoadError(f"this is {what}, not a radiograph image", name)
    if name.lower().endswith((".dcm", ".dicom")) or "." not in Path(name).name:
        return "DICOM"
    raise ImageLoadError("not a recognised image: no complete PNG, JPEG, BMP, TIFF or DICOM header in it "
                         "(the file name does not matter)", name)


def _check_size(width: int, height: int, name: str, smallest: int = MIN_SIDE) -> None:
    if width < 1 or height < 1:
        raise ImageLoadError(f"the header gives an empty image ({width}x{height})", name)
    if min(width, height) < smallest:  # before decoding: a 1 x 30,000,000 strip costs more than its pixels
        raise ImageLoadError(f"the image is only {width}x{height} pixels", name)
    if width * height > MAX_PIXELS:
        raise ImageLoadError(f"the header claims {width}x{height} pixels ({width * height / 1e6:.0f} megapixels)", name)


# ----------------------------------------------------------------------------- PNG, JPEG, BMP, TIFF (Pillow)

def check_png_chunks(data: bytes, name: str) -> None:
    """Walk a PNG's chunks before decoding: each fits in the file and passes its CRC, IHDR comes first and
    once, IEND ends the file. (Pillow skips the CRC of image data and ignores what follows IEND.)"""
    position, chunks, palette, colour_type = 8, 0, False, None
    while position < len(data):
        if chunks >= MAX_PNG_CHUNKS:
            raise ImageLoadError(f"the PNG has more than {MAX_PNG_CHUNKS} chunks (real ones have at most a few "
                                 "thousand)", name)
        if position + 8 > len(data):
            raise ImageLoadError(f"the PNG is truncated: a chunk header is cut off at byte {position}", name)
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        label = kind.decode("latin-1")
        end = position + 12 + length
        if end > len(data):
            raise ImageLoadError(f"the PNG is truncated or corrupt: its {label!r} chunk claims {length} bytes, "
                                 f"but the file ends {len(data) - position - 8} bytes after its header", name)
        if zlib.crc32(data[position + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            raise ImageLoadError(f"the PNG is corrupt: its {label!r} chunk at byte {position} fails its CRC check",
                                 name)
        if (kind == b"IHDR") != (chunks == 0):
            raise ImageLoadError("the PNG is malformed: IHDR must be its first chunk, and only once", name)
        if kind == b"IHDR":
            _check_size(*struct.unpack(">II", data[position + 8:position + 16]), name)
            colour_type = data[position + 17] if length >= 13 else None
        palette = palette or kind == b"PLTE"
        if kind == b"IDAT" and colour_type == 3 and not palette:
            raise ImageLoadError("the PNG is malformed: a palette image with no palette (PLTE) before its data", name)
        chunks += 1
        if kind == b"IEND":
            if end != len(data):
                raise ImageLoadError(f"{len(data) - end} bytes follow the PNG's end (IEND): a file with another "
                                     "file appended to it is not accepted", name)
            return
        position = end
    raise ImageLoadError("the PNG is truncated: it has no IEND chunk", name)


def check_jpeg_markers(data: bytes, name: str) -> None:
    """Count the JPEG's segments up to its first scan (SOS) before Pillow reads them one by one in Python."""
    position, segments = 2, 0
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ImageLoadError(f"the JPEG is corrupt: no marker at byte {position} before its first scan", name)
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        segments += 1
        if segments > MAX_JPEG_MARKERS:
            raise ImageLoadError(f"the JPEG has more than {MAX_JPEG_MARKERS} segments before its image data (real "
                                 "ones have a few dozen)", name)
        if marker == 0xDA:  # start of scan: libjpeg-turbo takes it from here
            return
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]


def check_jpeg_data(data: bytes, name: str) -> None:
    """Decode a JPEG's entropy-coded data strictly (libjpeg-turbo, at 1/8 scale: every coefficient is still
    read) and refuse missing or corrupt data, which Pillow would fill with grey without a word."""
    import simplejpeg

    try:
        _, _, colour, _ = simplejpeg.decode_jpeg_header(data)
        simplejpeg.decode_jpeg(data, colorspace="CMYK" if colour in ("CMYK", "YCCK") else "GRAY", min_factor=8,
                               strict=True)
    except ValueError as error:
        if not any(harmless in str(error) for harmless in HARMLESS_JPEG_WARNINGS):
            raise ImageLoadError(f"its JPEG data is corrupt or truncated (libjpeg-turbo: {_short(error)}); a partly "
                                 "decoded image is not analysed", name) from None


def _decode_pil(data: bytes, name: str, kind: str, reduce_to: int | None) -> Decoded:
    if kind == "PNG":
        check_png_chunks(data, name)
    if kind == "JPEG":
        check_jpeg_markers(data, name)
    try:
        image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(f"not a readable {kind} image: its header is incomplete or corrupt", name) from None
    except Image.DecompressionBombError as error:
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        megapixels = f"{int(claimed[1]) / 1e6:.0f} megapixels" if claimed else "too many pixels"
        raise ImageLoadError(f"the header claims {megapixels}", name) from None
    except Exception as error:  # truncated header, ...
        raise ImageLoadError(f"not a readable image ({type(error).__name__}: {_short(error)})", name) from error
    _check_size(*image.size, name)
    _check_tiles(image, name)
    original = image.size[::-1]
    if image.format == "JPEG":
        check_jpeg_data(data, name)
        if reduce_to and max(image.size) >= 2 * reduce_to:  # decode at 1/2, 1/4 or 1/8 scale
            scale = reduce_to / max(image.size)
            image.draft(image.mode, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation with a quarter turn
        original = original[::-1]
    ImageOps.exif_transpose(image, in_place=True)  # decodes the first frame; raises on truncated data
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.asarray(image)
        image.close()
        return Decoded(_scale_to_255(pixels, name), original)
    if image.mode in ("I", "F"):  # 4 bytes a pixel: copied out in strips into one array the scaling may reuse
        return Decoded(_scale_to_255(_array_in_strips(image), name, reuse=True), original)
    colour = Colourfulness()
    return Decoded(np.asarray(_luma(image, colour), dtype=np.float32), original, (), colour.value())


def _check_tiles(image: Image.Image, name: str) -> None:
    """The strips or tiles of an uncompressed image must cover it (a header with more rows than its data
    would otherwise decode to zeros below the data)."""
    tiles = getattr(image, "tile", None) or []
    if len(tiles) > MAX_STRIPS:  # Pillow decodes each in turn (tens of microseconds each)
        raise ImageLoadError(f"its pixels are split into {len(tiles)} strips or tiles; at most {MAX_STRIPS} are "
                             "accepted", name)
    if image.format in ("TIFF", "BMP") and tiles and all(tile[0] == "raw" for tile in tiles):
        covered = sum((x1 - x0) * (y1 - y0) for _, (x0, y0, x1, y1), *_ in tiles)
        width, height = image.size
        if covered < width * height:
            raise ImageLoadError(f"its strips hold {covered} of the {width}x{height} pixels its header claims: "
                                 "truncated, or the header lies", name)


def _array_in_strips(image: Image.Image, rows: int = 256) -> np.ndarray:
    width, height = image.size
    image.load()
    out = np.empty((height, width), np.float32 if image.mode == "F" else np.int32)
    for top in range(0, height, rows):
        out[top:top + rows] = np.asarray(image.crop((0, top, width, min(height, top + rows))))
    image.close()
    return out


class Colourfulness:
    """Hasler and Suesstrunk's colourfulness (2003) of RGB pixels, accumulated strip by strip from a sample of
    every STRIDE-th row and column: sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), with rg = R - G and
    yb = (R + G) / 2 - B on the 0-255 scale. 0 for gray pixels; about 15 reads as "slightly colourful", 33
    "moderately", 59 "quite" (their scale). The input gate refuses colour content by it
    (radiograph.gate)."""

    STRIDE = 4

    def __init__(self):
        self.count, self.sums = 0, np.zeros(4, np.float64)  # sum rg, sum yb, sum rg^2, sum yb^2

    def add(self, sample: np.ndarray) -> None:
        """RGB pixels [h, w, 3] already sampled (the callers take every STRIDE-th row and column)."""
        sample = np.asarray(sample)[..., :3].astype(np.float32)
        if not sample.size:
            return
        rg = sample[..., 0] - sample[..., 1]
        yb = 0.5 * (sample[..., 0] + sample[..., 1]) - sample[..., 2]
        self.count += rg.size
        self.sums += [rg.sum(), yb.sum(), np.square(rg).sum(), np.square(yb).sum()]

    def value(self) -> float:
        if not self.count:
            return 0.0
        mean_rg, mean_yb, square_rg, square_yb = self.sums / self.count
        spread = max(square_rg - mean_rg ** 2, 0.0) + max(square_yb - mean_yb ** 2, 0.0)
        return float(np.sqrt(spread) + 0.3 * np.hypot(mean_rg, mean_yb))


def _luma(image: Image.Image, colour: Colourfulness | None = None, rows: int = 256) -> Image.Image:
    """An 8-bit gray image: colour reduced to luma, transparency composited over black (no signal), done in
    strips of `rows` so that no second full-size colour copy is made; `colour` accumulates the colourfulness
    of the strips."""
    if image.mode == "L":
        return image
    transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    gray = Image.new("L", image.size)
    width, height = image.size
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        if transparent:
            strip = strip.convert("RGBA")
            strip = Image.alpha_composite(Image.new("RGBA", strip.size, (0, 0, 0, 255)), strip)
        if colour is not None:  # a sample of the strip (every STRIDE-th pixel each way), converted on its own
            step = Colourfulness.STRIDE
            sample = strip.resize((max(1, width // step), max(1, strip.height // step)), Image.Resampling.NEAREST)
            colour.add(np.asarray(sample.convert("RGB")))
        gray.paste(strip.convert("L"), (0, top))
    image.close()
    return gray


# ----------------------------------------------------------------------------- DICOM (pydicom)

GRAY_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# What a result shows of a DICOM header (as evidence and context), and what never leaves the loader: no value of
# IDENTIFYING_TAGS is copied into a result, and any that a decoder quotes in an error is cut from its message.
SHOWN_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "PatientAge", "PhotometricInterpretation")
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
                    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
                    "MedicalRecordLocator", "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress",
                    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
                    "StationName", "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate",
                    "ContentDate", "StudyTime", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
SHOWN_LENGTH = 64  # characters of a shown value (a CS is at most 16, an AS 4; a longer one is cut)


def dicom_metadata(ds) -> dict:
    """The SHOWN_TAGS a data set has, as short printable strings."""
    shown = {}
    for keyword in SHOWN_TAGS:
        value = ds.get(keyword)
        text = "".join(ch for ch in str(value if value is not None else "") if ch.isprintable()).strip()
        if text:
            shown[keyword] = text[:SHOWN_LENGTH]
    return shown


def _identifying_values(ds) -> list[str]:
    """Every IDENTIFYING_TAGS value of the data set (and its name parts), longest first."""
    from pydicom.multival import MultiValue

    values = []
    for keyword in IDENTIFYING_TAGS:
        value = ds.get(keyword)
        for item in (value if isinstance(value, (list, tuple, MultiValue)) else [value]):
            text = str(item if item is not None else "").strip()
            if len(text) >= 3:
                values.append(text)
                values.extend(part for part in re.split(r"[\^=\s]+", text) if len(part) >= 3)
    return sorted(set(values), key=len, reverse=True)


def _decode_dicom(data: bytes, name: str) -> Decoded:
    ds = _read_dicom(data, name)
    identifying = _identifying_values(ds)
    try:
        return _decode_dicom_pixels(ds, name)._replace(dicom=dicom_metadata(ds))
    except Exception as error:  # noqa: BLE001 - an error message must not quote an identifying value
        problem = error.problem if isinstance(error, ImageLoadError) else (
            f"could not be decoded ({type(error).__name__}: {_short(error)})")
        for value in identifying:
            problem = problem.replace(value, "[identifying value removed]")
        raise ImageLoadError(problem, name) from None


def _decode_dicom_pixels(ds, name: str) -> Decoded:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    rows, columns, frames = _dicom_geometry(ds, syntax, name)
    colour = Colourfulness()
    pixels = _first_frame(ds, syntax, frames, name, colour)
    _check_size(columns, rows, name)  # the minimum side, now that the syntax is known to decode
    notes: list[str] = []
    pixels = _modality(pixels, ds, name, notes)
    if "VOILUTSequence" in ds:
        image = _voi_lut(pixels, ds.VOILUTSequence[0], name)
    elif "WindowCenter" in ds and "WindowWidth" in ds and _trusted_window(ds, notes):
        image = _linear_window(pixels, _first(ds.WindowCenter), _first(ds.WindowWidth))
    elif int(ds.get("BitsStored", 16) or 16) == 8 and pixels.min() >= 0 and pixels.max() <= 255:
        image = pixels.astype(np.float32)  # 8-bit data is kept as it is, as for PNG and JPEG
    else:
        image = _scale_to_255(pixels, name)
    del pixels
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # low values are bright
        np.subtract(255.0, image, out=image)
    return Decoded(image, (rows, columns), tuple(notes), colour.value(), header=dicom_header(ds))


# What of a DICOM input's header is kept with its analysis, for results written back as DICOM
# (radiograph.dicom_results): the patient and study modules they copy and the source instance they reference.
# Nothing else (no pixel data, sequences or private tags); a value longer than MAX_HEADER_VALUE_BYTES is left out,
# so the kept header is at most about 30 kB whatever the file holds.
HEADER_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
    "Modality", "SeriesNumber", "InstanceNumber", "BodyPartExamined", "ViewPosition", "Laterality",
    "PatientOrientation", "LossyImageCompression",
)
MAX_HEADER_VALUE_BYTES = 1024


def dicom_header(ds):
    """A new pydicom Dataset with HEADER_KEYWORDS' elements of `ds` that it has, each at most
    MAX_HEADER_VALUE_BYTES long as stored."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import Dataset

    header = Dataset()
    for keyword in HEADER_KEYWORDS:
        tag = tag_for_keyword(keyword)
        raw = ds.get_item(tag)
        if raw is None or raw.value is None:
            continue
        value = raw.value  # raw bytes, or a value already read (a PersonName once the identifying check read it)
        if len(value if isinstance(value, (bytes, str)) else str(value)) > MAX_HEADER_VALUE_BYTES:
            continue
        header.add(ds[tag])
    return header


def _read_dicom(data: bytes, name: str):
    """The data set, its deflated form (if any) inflated to at most MAX_INFLATED_DICOM bytes."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    try:
        stream = io.BytesIO(data)
        preamble = read_preamble(stream, force=True)
        meta = _read_file_meta_info(stream)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            counter = _ElementCounter()
            ds = pydicom.filereader.read_partial(io.BytesIO(data), stop_when=counter, force=True)
            counter.refuse_if_over(name)
            return ds
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = inflater.decompress(data[stream.tell():], MAX_INFLATED_DICOM)
        if inflater.unconsumed_tail:
            raise ImageLoadError(f"its deflated data set inflates to more than {MAX_INFLATED_DICOM // 2**20} MB "
                                 "(one frame of the largest accepted image and its metadata)", name)
        counter = _ElementCounter()
        dataset = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True, stop_when=counter)
        counter.refuse_if_over(name)
        del inflated
        ds = pydicom.dataset.FileDataset(name, dataset, preamble, meta, False, True)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the pixel decoder reads: now native
        return ds
    except ImageLoadError:
        raise
    except zlib.error as error:
        raise ImageLoadError(f"its deflated data set is corrupt ({_short(error)})", name) from None
    except Exception as error:
        raise ImageLoadError(f"not a readable DICOM file ({type(error).__name__}: {_short(error)})", name) from error


class _ElementCounter:
    """pydicom's `stop_when`: stops reading after MAX_DICOM_ELEMENTS top-level elements (each becomes a Python
    object), so that `refuse_if_over` can refuse the file."""

    def __init__(self):
        self.count = 0

    def __call__(self, tag, vr, length) -> bool:
        self.count += 1
        return self.count > MAX_DICOM_ELEMENTS

    def refuse_if_over(self, name: str) -> None:
        if self.count > MAX_DICOM_ELEMENTS:
            raise ImageLoadError(f"the DICOM file has more than {MAX_DICOM_ELEMENTS} elements (real radiographs have "
                                 "a few hundred)", name)


def _dicom_geometry(ds, syntax, name: str) -> tuple[int, int, int]:
    """(rows, columns, frames) after checking the header against itself and against the pixel data."""
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "SOPClassUID" in ds:
            kind = getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
            raise ImageLoadError(f"the DICOM file has no pixel data (a {kind} object, not an image)", name)
        declared = getattr(syntax, "name", None) or "none declared"
        raise ImageLoadError("no DICOM image could be read from it: no pixel data element was found when read as "
                             f"its declared transfer syntax ({declared}); the file is corrupt or its header lies",
                             name)
    if "PixelData" not in ds:
        raise ImageLoadError("its pixels are floating point (Float Pixel Data), used for parametric maps, not "
                             "radiographs", name)
    rows, columns = _dicom_int(ds, "Rows", name), _dicom_int(ds, "Columns", name)
    _check_size(columns, rows, name, smallest=1)  # a small frame is refused after its syntax is known to decode
    frames = _dicom_int(ds, "NumberOfFrames", name, default=1)
    samples = _dicom_int(ds, "SamplesPerPixel", name, default=1)
    bits = _dicom_int(ds, "BitsAllocated", name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if frames < 1 or samples not in (1, 3) or bits not in (1, 8, 16, 32):
        raise ImageLoadError(f"its header is inconsistent: NumberOfFrames {frames}, SamplesPerPixel {samples}, "
                             f"BitsAllocated {bits} (expected at least 1 frame, 1 or 3 samples, 8, 16 or 32 bits)",
                             name)
    if photometric not in GRAY_PHOTOMETRIC + COLOUR_PHOTOMETRIC:
        raise ImageLoadError(f"its Photometric Interpretation is {photometric!r}; accepted: "
                             f"{', '.join(GRAY_PHOTOMETRIC + COLOUR_PHOTOMETRIC)}", name)
    if (samples == 1) != (photometric in GRAY_PHOTOMETRIC):
        raise ImageLoadError(f"its header is inconsistent: {samples} samples per pixel with {photometric}", name)
    if syntax is None or not syntax.is_compressed:  # native: the element must hold every frame it claims
        frame_bytes = math.ceil(rows * columns * samples * bits / 8)
        held = len(ds.PixelData)
        if held < frame_bytes * frames:
            raise ImageLoadError(f"its pixel data holds {held} bytes, but the header claims {frames} frame(s) of "
                                 f"{columns}x{rows}x{samples} at {bits} bits ({frame_bytes * frames} bytes): "
                                 "truncated, or the header lies", name)
    return rows, columns, frames


def _dicom_int(ds, keyword: str, name: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImageLoadError(f"its {keyword} is {value!r}, not a whole number", name) from None
    return number


def _first_frame(ds, syntax, frames: int, name: str, colour: Colourfulness) -> np.ndarray:
    """The first frame, decoded; luma where it is colour (in strips, accumulating its colourfulness)."""
    import pydicom

    compressed = syntax is not None and syntax.is_compressed
    encoded = _checked_codestream(ds, syntax, frames, name) if compressed else None
    try:
        # Always the pylibjpeg plugins, whatever else is installed (python-gdcm, a test-only encoder here, would
        # come first in pydicom's order): RLE through the Rust decoder (its output bounded by the header's size;
        # pydicom's own loop is not), JPEG and JPEG-LS through libjpeg, JPEG 2000 through OpenJPEG
        plugin = {"decoding_plugin": "pylibjpeg"} if compressed else {}
        pixels = pydicom.pixels.pixel_array(ds, index=0, **plugin)
    except (NotImplementedError, RuntimeError, ValueError) as error:
        if compressed and not _decoder_installed(syntax):
            raise ImageLoadError(
                f"its transfer syntax {syntax.name} is compressed and no installed decoder handles it "
                f"(decoded here: {', '.join(DECODED_SYNTAXES)}; the install's requirements add them)",
                name,
            ) from error
        raise ImageLoadError(f"its pixel data could not be decoded ({_short(error)})", name) from error
    if encoded is not None:
        _refuse_constant_from_varied(pixels, encoded, syntax, name)
    if "PixelData" in ds:
        del ds.PixelData  # the encoded frames: no longer needed
    expected = (int(ds.Rows), int(ds.Columns)) + ((3,) if int(ds.get("SamplesPerPixel", 1) or 1) == 3 else ())
    if pixels.shape != expected:
        raise ImageLoadError(f"its first frame decodes to shape {list(pixels.shape)}, not the {list(expected)} its "
                             "header gives: the header and the pixel data disagree", name)
    if pixels.ndim == 3:  # colour (RGB after pydicom's YBR conversion): luma, in strips
        gray = np.empty(pixels.shape[:2], np.float32)
        for top in range(0, len(gray), 256):
            gray[top:top + 256] = pixels[top:top + 256].astype(np.float32) @ LUMA
            colour.add(pixels[top:top + 256:Colourfulness.STRIDE, ::Colourfulness.STRIDE])  # 256: a multiple of it
        return gray
    return pixels


# Compressed transfer syntaxes, decoded through pydicom by the pylibjpeg plugins (docs/images.md says why these).
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_SYNTAXES = {  # the codestream begins with a JPEG (ITU T.81) or JPEG-LS (T.87) frame header
    "1.2.840.10008.1.2.4.50": "JPEG Baseline", "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless", "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless", "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless"}
J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless", "1.2.840.10008.1.2.4.91": "JPEG 2000"}
DECODED_SYNTAXES = (*JPEG_SYNTAXES.values(), *J2K_SYNTAXES.values(), "RLE Lossless")
# JPEG start-of-frame markers (T.81 B.1.1.3: C0-CF but DHT C4, JPG C8, DAC CC) and JPEG-LS's SOF55 (F7)
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
VARIED_SAMPLE = 64 * 4096  # bytes of a compressed frame looked at to tell whether it encodes a constant image
VARIED_RATIO = 0.2  # zlib shrinks the sample to less than this fraction: the codestream encodes (nearly) nothing


class Codestream(NamedTuple):
    """What a compressed frame's own header says it holds."""

    rows: int
    columns: int
    components: int
    precision: int


def _decoder_installed(syntax) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def _checked_codestream(ds, syntax, frames: int, name: str) -> bytes:
    """The first compressed frame, after its own header is read and checked against the data set's (Rows,
    Columns, Samples per Pixel, Bits Allocated) before a decoder allocates anything: a stream that claims a small
    image in the DICOM header but a large one in its codestream is refused here."""
    from pydicom.encaps import get_frame

    if syntax not in JPEG_SYNTAXES and syntax not in J2K_SYNTAXES and syntax != RLE_LOSSLESS:
        raise ImageLoadError(f"its transfer syntax {syntax.name} is compressed in a way this loader does not "
                             f"decode (decoded here: {', '.join(DECODED_SYNTAXES)})", name)
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception as error:  # noqa: BLE001 - a broken encapsulation
        raise ImageLoadError(f"its encapsulated pixel data cannot be split into frames ({_short(error)})",
                             name) from None
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
    if syntax == RLE_LOSSLESS:
        _check_rle(frame, samples * math.ceil(bits / 8), name)
        return frame
    stream = _jpeg_frame_header(frame, name) if syntax in JPEG_SYNTAXES else _j2k_size(frame, name)
    # EOI (JPEG, JPEG-LS) or EOC (JPEG 2000) at the end, maybe padded (fragments have even lengths); neither
    # pair of bytes can occur inside the entropy-coded data (T.81 B.1.1.5, ISO 15444-1 A.1.1)
    if b"\xff\xd9" not in frame[-16:]:
        raise ImageLoadError(f"its {syntax.name} codestream does not end with an end-of-image marker: truncated "
                             "(a decoder would fill the missing part)", name)
    if (stream.rows, stream.columns, stream.components) != (rows, columns, samples) or stream.precision > bits:
        raise ImageLoadError(f"its {syntax.name} codestream holds a {stream.columns}x{stream.rows} image of "
                             f"{stream.components} component(s) at {stream.precision} bits, but the DICOM header "
                             f"gives {columns}x{rows}, {samples} sample(s) at {bits} bits allocated: the header and "
                             "the pixel data disagree", name)
    return frame


def _jpeg_frame_header(frame: bytes, name: str) -> Codestream:
    """The frame header (SOF) of a JPEG or JPEG-LS codestream, found by walking its marker segments."""
    if frame[:2] != b"\xff\xd8":
        raise ImageLoadError("its JPEG codestream does not start with a start-of-image marker (corrupt)", name)
    position = 2
    for _ in range(MAX_JPEG_MARKERS):
        while position < len(frame) and frame[position] == 0xFF and position + 1 < len(frame) \
                and frame[position + 1] == 0xFF:
            position += 1  # fill bytes
        if position + 4 > len(frame) or frame[position] != 0xFF:
            break
        marker, length = frame[position + 1], struct.unpack(">H", frame[position + 2:position + 4])[0]
        if marker in SOF_MARKERS:
            if position + 10 > len(frame):
                break
            precision, rows, columns, components = struct.unpack(">BHHB", frame[position + 4:position + 10])
            if rows == 0:
                raise ImageLoadError("its JPEG codestream leaves the image height to a DNL marker (not accepted: "
                                     "the size must be known before decoding)", name)
            return Codestream(rows, columns, components, precision)
        if marker == 0xDA or length < 2:
            break
        position += 2 + length
    raise ImageLoadError("its JPEG codestream has no readable frame header (SOF) before its image data: "
                         "truncated or corrupt", name)


def _j2k_size(frame: bytes, name: str) -> Codestream:
    """The image and tile size (SIZ) of a JPEG 2000 codestream (ISO 15444-1 A.5.1)."""
    at = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC then SIZ; some writers wrap it in a JP2 box
    if at < 0 or at + 42 > len(frame):
        raise ImageLoadError("its JPEG 2000 codestream has no readable image size (SIZ) marker: truncated or "
                             "corrupt", name)
    x, y, x0, y0 = struct.unpack(">IIII", frame[at + 8:at + 24])
    components = struct.unpack(">H", frame[at + 40:at + 42])[0]
    if x <= x0 or y <= y0 or components == 0 or at + 42 + 3 * components > len(frame):
        raise ImageLoadError(f"its JPEG 2000 image size is inconsistent ({x}x{y} from offset {x0},{y0}, "
                             f"{components} components)", name)
    precision = max((frame[at + 42 + 3 * c] & 0x7F) + 1 for c in range(components))
    return Codestream(y - y0, x - x0, components, precision)


def _check_rle(frame: bytes, segments: int, name: str) -> None:
    """An RLE frame's header (PS3.5 G.5): one segment per byte of each sample, at increasing offsets inside it."""
    if len(frame) < 64:
        raise ImageLoadError("its RLE frame is shorter than its 64-byte header (truncated)", name)
    count, *offsets = struct.unpack("<16I", frame[:64])
    used = offsets[:count]
    if count != segments or used[0] != 64 or any(b <= a for a, b in itertools.pairwise(used)) or used[-1] >= len(frame):
        raise ImageLoadError(f"its RLE frame header is inconsistent: {count} segment(s) at offsets {used}, where "
                             f"the DICOM header needs {segments} inside {len(frame)} bytes", name)


def _refuse_constant_from_varied(pixels: np.ndarray, frame: bytes, syntax, name: str) -> None:
    """A decoder that returns one value everywhere from a codestream that is not a constant image's is wrong
    (a known failure: 12-bit lossless JPEG decoded to zeros without an error): refuse, never analyse it."""
    if pixels.size == 0 or pixels.min() != pixels.max():
        return
    step = max(1, len(frame) // 64)
    sample = b"".join(frame[i:i + 4096] for i in range(0, len(frame), step))[:VARIED_SAMPLE]
    if len(sample) >= 256 and len(zlib.compress(sample, 6)) >= VARIED_RATIO * len(sample):
        raise ImageLoadError(f"its {syntax.name} pixel data decoded to one value ({pixels.flat[0]}) everywhere, "
                             "though the compressed data is not that of a constant image: the decoder failed "
                             "silently, so the image is not analysed", name)


def _modality(pixels: np.ndarray, ds, name: str, notes: list[str]) -> np.ndarray:
    """The Modality LUT: a LUT sequence, or Rescale Slope and Intercept (refused unless finite, slope non-zero)."""
    if "ModalityLUTSequence" in ds:
        return _lookup(pixels, ds.ModalityLUTSequence[0], name)
    slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
    try:
        slope, intercept = _first(1 if slope is None else slope), _first(0 if intercept is None else intercept)
    except (TypeError, ValueError):
        raise ImageLoadError(f"its Rescale Slope/Intercept ({slope!r}, {intercept!r}) are not numbers", name) from None
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise ImageLoadError(f"its Rescale Slope {slope} and Intercept {intercept} cannot be trusted (the slope "
                             "must be a finite non-zero number, the intercept finite)", name)
    if slope < 0:
        notes.append(f"Rescale Slope is negative ({slope:g}): stored values are inverted before display")
    if slope == 1 and intercept == 0:
        return pixels
    rescaled = pixels.astype(np.float32)
    rescaled *= np.float32(slope)
    rescaled += np.float32(intercept)
    return rescaled


def _lookup(pixels: np.ndarray, item, name: str) -> np.ndarray:
    """A DICOM LUT (Modality or VOI): LUTDescriptor (entries, first mapped value, bits) and LUTData."""
    try:
        entries, first, _ = (int(v) for v in item.LUTDescriptor)
        entries = entries or 65536
        data = item.LUTData
        if isinstance(data, bytes):  # OW: 16-bit words, or bytes where each entry is one (8-bit LUTs may be)
            data = np.frombuffer(data, "u1" if len(data) == entries else "<u2")
        table = np.asarray(data, dtype=np.float32).ravel()
    except Exception as error:  # noqa: BLE001 - a malformed LUT
        raise ImageLoadError(f"its LUT cannot be read ({type(error).__name__}: {_short(error)})", name) from None
    if table.size != entries or not np.isfinite(table).all():
        raise ImageLoadError(f"its LUT is inconsistent: the descriptor gives {entries} entries, the data holds "
                             f"{table.size}", name)
    out = np.empty(pixels.shape, np.float32)
    for top in range(0, len(pixels), 256):  # in strips: the int32 indices of 256 rows at a time
        strip = pixels[top:top + 256]
        index = np.rint(strip).astype(np.int32) if strip.dtype.kind == "f" else strip.astype(np.int32)
        index -= first
        np.take(table, index, mode="clip", out=out[top:top + 256])  # beyond the table: its first/last entry
    return out


def _voi_lut(pixels: np.ndarray, item, name: str) -> np.ndarray:
    bits = int(item.LUTDescriptor[2]) or 16
    if not 8 <= bits <= 16:
        raise ImageLoadError(f"its VOI LUT declares {bits} bits per entry; DICOM allows 8 to 16", name)
    image = _lookup(pixels, item, name)
    image *= np.float32(255.0 / (2.0**bits - 1.0))
    return np.clip(image, 0.0, 255.0, out=image)


def _trusted_window(ds, notes: list[str]) -> bool:
    """Whether Window Center/Width can be used: finite, width >= 1 (PS3.3 C.11.2.1.2); else a note says why
    the window was ignored."""
    try:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError):
        notes.append("Window Center/Width are not numbers: the window was ignored and the image scaled by its own "
                     "range")
        return False
    if abs(center) < 1e30 and 1 <= width < 1e30:  # finite, and computable in float32
        return True
    notes.append(f"Window Center {center:g} / Width {width:g} is not a valid window (both must be finite numbers "
                 "below 1e30, the width at least 1): it was ignored and the image scaled by its own range")
    return False


def _first(value) -> float:
    """The first of a possibly multi-valued DICOM number (Window Center may list several)."""
    return float(np.atleast_1d(np.asarray(value, dtype=np.float64))[0])


def _linear_window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear VOI function, mapped to 0-255."""
    image = np.subtract(pixels, center - 0.5, dtype=np.float32)
    image /= np.float32(max(width - 1.0, 1.0))
    image += np.float32(0.5)
    np.clip(image, 0.0, 1.0, out=image)
    image *= np.float32(255.0)
    return image


def _scale_to_255(pixels: np.ndarray, name: str, reuse: bool = False) -> np.ndarray:
    """Map deep (16-bit, float) data to 0-255 by its robust range (8-bit data never comes here): one new
    float32 array (`reuse`: a float32 `pixels` is scaled in place); non-finite values take the lowest finite
    value."""
    finite = None
    lowest = None
    if pixels.dtype.kind == "f":
        finite = np.isfinite(pixels)
        if not finite.any():
            raise ImageLoadError("the image holds no finite pixel values (all NaN or infinite)", name)
        if finite.all():
            finite = None
        else:
            lowest = float(np.min(pixels, where=finite, initial=np.inf))
        step = max(1, pixels.size // PERCENTILE_SAMPLE)
        sample = pixels.ravel()[::step]
        if finite is not None:
            sample = np.where(np.isfinite(sample), sample, lowest)
    else:
        sample = pixels  # integers: the exact range (np.percentile copies them once)
    low, high = (float(v) for v in np.percentile(sample, PERCENTILES))
    del sample
    scale = 255.0 / (high - low) if high > low else math.inf
    if not math.isfinite(scale) or not math.isfinite(np.float32(scale)) or scale == 0:
        return np.zeros(pixels.shape, np.float32)  # a constant image (or a range no float32 can resolve)
    # pixels * scale - low * scale: no intermediate overflows, even for values near the float32 limits
    if reuse and pixels.dtype == np.float32 and pixels.flags.writeable:
        image = np.multiply(pixels, np.float32(scale), out=pixels)
    else:
        image = np.multiply(pixels, np.float32(scale), dtype=np.float32)
    image -= np.float32(low * scale)
    if finite is not None:
        image[~finite] = np.float32((lowest - low) * scale)
    np.clip(image, 0.0, 255.0, out=image)
    return image


def placement(shape: tuple[int, int], size: int) -> Letterbox:
    """Where an image of `shape` (height, width) sits when letterboxed to `size`: no pixel is touched."""
    height, width = shape
    scale = size / max(height, width)
    new_height = max(1, min(size, round(height * scale)))
    new_width = max(1, min(size, round(width * scale)))
    return Letterbox((height, width), size, scale, (size - new_height) // 2, (size - new_width) // 2, new_height,
                     new_width)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio so the longer side is `size`, centred on a black square."""
    geometry = placement(image.shape, size)
    interpolation = cv2.INTER_AREA if geometry.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (geometry.width, geometry.height), interpolation=interpolation)
    canvas = np.zeros((size, size), np.float32)
    canvas[geometry.top:geometry.top + geometry.height, geometry.left:geometry.left + geometry.width] = resized
    return canvas, geometry


def display_copy(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """uint8, the whole image with its longer side at most `side` (what is shown, and kept between requests)."""
    height, width = image.shape
    scale = min(1.0, side / max(height, width))
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.clip(image, 0, 255).astype(np.uint8)


class Loaded(NamedTuple):
    """What the model and the display need of one file."""

    tensor: np.ndarray  # float32 [size, size, 1], 0-255: the model input
    geometry: Letterbox  # where the image sits in it; `original` is the file's own size
    display: np.ndarray  # uint8 2-D, the whole image, longer side at most DISPLAY_SIDE
    notes: tuple[str, ...]  # values the loader did not trust and worked around


def load_for_model(source: Source, size: int, name: str | None = None) -> Loaded:
    """The serving and training input of one file; at most one full-size float copy lives at a time."""
    decoded = decode(source, name, reduce_to=DISPLAY_SIDE)
    display = display_copy(decoded.image)
    tensor, geometry = model_input(decoded, size)
    notes = decoded.notes
    del decoded
    return Loaded(tensor, geometry, display, notes)


def model_input(decoded: Decoded, size: int) -> tuple[np.ndarray, Letterbox]:
    """The model input [size, size, 1] of a decoded file and where the image sits in it (`original`: the file's
    own size, also where it was decoded at reduced scale). Serving calls it once it knows the task (the input
    gate looks at the display copy first); `load_for_model` is decode, display copy, this."""
    boxed, geometry = letterbox(decoded.image, size)
    return boxed[..., None], dataclasses.replace(geometry, original=decoded.original)


__all__ = ["ACCEPTED", "DECODE_BUDGET_BYTES", "DISPLAY_SIDE", "MAX_FILE_BYTES", "MAX_PIXELS", "Colourfulness",
           "Decoded", "ImageLoadError", "Loaded", "decode", "display_copy", "letterbox", "load_for_model",
           "model_input", "placement", "read_image"]
