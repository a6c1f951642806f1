"""Hostile inputs for the image loader: files that lie in their headers or are corrupt, and the costliest valid files.

`HOSTILE` ({file name: bytes}) is built when the module is imported (about a second; every file is at most
2 MB, most a few kB); `EXPECTED` says what a correct loader does with each:
  "refused"   ImageLoadError (the header lies, the data is corrupt or cut, a number cannot be trusted, or the
              format is not one the loader takes);
  "accepted"  a valid file of an accepted format, whatever its name says (the format is sniffed from the bytes);
  "either"    a correct loader could reasonably do either; if it accepts, the image must still be finite, 2-D
              and in [0, 255].
The rule the loader follows: refuse lying headers, corrupt or truncated data and untrustworthy numbers with
ImageLoadError; sniff the format from the bytes, not the name; never analyse a partially decoded image.
`LIMIT_PIXELS` (30,000,000 per image) is the loader's size limit.

Groups (`GROUPS` maps each to its file names):
  lying_dimensions   PNG IHDR, JPEG SOF, TIFF ImageWidth/ImageLength, BMP width/height (negative, top-down
                     included) and DICOM Rows/Columns patched bigger than the data behind them (or beyond any
                     limit): a loader that sizes its buffers from the header allocates before it notices.
  bombs              genuinely valid files that inflate far beyond their size: a 10000x10000 zero PNG (100 kB),
                     a 9000x9000 deflate TIFF, deflated-transfer-syntax DICOMs holding 32 frames of 4096x4096
                     zeros or a pixel element / private element of over 1 GB; over the pixel limit they are
                     refused, under it ("either") the loader must stay inside its memory budget.
  frame_counts       DICOM NumberOfFrames 40, 1e6, 2^31-1, 0, -1, "abc", "1.5" over one frame of data; multi-page
                     TIFFs whose second page is huge (a loader reads page one only, so "either").
  element_lengths    DICOM element lengths beyond the end of the file, undefined-length native pixel data,
                     sequences that never end or nest 50,000 deep.
  transfer_syntaxes  DICOM file meta that lies about the body: big endian, deflated, JPEG, RLE, JPEG 2000 or an
                     unknown UID over native little-endian data; implicit/explicit VR swapped ("either": the VR
                     can be told from the bytes).
  chunk_sizes        PNG chunk lengths past the end, bad CRCs, a second IHDR, no IEND, cut or corrupt zlib
                     streams, bad filter bytes, 10,000 IDAT chunks, a zTXt bomb; TIFF strip offsets/byte counts
                     past the end, 1e6 strips, IFD loops, tiles past the end, corrupt deflate strips.
  truncation         JPEG (baseline and progressive) cut with and without an EOI appended, 16-bit PNG, TIFF,
                     BMP and DICOM cut.
  numbers            DICOM window, rescale, bit depth, samples and photometric values that cannot be trusted
                     (NaN, inf, 0, negative, unparsable); float TIFFs all NaN/inf or at float32's extremes.
  impostors          the name says one thing, the bytes another: a PNG named .dcm, a DICOM named .png (both
                     accepted), GIF, WebP, SVG, HTML, PDF and ZIP under image names (refused).

`CONTROLS` are the unmodified bases the hostile files are patched from (each must be accepted, so a refusal
of a hostile file is due to its defect, not to the writers here).

`WORST_ACCEPTED` ({file name: builder}) are valid files just under the limit (5477x5477 = 29,997,529 pixels)
in the costliest forms: 8/16-bit gray, RGBA, 16-bit RGB and interlaced PNG, a float32 deflate TIFF, a colour
JPEG, 16-bit DICOMs (deflated transfer syntax; one with a VOI LUT sequence) and a 16x1874800 strip. They are
tens of MB of pixels, so they are built only by `worst_accepted(folder)`; each file stays under 50 MB (smooth
gradients with a little structure compress well).
"""
from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from corpus import encode, png_header

LIMIT_PIXELS = 30_000_000
WORST_SIDE = 5477  # 5477^2 = 29,997,529 <= LIMIT_PIXELS < 5478^2
STRIP_ROWS = LIMIT_PIXELS // 16 - 1  # a 16-pixel-wide strip just under the limit
MAX_HOSTILE_BYTES = 2 * 2**20
MAX_WORST_BYTES = 50 * 2**20


# ============================================================================ zeros, deflated cheaply
# A run of zeros is deflated once per chunk with a full flush (byte-aligned, no back-references across
# chunks), so n zeros are the chunk repeated: gigabytes inflate from about a megabyte, built in milliseconds.

_ZERO_CHUNK = 2**20


@functools.lru_cache(maxsize=None)
def _deflated_zero_run(count: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(count)) + compressor.flush(zlib.Z_FULL_FLUSH)


def _raw_deflate_zeros(count: int) -> bytes:
    """Raw deflate blocks (not final) for `count` zero bytes."""
    chunks, rest = divmod(count, _ZERO_CHUNK)
    return _deflated_zero_run(_ZERO_CHUNK) * chunks + (_deflated_zero_run(rest) if rest else b"")


_FINAL_EMPTY_BLOCK = b"\x01\x00\x00\xff\xff"  # a final stored block of length 0


def _zlib_zeros(count: int) -> bytes:
    """A complete zlib stream (header, deflate, Adler-32) of `count` zero bytes."""
    adler = ((count % 65521) << 16) | 1
    return b"\x78\xda" + _raw_deflate_zeros(count) + _FINAL_EMPTY_BLOCK + struct.pack(">I", adler)


def _raw_deflate(*parts: bytes | int) -> bytes:
    """One raw deflate stream of the parts in order: bytes as given, an int as that many zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = []
    for part in parts:
        if isinstance(part, int):
            out.append(compressor.flush(zlib.Z_FULL_FLUSH))
            out.append(_raw_deflate_zeros(part))
        else:
            out.append(compressor.compress(part))
    out.append(compressor.flush(zlib.Z_FULL_FLUSH))
    return b"".join(out) + _FINAL_EMPTY_BLOCK


# ============================================================================ pictures

def _picture(height=128, width=192, maximum=255.0):
    """A ramp, a disk and a bright corner square: enough structure that a wrong decode shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 0.15 + 0.6 * x / width + 0.1 * np.sin(y / 7.0)
    image[(y - height * 0.6) ** 2 + (x - width * 0.55) ** 2 < (min(height, width) / 5) ** 2] = 0.9
    image[4:16, 4:16] = 1.0
    return np.clip(image, 0, 1) * maximum


# ============================================================================ PNG

def _chunk(kind: bytes, body: bytes, crc: int | None = None, length: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body) if length is None else length) + kind + body + struct.pack(">I", crc)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ihdr(width, height, bit_depth=8, colour=0, interlace=0) -> bytes:
    return struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, interlace)


def _png_rows(array: np.ndarray, filter_type: int = 0) -> bytes:
    """Scanlines of an (h, w[, c]) uint8/uint16 array, each with its filter byte (0 None, 2 Up)."""
    array = np.asarray(array)
    rows = array.astype(array.dtype.newbyteorder(">")).reshape(array.shape[0], -1).view(np.uint8)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = filter_type
    out[:, 1:] = rows
    if filter_type == 2:
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps, as the filter does
    return out.tobytes() if out.nbytes < 2**24 else memoryview(out).cast("B")


_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _png(array: np.ndarray, level=9, filter_type=0) -> bytes:
    array = np.asarray(array)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    ihdr = _ihdr(width, height, 8 * array.dtype.itemsize, _COLOUR[channels])
    idat = zlib.compress(_png_rows(array, filter_type), level)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png_adam7(array: np.ndarray, level=6, filter_type=2) -> bytes:
    """An interlaced (Adam7) PNG of a gray array."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    compressor = zlib.compressobj(level)
    idat = []
    for x0, y0, dx, dy in passes:
        sub = array[y0::dy, x0::dx]
        if sub.size:
            idat.append(compressor.compress(_png_rows(sub, filter_type)))
    idat.append(compressor.flush())
    height, width = array.shape
    ihdr = _ihdr(width, height, 8 * array.dtype.itemsize, 0, interlace=1)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(idat)) + _chunk(b"IEND", b"")


def _png_lying(width, height, bit_depth=8, colour=0) -> bytes:
    return (PNG_SIGNATURE + _chunk(b"IHDR", _ihdr(width, height, bit_depth, colour))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def _png_zero_bomb(width, height, bit_depth=8, colour=0, interlace=0) -> bytes:
    """A valid PNG of zeros: every row is filter byte 0 and zero samples."""
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour] * bit_depth // 8
    if interlace:
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        size = 0
        for x0, y0, dx, dy in passes:
            cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
            size += rows * (1 + cols * bpp) if cols > 0 and rows > 0 else 0
    else:
        size = height * (1 + width * bpp)
    return (PNG_SIGNATURE + _chunk(b"IHDR", _ihdr(width, height, bit_depth, colour, interlace))
            + _chunk(b"IDAT", _zlib_zeros(size)) + _chunk(b"IEND", b""))


BASE_PNG8 = _png(_picture().astype(np.uint8))
BASE_PNG16 = _png(_picture(maximum=60000).astype(np.uint16))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        chunks.append((kind, data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def _png_from(chunks) -> bytes:
    return PNG_SIGNATURE + b"".join(c if isinstance(c, bytes) else _chunk(*c) for c in chunks)


def _png_variants() -> dict[str, tuple[bytes, str]]:
    (_, ihdr), (_, idat), _ = _png_chunks(BASE_PNG8)
    raw = zlib.decompress(idat)
    zip_buffer = io.BytesIO()
    with zipfile.ZipFile(zip_buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("payload.txt", "a zip after IEND\n" * 50)
    bad_filter = bytearray(raw)
    bad_filter[(len(raw) // 128) * 40] = 7  # row 40's filter byte: 7 is no filter type
    bad_adler = bytearray(idat)
    bad_adler[-1] ^= 0xFF
    one_byte_idats = []
    for i, byte in enumerate(idat):
        one_byte_idats.append((b"IDAT", bytes([byte])))
        if len(one_byte_idats) < 10_000 - len(idat):
            one_byte_idats.append((b"IDAT", b""))  # zero-length IDAT chunks are valid
    return {
        "png_idat_length_past_eof.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", idat, None, 0x7FFFFFF0),
                                                    (b"IEND", b"")]), "refused"),
        "png_idat_bad_crc.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", idat, 0xDEADBEEF), (b"IEND", b"")]),
                                 "refused"),
        "png_ihdr_bad_crc.png": (_png_from([(b"IHDR", ihdr, 0xDEADBEEF), (b"IDAT", idat), (b"IEND", b"")]),
                                 "refused"),
        "png_zip_appended_after_iend.png": (BASE_PNG8 + zip_buffer.getvalue(), "either"),
        "png_second_ihdr_4000x4000.png": (_png_from([(b"IHDR", ihdr), (b"IHDR", _ihdr(4000, 4000)), (b"IDAT", idat),
                                                     (b"IEND", b"")]), "refused"),
        "png_no_iend.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", idat)]), "either"),
        "png_no_idat.png": (_png_from([(b"IHDR", ihdr), (b"IEND", b"")]), "refused"),
        "png_zlib_truncated_valid_chunks.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", idat[:len(idat) // 2]),
                                                           (b"IEND", b"")]), "refused"),
        "png_zlib_bad_adler32.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", bytes(bad_adler)), (b"IEND", b"")]),
                                     "refused"),
        "png_invalid_filter_byte.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", zlib.compress(bytes(bad_filter))),
                                                   (b"IEND", b"")]), "refused"),
        "png_zlib_data_past_image.png": (_png_from([(b"IHDR", ihdr), (b"IDAT", zlib.compress(raw + bytes(50_000))),
                                                    (b"IEND", b"")]), "either"),
        "png_16bit_palette_invalid_combination.png": (
            _png_from([(b"IHDR", _ihdr(192, 128, 16, 3)), (b"PLTE", bytes(range(256)) * 3), (b"IDAT", idat),
                       (b"IEND", b"")]), "refused"),
        "png_palette_without_plte.png": (_png_from([(b"IHDR", _ihdr(192, 128, 8, 3)), (b"IDAT", idat),
                                                    (b"IEND", b"")]), "refused"),
        "png_text_chunk_length_past_eof.png": (_png_from([(b"IHDR", ihdr), (b"tEXt", b"Comment\0hello", None, 0x7FFFFFFF),
                                                          (b"IDAT", idat), (b"IEND", b"")]), "refused"),
        "png_ztxt_bomb_100mb.png": (_png_from([(b"IHDR", ihdr), (b"zTXt", b"Comment\0\0" + _zlib_zeros(100_000_000)),
                                               (b"IDAT", idat), (b"IEND", b"")]), "either"),
        "png_10000_idat_chunks.png": (_png_from([(b"IHDR", ihdr), *one_byte_idats, (b"IEND", b"")]), "accepted"),
    }


# ============================================================================ JPEG

BASE_JPEG = encode(_picture(256, 384).astype(np.uint8), "JPEG", quality=90)
BASE_JPEG_PROGRESSIVE = encode(_picture(256, 384).astype(np.uint8), "JPEG", quality=90, progressive=True)


def _jpeg_sof(data: bytes) -> int:
    """Offset of the SOFn marker (walks the segments from SOI)."""
    at = 2
    while at < len(data):
        marker = data[at + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return at
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    raise ValueError("no SOF")


def _jpeg_sos(data: bytes) -> int:
    return data.index(b"\xff\xda")


def _jpeg_dims(data: bytes, height: int, width: int) -> bytes:
    at = _jpeg_sof(data)
    out = bytearray(data)
    out[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def _jpeg_cut(data: bytes, fraction: float, eoi: bool) -> bytes:
    return data[:int(len(data) * fraction)] + (b"\xff\xd9" if eoi else b"")


def _jpeg_variants() -> dict[str, tuple[bytes, str]]:
    sos = _jpeg_sos(BASE_JPEG)
    middle = sos + (len(BASE_JPEG) - sos) // 2
    random_scan = bytearray(BASE_JPEG)
    random_scan[middle:middle + 256] = np.random.default_rng(1).integers(0, 255, 256, dtype=np.uint8).tobytes()
    return {
        "jpeg_sof_10000x10000.jpg": (_jpeg_dims(BASE_JPEG, 10000, 10000), "refused"),
        "jpeg_sof_5477x5477_under_limit.jpg": (_jpeg_dims(BASE_JPEG, 5477, 5477), "refused"),
        "jpeg_sof_5478x5478_over_limit.jpg": (_jpeg_dims(BASE_JPEG, 5478, 5478), "refused"),
        "jpeg_sof_65535x65535.jpg": (_jpeg_dims(BASE_JPEG, 65535, 65535), "refused"),
        "jpeg_sof_16x65500.jpg": (_jpeg_dims(BASE_JPEG, 16, 65500), "refused"),
        "jpeg_sof_height_0_dnl.jpg": (_jpeg_dims(BASE_JPEG, 0, 384), "refused"),
        "jpeg_sof_2048x2048_real_256x384.jpg": (_jpeg_dims(BASE_JPEG, 2048, 2048), "refused"),
        "jpeg_sof_smaller_64x64.jpg": (_jpeg_dims(BASE_JPEG, 64, 64), "either"),
        "jpeg_progressive_sof_8000x8000.jpg": (_jpeg_dims(BASE_JPEG_PROGRESSIVE, 8000, 8000), "refused"),
        "jpeg_progressive_sof_5477x5477.jpg": (_jpeg_dims(BASE_JPEG_PROGRESSIVE, 5477, 5477), "refused"),
        "jpeg_random_bytes_in_scan.jpg": (bytes(random_scan), "either"),
        "jpeg_headers_only_then_eoi.jpg": (BASE_JPEG[:sos] + b"\xff\xd9", "refused"),
    }


def _truncation_variants() -> dict[str, tuple[bytes, str]]:
    sos = _jpeg_sos(BASE_JPEG)
    middle = sos + (len(BASE_JPEG) - sos) // 2
    base_tiff16 = _tiff([_tiff_page(_picture(maximum=60000).astype(np.uint16))])
    base_bmp = encode(_picture().astype(np.uint8), "BMP")
    return {
        "jpeg_cut_50pct_eoi_appended.jpg": (_jpeg_cut(BASE_JPEG, 0.5, True), "refused"),
        "jpeg_cut_90pct_eoi_appended.jpg": (_jpeg_cut(BASE_JPEG, 0.9, True), "refused"),
        "jpeg_cut_50pct_no_eoi.jpg": (_jpeg_cut(BASE_JPEG, 0.5, False), "refused"),
        "jpeg_cut_99pct_no_eoi.jpg": (BASE_JPEG[:-40], "refused"),
        "jpeg_eoi_in_middle_of_scan.jpg": (BASE_JPEG[:middle] + b"\xff\xd9" + BASE_JPEG[middle:], "refused"),
        "jpeg_progressive_cut_50pct_no_eoi.jpg": (_jpeg_cut(BASE_JPEG_PROGRESSIVE, 0.5, False), "refused"),
        "jpeg_progressive_cut_50pct_eoi_appended.jpg": (_jpeg_cut(BASE_JPEG_PROGRESSIVE, 0.5, True), "refused"),
        "jpeg_progressive_cut_90pct_eoi_appended.jpg": (_jpeg_cut(BASE_JPEG_PROGRESSIVE, 0.9, True), "refused"),
        "png_16bit_cut_half.png": (BASE_PNG16[:len(BASE_PNG16) // 2], "refused"),
        "png_16bit_cut_before_last_idat_byte.png": (BASE_PNG16[:-13], "refused"),
        "tif_16bit_cut_half.tif": (base_tiff16[:len(base_tiff16) // 2], "refused"),
        "bmp_cut_90pct.bmp": (base_bmp[:int(len(base_bmp) * 0.9)], "refused"),
        "dcm_cut_in_pixel_data.dcm": (BASE_DICOM[:len(BASE_DICOM) - 1000], "refused"),
    }


# ============================================================================ TIFF

class _Pointer:
    """A TIFF entry written as given: `count` values of `type_` at file offset `offset` (which may be a lie)."""

    def __init__(self, count: int, offset: int):
        self.count, self.offset = count, offset


_TIFF_TYPES = {3: "H", 4: "I", 11: "f", 12: "d"}


def _tiff(pages: list[dict], first_ifd: int | None = None) -> bytes:
    """A little-endian TIFF. Each page: {"tags": {tag: (type, value(s) | _Pointer)}, "strips": [bytes],
    "next": offset override or "self"}; StripOffsets/StripByteCounts are filled in for pages with strips."""
    out = bytearray(b"II*\0\0\0\0\0")
    page_tags = []
    for page in pages:
        tags = dict(page["tags"])
        if "strips" in page:
            offsets = []
            for strip in page["strips"]:
                offsets.append(len(out))
                out += strip + (b"\0" if len(strip) % 2 else b"")
            tags.setdefault(273, (4, offsets))
            tags.setdefault(279, (4, [len(s) for s in page["strips"]]))
        page_tags.append(tags)

    def payload(type_, values):
        values = values if isinstance(values, (list, tuple)) else [values]
        data = struct.pack(f"<{len(values)}{_TIFF_TYPES[type_]}", *values)
        return data, len(values)

    sizes = []
    for tags in page_tags:
        extra = sum(-(-len(payload(*v)[0]) // 2) * 2 for v in tags.values()
                    if not isinstance(v[1], _Pointer) and len(payload(*v)[0]) > 4)
        sizes.append(2 + 12 * len(tags) + 4 + extra)
    starts = [len(out)]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    for index, tags in enumerate(page_tags):
        entries, extra = bytearray(), bytearray()
        extra_at = starts[index] + 2 + 12 * len(tags) + 4
        for tag in sorted(tags):
            type_, values = tags[tag]
            if isinstance(values, _Pointer):
                entries += struct.pack("<HHII", tag, type_, values.count, values.offset)
                continue
            data, count = payload(type_, values)
            if len(data) <= 4:
                entries += struct.pack("<HHI", tag, type_, count) + data.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", tag, type_, count, extra_at + len(extra))
                extra += data + (b"\0" if len(data) % 2 else b"")
        following = pages[index].get("next", starts[index + 1] if index + 1 < len(pages) else 0)
        following = starts[index] if following == "self" else following
        out += struct.pack("<H", len(tags)) + entries + struct.pack("<I", following) + extra
    struct.pack_into("<I", out, 4, starts[0] if first_ifd is None else first_ifd)
    return bytes(out)


def _tiff_page(array: np.ndarray, compression: int = 1, rows_per_strip: int | None = None, **overrides) -> dict:
    array = np.asarray(array)
    height, width = array.shape
    sample_format = {"f": 3, "i": 2}.get(array.dtype.kind, 1)
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    rows_per_strip = rows_per_strip or height
    row_bytes = width * array.dtype.itemsize
    strips = [raw[r * row_bytes:(r + rows_per_strip) * row_bytes] for r in range(0, height, rows_per_strip)]
    if compression == 8:
        strips = [zlib.compress(s, 6) for s in strips]
    tags = {256: (4, width), 257: (4, height), 258: (3, 8 * array.dtype.itemsize), 259: (3, compression),
            262: (3, 1), 277: (3, 1), 278: (4, rows_per_strip), 284: (3, 1), 339: (3, sample_format)}
    tags.update(overrides.pop("tags", {}))
    return {"tags": tags, "strips": strips, **overrides}


def _tiff_zero_page(width: int, height: int) -> dict:
    """A valid 8-bit deflate page of zeros, one strip."""
    return {"tags": {256: (4, width), 257: (4, height), 258: (3, 8), 259: (3, 8), 262: (3, 1), 277: (3, 1),
                     278: (4, height), 284: (3, 1)},
            "strips": [_zlib_zeros(width * height)]}


BASE_TIFF = _tiff([_tiff_page(_picture().astype(np.uint8))])


def _tiff_variants() -> dict[str, tuple[bytes, str]]:
    pixels = _picture().astype(np.uint8)
    page = lambda tags={}: [_tiff_page(pixels, tags={k: (4, v) for k, v in tags.items()})]  # noqa: E731
    strips = 100_000
    thin = {"tags": {256: (4, 16), 257: (4, strips), 258: (3, 8), 259: (3, 1), 262: (3, 1), 277: (3, 1),
                     278: (4, 1), 284: (3, 1), 273: (3, [8] * strips), 279: (3, [16] * strips)}}
    huge_strips = {"tags": {256: (4, 16), 257: (4, 1_000_000), 258: (3, 8), 259: (3, 1), 262: (3, 1),
                            277: (3, 1), 278: (4, 1), 284: (3, 1),
                            273: (4, _Pointer(1_000_000, 4096)), 279: (4, _Pointer(1_000_000, 8192))}}
    corrupt = bytearray(zlib.compress(pixels.tobytes()))
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = b"\xff" * 64
    tiles = {"tags": {256: (4, 192), 257: (4, 128), 258: (3, 8), 259: (3, 1), 262: (3, 1), 277: (3, 1),
                      284: (3, 1), 322: (4, 16), 323: (4, 16),
                      324: (4, [0x7FFF0000 + 256 * i for i in range(96)]), 325: (4, [256] * 96)}}
    lying_second = {"tags": {256: (4, 100_000), 257: (4, 100_000), 258: (3, 8), 259: (3, 1), 262: (3, 1),
                             277: (3, 1), 278: (4, 100_000), 284: (3, 1), 273: (4, 0x40000000),
                             279: (4, 0x7FFFFFFF)}}
    return {
        "tif_width_10000_real_192.tif": (_tiff(page({256: 10000})), "refused"),
        "tif_length_100000_real_128.tif": (_tiff(page({257: 100000})), "refused"),
        "tif_dims_5477x5477_under_limit.tif": (_tiff(page({256: 5477, 257: 5477})), "refused"),
        "tif_dims_65535x65535.tif": (_tiff(page({256: 65535, 257: 65535})), "refused"),
        "tif_dims_4294967295x1.tif": (_tiff(page({256: 2**32 - 1, 257: 1})), "refused"),
        "tif_dims_0x128.tif": (_tiff(page({256: 0})), "refused"),
        "tif_strip_offset_past_eof.tif": (_tiff([_tiff_page(pixels, tags={273: (4, 0x7FFFFF00)})]), "refused"),
        # every pixel's bytes are there; libtiff itself replaces a bogus byte count by the strip's size
        "tif_strip_bytecount_past_eof.tif": (_tiff([_tiff_page(pixels, tags={279: (4, 0x7FFFFFFF)})]), "either"),
        "tif_1000000_strips_arrays_past_eof.tif": (_tiff([huge_strips]), "refused"),
        "tif_100000_one_row_strips.tif": (_tiff([thin]), "either"),
        "tif_ifd_offset_past_eof.tif": (_tiff(page(), first_ifd=0x7FFFFFF0), "refused"),
        "tif_ifd_loops_to_itself.tif": (_tiff([_tiff_page(pixels, next="self")]), "either"),
        "tif_tiles_past_eof.tif": (_tiff([tiles]), "refused"),
        "tif_deflate_strip_corrupt.tif": (_tiff([{"tags": _tiff_page(pixels, 8)["tags"], "strips": [bytes(corrupt)]}]),
                                          "refused"),
        "tif_bits_per_sample_0.tif": (_tiff([_tiff_page(pixels, tags={258: (3, 0)})]), "refused"),
        "tif_multipage_second_page_lying_100000x100000.tif": (_tiff([_tiff_page(pixels), lying_second]), "either"),
        "tif_multipage_second_page_deflate_zeros_9000x9000.tif": (_tiff([_tiff_page(pixels), _tiff_zero_page(9000, 9000)]),
                                                                  "either"),
    }


# ============================================================================ BMP

def _bmp_patch(data: bytes, **fields) -> bytes:
    offsets = {"offset": (10, "<I"), "width": (18, "<i"), "height": (22, "<i"), "bits": (28, "<H")}
    out = bytearray(data)
    for key, value in fields.items():
        at, fmt = offsets[key]
        struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _bmp_rle8_end_of_bitmap(width: int, height: int) -> bytes:
    """A valid RLE8 BMP whose data is only the end-of-bitmap code (the rest is background)."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _bmp_variants() -> dict[str, tuple[bytes, str]]:
    base = encode(_picture().astype(np.uint8), "BMP")
    return {
        "bmp_10000x10000.bmp": (_bmp_patch(base, width=10000, height=10000), "refused"),
        "bmp_5477x5477_under_limit.bmp": (_bmp_patch(base, width=5477, height=5477), "refused"),
        "bmp_top_down_height_minus_100000.bmp": (_bmp_patch(base, height=-100000), "refused"),
        "bmp_top_down_192x156300_over_limit.bmp": (_bmp_patch(base, height=-156_300), "refused"),
        "bmp_height_int_min.bmp": (_bmp_patch(base, height=-2**31), "refused"),
        "bmp_width_negative.bmp": (_bmp_patch(base, width=-192), "refused"),
        "bmp_width_0.bmp": (_bmp_patch(base, width=0), "refused"),
        "bmp_pixel_offset_past_eof.bmp": (_bmp_patch(base, offset=0x7FFFFFF0), "refused"),
        "bmp_bit_count_0.bmp": (_bmp_patch(base, bits=0), "refused"),
        "bmp_rle8_10000x10000_end_of_bitmap.bmp": (_bmp_rle8_end_of_bitmap(10000, 10000), "refused"),
        "bmp_rle8_5000x5000_end_of_bitmap.bmp": (_bmp_rle8_end_of_bitmap(5000, 5000), "either"),
    }


# ============================================================================ DICOM, written element by element

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG2000 = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
_UNDEFINED = 0xFFFFFFFF


def _value(vr: str, value) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif vr in ("US", "SS", "UL"):
        values = value if isinstance(value, (list, tuple)) else [value]
        data = struct.pack(f"<{len(values)}{ {'US': 'H', 'SS': 'h', 'UL': 'I'}[vr]}", *values)
    else:
        data = str(value).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr in ("UI", "OB", "OW", "UN") else b" "
    return data


def _element(tag: int, vr: str, value, length: int | None = None, encoding: str = "explicit") -> bytes:
    data = _value(vr, value)
    group, element = tag >> 16, tag & 0xFFFF
    length = len(data) if length is None else length
    if encoding == "implicit":
        return struct.pack("<HHI", group, element, length) + data
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length) + data
    return struct.pack("<HH2sH", group, element, vr.encode(), length) + data


def _item(data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(data) if length is None else length) + data


_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _dataset(elements: dict, encoding: str = "explicit") -> bytes:
    """Elements in tag order; a value is (VR, value) or already-encoded bytes (written as given)."""
    return b"".join(v if isinstance(v, bytes) else _element(tag, *v, encoding=encoding)
                    for tag, v in sorted(elements.items()))


def _dicom_file(body: bytes, syntax: str = EXPLICIT_LE, preamble: bytes = bytes(128)) -> bytes:
    meta = _dataset({0x00020001: ("OB", b"\0\1"), 0x00020002: ("UI", CR_SOP), 0x00020003: ("UI", "1.2.3.4.5.6.7.8.9"),
                     0x00020010: ("UI", syntax), 0x00020012: ("UI", "1.2.826.0.1.3680043.8.498.1")})
    return preamble + b"DICM" + _element(0x00020000, "UL", len(meta)) + meta


def _dicom(body: bytes, syntax: str = EXPLICIT_LE, preamble: bytes = bytes(128)) -> bytes:
    return _dicom_file(body, syntax, preamble) + body


def _image_tags(rows=128, columns=192, *, bits=16, stored=12, samples=1, photometric="MONOCHROME2", signed=0,
                frames=None, pixels: bytes | None = None, **extra) -> dict:
    tags = {0x00080016: ("UI", CR_SOP), 0x00080018: ("UI", "1.2.3.4.5.6.7.8.9"), 0x00080060: ("CS", "CR"),
            0x00280002: ("US", samples), 0x00280004: ("CS", photometric), 0x00280010: ("US", rows),
            0x00280011: ("US", columns), 0x00280100: ("US", bits), 0x00280101: ("US", stored),
            0x00280102: ("US", max(stored - 1, 0)), 0x00280103: ("US", signed)}
    if frames is not None:
        tags[0x00280008] = ("IS", frames)
    names = {"window_center": 0x00281050, "window_width": 0x00281051, "intercept": 0x00281052, "slope": 0x00281053}
    for key, value in extra.items():
        tags[names[key]] = ("DS", value)
    if pixels is not None:
        tags[0x7FE00010] = ("OW" if bits > 8 else "OB", pixels)
    return tags


BASE_PIXELS = _picture(maximum=4000).astype("<u2")
BASE_PIXEL_BYTES = BASE_PIXELS.tobytes()
BASE_TAGS = _image_tags(pixels=BASE_PIXEL_BYTES)
BASE_BODY = _dataset(BASE_TAGS)
BASE_DICOM = _dicom(BASE_BODY)


def _dcm(**changes) -> bytes:
    """The base DICOM with image tags changed (same 128x192 16-bit pixel data)."""
    return _dicom(_dataset(_image_tags(pixels=BASE_PIXEL_BYTES, **changes)))


def _dcm_tags(tags: dict, syntax: str = EXPLICIT_LE) -> bytes:
    return _dicom(_dataset({**BASE_TAGS, **tags}), syntax)


def _deflated_dicom(*parts: bytes | int) -> bytes:
    return _dicom_file(b"", DEFLATED) + _raw_deflate(*parts)


def _encapsulated(fragments: list[bytes]) -> bytes:
    data = _item(b"") + b"".join(_item(f + (b"\0" if len(f) % 2 else b"")) for f in fragments) + _SEQUENCE_END
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, _UNDEFINED) + data


def _dicom_variants() -> dict[str, dict[str, tuple[bytes, str]]]:
    frame = 4096 * 4096 * 2
    head = _dataset(_image_tags(4096, 4096, frames=32))
    pixel_header = lambda vr, length: struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length)  # noqa: E731
    single = _dataset(_image_tags(4096, 4096))
    big = _dataset(_image_tags(6000, 6000))
    private_head = _dataset({**{k: v for k, v in BASE_TAGS.items() if k < 0x00091000},
                             0x00090010: ("LO", "HOSTILE")})
    private_tail = _dataset({k: v for k, v in BASE_TAGS.items() if k > 0x00091000})
    private_element = struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, 2**30)
    small_jpeg = encode(_picture().astype(np.uint8), "JPEG", quality=90)
    body_without_pixels = {k: v for k, v in BASE_TAGS.items() if k != 0x7FE00010}
    nest = (struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, _UNDEFINED) + _item(b"", _UNDEFINED)) * 50_000
    never_ends = (struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, _UNDEFINED) + _item(b"", _UNDEFINED)
                  + _dataset({k: v for k, v in BASE_TAGS.items() if k > 0x00081140}))
    implicit_body = _dataset(BASE_TAGS, "implicit")
    lut = {0x00283010: _element(0x00283010, "SQ", _item(_element(0x00283002, "US", [0, 0, 16])
                                                        + _element(0x00283006, "OW", bytes(20))))}
    return {
        "lying_dimensions": {
            "dcm_rows_cols_4096x4096_data_128x192.dcm": (_dcm(rows=4096, columns=4096), "refused"),
            "dcm_rows_cols_5477x5477_under_limit.dcm": (_dcm(rows=5477, columns=5477), "refused"),
            "dcm_rows_cols_65535x65535.dcm": (_dcm(rows=65535, columns=65535), "refused"),
            "dcm_rows_0.dcm": (_dcm(rows=0), "refused"),
            "dcm_rows_64_data_128_rows.dcm": (_dcm(rows=64), "either"),
        },
        "bombs": {
            "dcm_deflate_32_frames_4096x4096_zeros.dcm": (
                _deflated_dicom(head, pixel_header(b"OW", 32 * frame), 32 * frame), "either"),
            "dcm_deflate_6000x6000_zeros_over_limit.dcm": (
                _deflated_dicom(big, pixel_header(b"OW", 6000 * 6000 * 2), 6000 * 6000 * 2), "refused"),
            "dcm_deflate_1100mb_pixel_element_one_4096x4096_frame.dcm": (
                _deflated_dicom(single, pixel_header(b"OW", 35 * 2**25), 35 * 2**25), "refused"),
            "dcm_deflate_1gb_private_element_then_pixels.dcm": (
                _deflated_dicom(private_head, private_element, 2**30, private_tail), "either"),
        },
        "frame_counts": {
            **{f"dcm_frames_{label}_one_frame_of_data.dcm": (_dcm(frames=value), expected) for label, value, expected in (
                ("40", 40, "refused"), ("1000000", 1_000_000, "refused"), ("2147483647", 2**31 - 1, "refused"),
                ("0", 0, "either"), ("minus_1", -1, "refused"), ("abc", "abc", "refused"),
                ("1.5", "1.5", "refused"))},
        },
        "element_lengths": {
            "dcm_pixel_data_length_0xfffffff0.dcm": (
                # the element claims 4 GB, but the bytes present are exactly the one frame the header describes
                _dcm_tags({0x7FE00010: _element(0x7FE00010, "OW", BASE_PIXEL_BYTES, length=0xFFFFFFF0)}), "either"),
            "dcm_text_element_length_2pow31.dcm": (
                _dcm_tags({0x0040A160: _element(0x0040A160, "UT", b"text", length=2**31)}), "refused"),
            "dcm_rows_element_length_0xffff.dcm": (
                _dcm_tags({0x00280010: _element(0x00280010, "US", 128, length=0xFFFF)}), "refused"),
            "dcm_pixel_data_undefined_length_native.dcm": (
                _dcm_tags({0x7FE00010: _element(0x7FE00010, "OW", BASE_PIXEL_BYTES, length=_UNDEFINED)}), "refused"),
            "dcm_sequence_never_ends.dcm": (_dicom(_dataset({k: v for k, v in BASE_TAGS.items() if k < 0x00081140})
                                                   + never_ends), "refused"),
            "dcm_sequence_nested_50000_deep.dcm": (_dicom(_dataset({k: v for k, v in BASE_TAGS.items()
                                                                    if k < 0x00081140}) + nest), "refused"),
            # an irrelevant sequence's item overruns the sequence: a tolerant parser resumes after the sequence
            "dcm_item_longer_than_sequence.dcm": (
                _dcm_tags({0x00081140: _element(0x00081140, "SQ", _item(bytes(16), 4096))}), "either"),
        },
        "transfer_syntaxes": {
            "dcm_ts_big_endian_over_little_endian_body.dcm": (_dicom(BASE_BODY, EXPLICIT_BE), "refused"),
            "dcm_ts_deflated_over_plain_body.dcm": (_dicom(BASE_BODY, DEFLATED), "refused"),
            "dcm_ts_jpeg_baseline_over_native_pixels.dcm": (_dicom(BASE_BODY, JPEG_BASELINE), "refused"),
            "dcm_ts_rle_over_native_pixels.dcm": (_dicom(BASE_BODY, RLE), "refused"),
            "dcm_ts_unknown_uid.dcm": (_dicom(BASE_BODY, "1.2.3.4.5.6.7.8.9.10"), "refused"),
            "dcm_ts_jpeg2000_random_fragment.dcm": (
                _dicom(_dataset(_image_tags(bits=8, stored=8)) + _encapsulated([bytes(range(256)) * 8]), JPEG2000),
                "refused"),
            "dcm_ts_jpeg_baseline_fragment_cut_half.dcm": (
                _dicom(_dataset(_image_tags(bits=8, stored=8)) + _encapsulated([small_jpeg[:len(small_jpeg) // 2]]),
                       JPEG_BASELINE), "refused"),
            "dcm_ts_jpeg_baseline_sof_lies_4096x4096.dcm": (
                _dicom(_dataset(_image_tags(bits=8, stored=8)) + _encapsulated([_jpeg_dims(small_jpeg, 4096, 4096)]),
                       JPEG_BASELINE), "refused"),
            "dcm_ts_implicit_declared_explicit_body.dcm": (_dicom(BASE_BODY, IMPLICIT_LE), "either"),
            "dcm_ts_explicit_declared_implicit_body.dcm": (_dicom(implicit_body, EXPLICIT_LE), "either"),
            "dcm_ts_deflated_body_cut_half.dcm": (
                (lambda d: d[:len(d) // 2])(_deflated_dicom(BASE_BODY)), "refused"),
        },
        "numbers": {
            # The window is an optional display hint over sound pixel data: ignoring a broken one (and scaling
            # by the image's own range) is as correct as refusing; either way no NaN may reach the image.
            "dcm_window_center_nan.dcm": (_dcm(window_center="NaN", window_width="1000"), "either"),
            "dcm_window_center_inf.dcm": (_dcm(window_center="inf", window_width="1000"), "either"),
            "dcm_window_center_1e400.dcm": (_dcm(window_center="1e400", window_width="1000"), "either"),
            "dcm_window_center_abc.dcm": (_dcm(window_center="abc", window_width="1000"), "either"),
            "dcm_window_center_nan_then_100.dcm": (_dcm(window_center="NaN\\100", window_width="1000\\1000"),
                                                   "either"),
            "dcm_window_width_0.dcm": (_dcm(window_center="1000", window_width="0"), "either"),
            "dcm_window_width_minus_100.dcm": (_dcm(window_center="1000", window_width="-100"), "either"),
            "dcm_window_width_nan.dcm": (_dcm(window_center="1000", window_width="NaN"), "either"),
            "dcm_rescale_slope_0.dcm": (_dcm(slope="0", intercept="0"), "refused"),
            "dcm_rescale_slope_nan.dcm": (_dcm(slope="NaN", intercept="0"), "refused"),
            "dcm_rescale_intercept_inf.dcm": (_dcm(slope="1", intercept="inf"), "refused"),
            "dcm_rescale_slope_1e308.dcm": (_dcm(slope="1e308", intercept="0"), "either"),
            "dcm_bits_stored_0.dcm": (_dcm(stored=0), "refused"),
            "dcm_bits_allocated_7.dcm": (_dcm(bits=7, stored=7), "refused"),
            "dcm_bits_stored_17_of_16.dcm": (_dcm(stored=17), "refused"),
            "dcm_bits_allocated_64_over_16bit_data.dcm": (_dcm(bits=64, stored=16), "refused"),
            "dcm_samples_per_pixel_0.dcm": (_dcm(samples=0), "refused"),
            "dcm_samples_per_pixel_3_monochrome_data.dcm": (_dcm(samples=3), "refused"),
            "dcm_pixel_representation_2.dcm": (_dcm(signed=2), "refused"),
            "dcm_palette_color_without_palette.dcm": (_dcm(photometric="PALETTE COLOR"), "refused"),
            "dcm_voi_lut_shorter_than_descriptor.dcm": (_dcm_tags(lut), "refused"),
        },
        "impostors": {
            "impostor_dicom_named.png": (BASE_DICOM, "accepted"),
            "impostor_dicom_no_preamble_implicit_named.png": (implicit_body, "either"),
            "impostor_dicom_tiff_magic_in_preamble.dcm": (
                _dicom(BASE_BODY, preamble=b"II*\0\x08\0\0\0".ljust(128, b"\0")), "either"),
            "impostor_dicom_without_pixels_named.jpg": (_dicom(_dataset(body_without_pixels)), "refused"),
        },
    }


def _float_tiffs() -> dict[str, tuple[bytes, str]]:
    bad = np.array([np.nan, np.inf, -np.inf], np.float32)[np.indices((128, 192)).sum(0) % 3]
    extreme = np.linspace(-3.4e38, 3.4e38, 128 * 192, dtype=np.float32).reshape(128, 192)
    return {
        "tif_float32_all_nan_inf.tif": (_tiff([_tiff_page(bad)]), "refused"),
        "tif_float32_finite_extremes_3.4e38.tif": (_tiff([_tiff_page(extreme)]), "accepted"),
    }


def _impostors() -> dict[str, tuple[bytes, str]]:
    zip_buffer = io.BytesIO()
    with zipfile.ZipFile(zip_buffer, "w") as archive:
        archive.writestr("image.png", BASE_PNG8)
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="192" height="128">'
           b'<rect width="192" height="128" fill="gray"/></svg>\n')
    pdf = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
           b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    return {
        "impostor_png_named.dcm": (BASE_PNG8, "accepted"),
        "impostor_png_named_upper.DCM": (BASE_PNG8, "accepted"),
        "impostor_png_no_extension": (BASE_PNG8, "accepted"),
        "impostor_jpeg_named.png": (BASE_JPEG, "accepted"),
        "impostor_tiff_named.jpg": (BASE_TIFF, "accepted"),
        "impostor_bmp_named.dcm": (encode(_picture().astype(np.uint8), "BMP"), "accepted"),
        "impostor_gif_named.png": (encode(_picture().astype(np.uint8), "GIF"), "refused"),
        "impostor_webp_named.png": (encode(_picture().astype(np.uint8), "WEBP"), "refused"),
        "impostor_svg_named.png": (svg, "refused"),
        "impostor_html_named.png": (b"<!DOCTYPE html><html><body><img src=x></body></html>\n", "refused"),
        "impostor_pdf_named.jpg": (pdf, "refused"),
        "impostor_zip_named.tif": (zip_buffer.getvalue(), "refused"),
        "impostor_zip_with_png_named.png": (zip_buffer.getvalue(), "refused"),
    }


def _png_lying_dimensions() -> dict[str, tuple[bytes, str]]:
    (_, ihdr), (_, idat), _ = _png_chunks(BASE_PNG8)
    return {
        "png_ihdr_10000x10000.png": (png_header(10000, 10000), "refused"),
        "png_ihdr_9999x9999_16bit.png": (_png_lying(9999, 9999, 16), "refused"),
        "png_ihdr_5477x5477_under_limit.png": (_png_lying(5477, 5477), "refused"),
        "png_ihdr_5478x5478_over_limit.png": (_png_lying(5478, 5478), "refused"),
        "png_ihdr_5000x5000_rgba16.png": (_png_lying(5000, 5000, 16, 6), "refused"),
        "png_ihdr_1x30000000.png": (_png_lying(1, 30_000_000), "refused"),
        "png_ihdr_30000000x1.png": (_png_lying(30_000_000, 1), "refused"),
        "png_ihdr_16x1875000.png": (_png_lying(16, 1_875_000), "refused"),
        "png_ihdr_65535x65535.png": (_png_lying(65535, 65535), "refused"),
        "png_ihdr_2147483647x2147483647.png": (_png_lying(2**31 - 1, 2**31 - 1), "refused"),
        "png_ihdr_4294967295x16_beyond_spec.png": (_png_lying(2**32 - 1, 16), "refused"),
        "png_ihdr_2000x2000_real_192x128_body.png": (
            _png_from([(b"IHDR", _ihdr(2000, 2000)), (b"IDAT", idat), (b"IEND", b"")]), "refused"),
    }


def _bombs() -> dict[str, tuple[bytes, str]]:
    return {
        "png_bomb_zeros_10000x10000.png": (_png_zero_bomb(10000, 10000), "refused"),
        "png_bomb_zeros_5478x5478_16bit.png": (_png_zero_bomb(5478, 5478, 16), "refused"),
        "png_bomb_zeros_6000x6000_interlaced.png": (_png_zero_bomb(6000, 6000, interlace=1), "refused"),
        "png_bomb_zeros_4000x4000_rgba16.png": (_png_zero_bomb(4000, 4000, 16, 6), "either"),
        "tif_bomb_deflate_zeros_9000x9000.tif": (_tiff([_tiff_zero_page(9000, 9000)]), "refused"),
        "tif_bomb_deflate_zeros_5000x5000.tif": (_tiff([_tiff_zero_page(5000, 5000)]), "either"),
    }


def _piece_counts() -> dict:
    """Millions of empty pieces fit in 50 MB and each costs a Python object in a decoder (found by a review):
    just over the loader's caps here, so the files stay small."""
    iend = BASE_PNG8.rfind(b"IEND") - 4
    idat = BASE_PNG8.find(b"IDAT") - 4
    pixels = BASE_BODY.find(b"\xe0\x7f\x10\x00")
    private = b"".join(struct.pack("<HH", 0x0031, 0x1000 + i) + b"LO" + struct.pack("<H", 0) for i in range(20001))
    return {
        "jpeg_1025_empty_app5_markers.jpg": (BASE_JPEG[:2] + b"\xff\xe5\x00\x02" * 1025 + BASE_JPEG[2:], "refused"),
        "jpeg_1025_empty_comments.jpg": (BASE_JPEG[:2] + b"\xff\xfe\x00\x02" * 1025 + BASE_JPEG[2:], "refused"),
        "png_20001_empty_idat_chunks.png": (BASE_PNG8[:iend] + _chunk(b"IDAT", b"") * 20001 + BASE_PNG8[iend:],
                                            "refused"),
        "png_20001_private_chunks.png": (BASE_PNG8[:idat] + _chunk(b"prVt", b"") * 20001 + BASE_PNG8[idat:],
                                         "refused"),
        "dcm_20001_empty_private_elements.dcm": (_dicom(BASE_BODY[:pixels] + private + BASE_BODY[pixels:]), "refused"),
    }


def _build() -> tuple[dict, dict, dict]:
    dicom, tiff, jpeg = _dicom_variants(), _tiff_variants(), _jpeg_variants()
    groups = {
        "lying_dimensions": {**_png_lying_dimensions(), **{k: v for k, v in jpeg.items() if "_sof_" in k},
                             **{k: v for k, v in tiff.items() if "_dims_" in k or "_width_" in k
                                or "_length_" in k},
                             **_bmp_variants(), **dicom["lying_dimensions"]},
        "bombs": {**_bombs(), **dicom["bombs"]},
        "frame_counts": {**dicom["frame_counts"],
                         **{k: v for k, v in tiff.items() if "multipage" in k}},
        "element_lengths": dicom["element_lengths"],
        "transfer_syntaxes": dicom["transfer_syntaxes"],
        "chunk_sizes": {**_png_variants(),
                        **{k: v for k, v in tiff.items()
                           if not any(s in k for s in ("_dims_", "_width_", "_length_", "multipage"))}},
        "truncation": {**_truncation_variants(),
                       **{k: v for k, v in jpeg.items() if "_sof_" not in k}},
        "numbers": {**dicom["numbers"], **_float_tiffs()},
        "impostors": {**_impostors(), **dicom["impostors"]},
        "piece_counts": _piece_counts(),
    }
    hostile, expected = {}, {}
    for files in groups.values():
        for name, (data, expectation) in files.items():
            assert name not in hostile, name
            hostile[name], expected[name] = data, expectation
    return hostile, expected, {group: sorted(files) for group, files in groups.items()}


HOSTILE, EXPECTED, GROUPS = _build()

CONTROLS = {  # the unmodified bases: each must be accepted
    "control_8bit.png": BASE_PNG8,
    "control_16bit.png": BASE_PNG16,
    "control_adam7_16bit.png": _png_adam7(_picture(maximum=60000).astype(np.uint16)),
    "control.jpg": BASE_JPEG,
    "control_progressive.jpg": BASE_JPEG_PROGRESSIVE,
    "control_8bit.tif": BASE_TIFF,
    "control_16bit.tif": _tiff([_tiff_page(_picture(maximum=60000).astype(np.uint16))]),
    "control_float32_deflate.tif": _tiff([_tiff_page(_picture(maximum=1.0).astype(np.float32), 8, 16)]),
    "control.bmp": encode(_picture().astype(np.uint8), "BMP"),
    "control_explicit.dcm": BASE_DICOM,
    "control_implicit.dcm": _dicom(_dataset(BASE_TAGS, "implicit"), IMPLICIT_LE),
    "control_deflated.dcm": _deflated_dicom(BASE_BODY),
    "control_windowed.dcm": _dcm(window_center="2000", window_width="4000", slope="1", intercept="0"),
    "control_jpeg_baseline.dcm": _dicom(_dataset(_image_tags(bits=8, stored=8))
                                        + _encapsulated([encode(_picture().astype(np.uint8), "JPEG", quality=90)]),
                                        JPEG_BASELINE),
}


# ============================================================================ the costliest valid files

@functools.lru_cache(maxsize=1)
def _worst_field(height: int = WORST_SIDE, width: int = WORST_SIDE) -> np.ndarray:
    """float32 [0, 1]: a horizontal ramp, a reversed band, rectangles, a disk and a diagonal. Rows differ from
    the row above in a few pixels only, so Up-filtered PNG and deflate compress them to a few MB."""
    ramp = np.linspace(0.1, 0.8, width, dtype=np.float32)
    field = np.empty((height, width), np.float32)
    field[:] = ramp
    field[height // 4:height // 2] = ramp[::-1]
    field[height // 8:height // 8 + height // 5, width // 6:width // 6 + width // 4] = 0.95
    field[height * 3 // 5:height * 4 // 5, width // 10:width // 5] = 0.02
    radius = min(height, width) / 6
    rows = np.arange(height, dtype=np.float32)[:, None]
    cy, cx = height * 0.7, width * 0.6
    for start in range(0, height, 512):  # the disk, band by band (no full-size temporaries)
        band = slice(start, min(start + 512, height))
        cols = np.arange(width, dtype=np.float32)[None, :]
        inside = (rows[band] - cy) ** 2 + (cols - cx) ** 2 < radius ** 2
        field[band][inside] = 0.6
    diagonal = np.arange(min(height, width))
    field[diagonal, diagonal * (width - 1) // max(min(height, width) - 1, 1)] = 1.0
    return field


@functools.lru_cache(maxsize=1)
def _worst_channels() -> tuple[np.ndarray, ...]:
    """Four 8-bit-exact channel fields (a colour file's channels differ, so luma is not a copy of one)."""
    field = _worst_field()
    return field, 1.0 - field, np.sqrt(field), np.where(field > 0.5, 1.0, 0.5).astype(np.float32)



def _as(field: np.ndarray, dtype, maximum: float) -> np.ndarray:
    return (field * maximum + 0.5).astype(dtype)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.write_bytes(_png(array, level=1, filter_type=2))


def _worst_png_gray8(path):
    _write_png(path, _as(_worst_field(), np.uint8, 255))


def _worst_png_gray16(path):
    _write_png(path, _as(_worst_field(), np.uint16, 65535))


def _worst_png_gray16_adam7(path):
    path.write_bytes(_png_adam7(_as(_worst_field(), np.uint16, 65535), level=1))


def _worst_png_rgba8(path):
    _write_png(path, np.dstack([_as(c, np.uint8, 255) for c in _worst_channels()]))


def _worst_png_rgb16(path):
    _write_png(path, np.dstack([_as(c, np.uint16, 65535) for c in _worst_channels()[:3]]))


def _worst_png_strip(path):
    _write_png(path, _as(_worst_field(STRIP_ROWS, 16), np.uint8, 255))


def _worst_tiff_float32(path):
    path.write_bytes(_tiff([_tiff_page(_worst_field() * np.float32(1000.0) - np.float32(200.0), compression=8,
                                       rows_per_strip=64)]))


def _worst_jpeg_rgb(path):
    rgb = np.dstack([_as(c, np.uint8, 255) for c in _worst_channels()[:3]])
    Image.fromarray(rgb).save(path, "JPEG", quality=92, subsampling=0)


def _worst_dicom(path, voi_lut: bool = False):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CR_SOP, "1.2.3.4.5.6.7.8.9"
    ds.Modality = "CR"
    ds.set_pixel_data(_as(_worst_field(), np.uint16, 4095), "MONOCHROME2", 12)
    if voi_lut:
        item = Dataset()
        item.add_new(0x00283002, "US", [4096, 0, 16])
        item.add_new(0x00283006, "OW", (np.linspace(0, 1, 4096) ** 0.7 * 65535).astype("<u2").tobytes())
        ds.VOILUTSequence = [item]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


WORST_ACCEPTED = {  # file name: builder(path); (height, width) of each is WORST_SHAPES[name]
    "worst_gray8_5477x5477.png": _worst_png_gray8,
    "worst_gray16_5477x5477.png": _worst_png_gray16,
    "worst_gray16_adam7_5477x5477.png": _worst_png_gray16_adam7,
    "worst_rgba8_5477x5477.png": _worst_png_rgba8,
    "worst_rgb16_5477x5477.png": _worst_png_rgb16,
    "worst_float32_deflate_5477x5477.tif": _worst_tiff_float32,
    "worst_rgb_5477x5477.jpg": _worst_jpeg_rgb,
    "worst_gray16_deflated_5477x5477.dcm": _worst_dicom,
    "worst_gray16_voi_lut_deflated_5477x5477.dcm": functools.partial(_worst_dicom, voi_lut=True),
    "worst_gray8_1874999x16.png": _worst_png_strip,
}
WORST_SHAPES = {name: (STRIP_ROWS, 16) if "x16." in name else (WORST_SIDE, WORST_SIDE)
                for name in WORST_ACCEPTED}


def worst_accepted(folder: Path) -> dict[str, Path]:
    """Write every WORST_ACCEPTED file into `folder` (10-20 s on two cores); {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    try:
        for name, build in WORST_ACCEPTED.items():
            path = folder / name
            if not path.exists():
                build(path)
            paths[name] = path
    finally:
        _worst_field.cache_clear()
        _worst_channels.cache_clear()
    return paths
