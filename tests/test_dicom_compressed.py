"""Compressed DICOM: every transfer syntax the project can write decodes equal to its uncompressed source,
pydicom's bundled compressed samples decode equal to their uncompressed twins, and a codestream whose own
header disagrees with the DICOM header, or a decoder that silently returns a constant frame, is refused.

Encoders (pydicom 3's `Dataset.compress`): RLE Lossless (pydicom, pylibjpeg-rle), JPEG 2000 Lossless
(pylibjpeg-openjpeg), JPEG-LS Lossless (pyjpegls); JPEG Lossless (Process 14, SV1 and first-order prediction) by
GDCM's ImageChangeTransferSyntax (python-gdcm, a test-only encoder: no pydicom plugin encodes it). The loader decodes
every one with the pylibjpeg plugins, whatever else is installed.
"""
import io
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (JPEG2000Lossless, JPEGLSLossless, RLELossless, ExplicitVRLittleEndian,
                         generate_uid)

from radiograph import imaging
from radiograph.imaging import ImageLoadError, decode

EXAMPLE = sorted((Path(__file__).parent.parent / "examples" / "chest14").glob("*.png"))[0]
ENCODED = {  # syntax: the pydicom encoding plugin
    RLELossless: "pylibjpeg",
    JPEG2000Lossless: "pylibjpeg",
    JPEGLSLossless: "pyjpegls",
}


def phantom(bits: int, side: int = 256) -> np.ndarray:
    """A phantom example scaled to `bits` bits, with every level's least significant bits in use."""
    image = np.asarray(Image.open(EXAMPLE).convert("L").resize((side, side)), np.float64)
    noise = np.random.default_rng(bits).integers(0, 2 ** max(bits - 8, 0), image.shape)
    scaled = image * (2 ** bits - 1) / 255 if bits > 8 else image
    return np.clip(np.rint(scaled) + noise * (bits > 8), 0, 2 ** bits - 1).astype(np.uint8 if bits == 8 else np.uint16)


def dataset(pixels: np.ndarray, bits: int, photometric: str = "MONOCHROME2", **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def compressed(pixels: np.ndarray, bits: int, syntax, photometric: str = "MONOCHROME2") -> tuple[bytes, bytes]:
    """(uncompressed file, the same compressed in `syntax`)."""
    ds = dataset(pixels, bits, photometric)
    source = saved(ds)
    ds.compress(syntax, encoding_plugin=ENCODED[syntax])
    return source, saved(ds)


JPEG_LOSSLESS = {"1.2.840.10008.1.2.4.70": "JPEGLosslessProcess14_1", "1.2.840.10008.1.2.4.57": "JPEGLosslessProcess14"}


def gdcm_compressed(pixels: np.ndarray, bits: int, syntax: str, photometric: str) -> tuple[bytes, bytes]:
    """(uncompressed file, the same as JPEG Lossless through GDCM: the only encoder of it on PyPI)."""
    gdcm = pytest.importorskip("gdcm")
    source = saved(dataset(pixels, bits, photometric))
    with tempfile.TemporaryDirectory() as folder:
        plain, packed = Path(folder) / "plain.dcm", Path(folder) / "packed.dcm"
        plain.write_bytes(source)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(plain))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, JPEG_LOSSLESS[syntax])))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(packed))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        return source, packed.read_bytes()


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("syntax", [*ENCODED, *JPEG_LOSSLESS],
                         ids=lambda uid: pydicom.uid.UID(uid).name.split(",")[0].replace(" ", ""))
def test_lossless_syntax_decodes_equal_to_its_source(syntax, bits, photometric):
    pixels = phantom(bits)
    source, packed = (gdcm_compressed(pixels, bits, syntax, photometric) if syntax in JPEG_LOSSLESS
                      else compressed(pixels, bits, syntax, photometric))
    assert pydicom.dcmread(io.BytesIO(packed)).file_meta.TransferSyntaxUID == syntax
    assert len(packed) < len(source)  # really compressed
    np.testing.assert_array_equal(pydicom.dcmread(io.BytesIO(packed)).pixel_array, pixels)  # raw values
    ours, reference = decode(packed, "packed.dcm"), decode(source, "source.dcm")
    np.testing.assert_array_equal(ours.image, reference.image)  # and the model's input, after scaling
    assert ours.image.max() > ours.image.min()


# pydicom's bundled compressed samples and their uncompressed twins (same pixels): get_testdata_file finds
# them offline. The decoder packages' wheels ship no sample files; larger samples (12/16-bit JPEG Lossless,
# JPEG-LS and JPEG 2000 conformance files) live in pydicom-data and pylibjpeg-data, which are downloads.
BUNDLED_TWINS = {
    "MR_small_RLE.dcm": "MR_small.dcm",
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "SC_rgb_jpeg_gdcm.dcm": "SC_rgb_rle.dcm",  # JPEG Lossless SV1 (8-bit RGB) against RLE of the same image
}
DOWNLOADED = ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG2000_UNC.dcm"]  # pydicom-data, not bundled


@pytest.mark.parametrize("name", list(BUNDLED_TWINS))
def test_bundled_compressed_sample_decodes_equal_to_its_twin(name):
    packed, twin = get_testdata_file(name), get_testdata_file(BUNDLED_TWINS[name])
    assert pydicom.dcmread(packed, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(decode(packed).image, decode(twin).image)


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "MR_small_RLE.dcm"])
def test_rle_decoders_agree(name):
    """The Rust RLE decoder the loader uses (bounded output) against pydicom's own."""
    ds = pydicom.dcmread(get_testdata_file(name))
    np.testing.assert_array_equal(pydicom.pixels.pixel_array(ds, decoding_plugin="pylibjpeg"),
                                  pydicom.pixels.pixel_array(ds, decoding_plugin="pydicom"))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "693_J2KI.dcm", "JPGExtended.dcm"])
def test_bundled_lossy_samples_decode(name):
    image = decode(get_testdata_file(name)).image
    assert image.ndim == 2 and np.isfinite(image).all() and image.max() > image.min()


def test_sample_libjpeg_cannot_read_is_refused_with_the_decoders_reason():
    """JPEG-lossy.dcm has a scan header libjpeg rejects (GDCM reads it): a clear refusal, not a crash."""
    with pytest.raises(ImageLoadError, match="(?s)pixel data could not be decoded .*misplaced marker"):
        decode(get_testdata_file("JPEG-lossy.dcm"))


@pytest.mark.parametrize("name", DOWNLOADED)
def test_downloaded_samples_when_present(name):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is in pydicom-data, downloaded on demand: no network to it here")
    image = decode(path).image
    assert image.max() > image.min()


def test_codestream_claiming_a_larger_image_than_the_header_is_refused_before_decoding(monkeypatch):
    """A JPEG 2000 stream of 256x256 under a header that says 64x64: refused from the stream's own SIZ, and
    the decoder is never called."""
    _, packed = compressed(phantom(12), 12, JPEG2000Lossless)
    ds = pydicom.dcmread(io.BytesIO(packed))
    ds.Rows = ds.Columns = 64
    calls = []
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: calls.append(1))
    with pytest.raises(ImageLoadError, match=r"codestream holds a 256x256 image .* header gives 64x64"):
        decode(saved(ds), "lying.dcm")
    assert calls == []


def test_rle_header_with_wrong_segment_count_is_refused():
    _, packed = compressed(phantom(16), 16, RLELossless)
    ds = pydicom.dcmread(io.BytesIO(packed))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7  # 16-bit RLE has two segments; 8-bit needs one
    with pytest.raises(ImageLoadError, match="RLE frame header is inconsistent"):
        decode(saved(ds), "rle.dcm")


def test_constant_frame_from_varied_data_is_an_error(monkeypatch):
    """The failure seen elsewhere (12-bit lossless JPEG decoded to zeros, no error), simulated: the decoder
    returns zeros for a codestream that encodes a varied image."""
    _, packed = compressed(phantom(12), 12, JPEG2000Lossless)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda ds, **kw: np.zeros((256, 256), np.uint16))
    with pytest.raises(ImageLoadError, match="decoded to one value .* everywhere.*decoder failed silently"):
        decode(packed, "zeros.dcm")


def test_truly_constant_image_is_not_a_decoder_error():
    """A constant image really compressed is decoded (the gate refuses it as blank, not the loader)."""
    _, packed = compressed(np.full((64, 64), 700, np.uint16), 12, JPEG2000Lossless)
    image = decode(packed, "flat.dcm").image
    assert image.min() == image.max()


def test_unsupported_compressed_syntax_names_what_is_decoded():
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    with pytest.raises(ImageLoadError, match="does not decode .*decoded here: JPEG Baseline"):
        decode(saved(ds), "video.dcm")


def test_every_decoded_syntax_has_an_installed_decoder():
    for uid in [*imaging.JPEG_SYNTAXES, *imaging.J2K_SYNTAXES, imaging.RLE_LOSSLESS]:
        assert imaging._decoder_installed(pydicom.uid.UID(uid)), uid
