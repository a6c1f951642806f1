"""The input corpus: files the loader must refuse with a clear message, and odd files it must read.

Used twice: through `read_image` (tests/test_imaging.py) and through the running
app (tests/test_app.py), where every refusal must come back as a message and
the next valid request must still succeed.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image

from train.phantoms import dicom_bytes


def gradient(height=64, width=96, maximum=255):
    """A horizontal ramp with a bright square in the top-left corner (to check orientation)."""
    image = np.tile(np.linspace(0, maximum * 0.6, width), (height, 1))
    image[4:16, 4:16] = maximum
    return image


def encode(array, fmt, mode=None, **save):
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, fmt, **save)
    return buffer.getvalue()


def png_header(width, height):
    """A PNG whose IHDR claims width x height, with a tiny (wrong) image body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def converted(mode, fmt="PNG", **save):
    buffer = io.BytesIO()
    Image.fromarray(gradient().astype(np.uint8)).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def with_exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(gradient().astype(np.uint8), "JPEG", quality=95, exif=exif)


def animated(fmt):
    frames = [Image.fromarray(gradient().astype(np.uint8)), Image.fromarray(np.zeros((64, 96), np.uint8))]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def malformed_dicom():
    """A DICOM whose Modality element claims 32 kB: every element after it is misread."""
    data = bytearray(dicom_bytes(gradient(maximum=4000).astype(np.uint16)))
    at = data.index(b"\x08\x00\x60\x00CS")  # (0008,0060) Modality; explicit VR: tag, VR, 2-byte length
    data[at + 6:at + 8] = struct.pack("<H", 0x7FFF)
    return bytes(data)


def pydicom_file(name):
    from pydicom.data import get_testdata_file

    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


VALID_PNG = encode(gradient().astype(np.uint8), "PNG")
VALID_JPEG = encode(gradient().astype(np.uint8), "JPEG")
VALID_TIFF = encode(gradient().astype(np.uint8), "TIFF")
VALID_DICOM = dicom_bytes(gradient(maximum=4000).astype(np.uint16))
RANDOM = bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))

REFUSED = {  # name: content; each must raise ImageLoadError naming the file and what is accepted
    **{f"empty.{suffix}": b"" for suffix in ("png", "jpg", "dcm")},
    **{f"random.{suffix}": RANDOM for suffix in ("png", "jpg", "tif", "bmp", "dcm")},
    "text.jpg": b"this is not an image at all\n" * 20,
    "text.png": b"<html><body>not an image</body></html>\n" * 10,
    "huge.png": png_header(30000, 30000),
    "zero_by_zero.png": png_header(0, 0),
    "one_pixel.png": encode(np.zeros((1, 1), np.uint8), "PNG"),
    "thin.png": encode(np.zeros((1, 500), np.uint8), "PNG"),
    "gif.png": encode(gradient().astype(np.uint8), "GIF"),
    "animated.gif": animated("GIF"),
    "not_dicom.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 50,
    "no_pixel_data.dcm": pydicom_file("rtplan.dcm"),
    "jpeg_ls_45x10.dcm": pydicom_file("JPEGLSNearLossless_08.dcm"),
    "malformed_length.dcm": malformed_dicom(),
    **{f"truncated_{n}.png": VALID_PNG[:n] for n in (8, 30, 60, len(VALID_PNG) // 2)},
    **{f"truncated_{n}.jpg": VALID_JPEG[:n] for n in (2, 100, len(VALID_JPEG) // 2)},
    **{f"truncated_{n}.tif": VALID_TIFF[:n] for n in (8, len(VALID_TIFF) // 2)},
    "truncated_half.dcm": VALID_DICOM[:len(VALID_DICOM) // 2],
}

ACCEPTED = {  # name: content; each must decode to a 2-D image
    "rgb.png": converted("RGB"),
    "rgba.png": converted("RGBA"),
    "palette.png": converted("P"),
    "cmyk.jpg": converted("CMYK", "JPEG"),
    "gray_16bit.png": encode(gradient(maximum=60000).astype(np.uint16), "PNG"),
    "gray_16bit.tif": encode(gradient(maximum=60000).astype(np.uint16), "TIFF"),
    "float_nan.tif": encode(np.where(gradient() > 100, np.nan, gradient() / 255).astype(np.float32), "TIFF"),
    "animated.png": animated("PNG"),  # APNG: the first frame
    **{f"exif_orientation_{n}.jpg": with_exif(n) for n in range(1, 9)},
    "monochrome1.dcm": dicom_bytes(gradient(maximum=4000).astype(np.uint16), "MONOCHROME1"),
    "signed.dcm": dicom_bytes((gradient() - 100).astype(np.int16), bits_stored=16),
    "multiframe.dcm": dicom_bytes(np.stack([gradient().astype(np.uint16)] * 2), bits_stored=16, NumberOfFrames=2),
    "windowed.dcm": dicom_bytes(gradient(maximum=4000).astype(np.uint16), window=(1000, 1000)),
}
