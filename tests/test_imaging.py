"""The shared image loader: every accepted format, 16-bit range, DICOM handling, bad input, letterbox."""
import io

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from radiograph.imaging import MAX_PIXELS, ImageLoadError, letterbox, load_for_model, read_image
from train.phantoms import dicom_bytes

from corpus import ACCEPTED, REFUSED, VALID_PNG, encode, gradient  # noqa: E402


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")])
def test_8bit_gray_is_kept_as_it_is(tmp_path, fmt, suffix):
    pixels = gradient().astype(np.uint8)
    image = read_image(write(tmp_path, f"a.{suffix}", encode(pixels, fmt)))
    assert image.dtype == np.float32 and image.shape == pixels.shape
    np.testing.assert_array_equal(image, pixels)


def test_jpeg_is_close_to_its_source(tmp_path):
    pixels = gradient().astype(np.uint8)
    image = read_image(write(tmp_path, "a.jpeg", encode(pixels, "JPEG", quality=95)))
    assert np.abs(image - pixels).mean() < 3


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK"])
def test_colour_modes_become_luma(tmp_path, mode):
    gray = gradient().astype(np.uint8)
    source = Image.fromarray(gray).convert(mode)
    buffer = io.BytesIO()
    source.save(buffer, "JPEG" if mode == "CMYK" else "PNG")
    image = read_image(write(tmp_path, "a.img", buffer.getvalue()))
    assert image.shape == gray.shape
    assert np.abs(image - gray).mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_range_is_mapped_not_clipped(tmp_path, fmt):
    pixels = gradient(maximum=4095 * 16).astype(np.uint16)  # 12-bit data shifted into 16 bits
    image = read_image(write(tmp_path, "deep.img", encode(pixels, fmt)))
    assert image.min() == 0 and image.max() == 255
    assert len(np.unique(image)) > 50  # a clip at 255 would leave almost everything white
    row = image[40]
    assert np.all(np.diff(row) >= 0)  # order of intensities preserved


def test_float_tiff_with_nan(tmp_path):
    pixels = gradient().astype(np.float32) / 255
    pixels[30:34, 30:34] = np.nan
    image = read_image(write(tmp_path, "f.tif", encode(pixels, "TIFF")))
    assert np.isfinite(image).all() and image.max() == 255


@pytest.mark.parametrize("orientation,expected_corner", [(1, (0, 0)), (3, (1, 1)), (6, (0, 1)), (8, (1, 0))])
def test_exif_orientation_is_applied(tmp_path, orientation, expected_corner):
    pixels = gradient().astype(np.uint8)  # 64x96, bright square at the top left
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = read_image(write(tmp_path, "o.jpg", encode(pixels, "JPEG", quality=95, exif=exif)))
    rotated = orientation in (6, 8)
    assert image.shape == ((96, 64) if rotated else (64, 96))
    h, w = image.shape
    row, col = np.unravel_index(np.argmax(image), image.shape)
    assert (row > h / 2, col > w / 2) == tuple(bool(v) for v in expected_corner)


def test_multiframe_png_uses_first_frame(tmp_path):
    first, second = gradient().astype(np.uint8), np.zeros((64, 96), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(first).save(buffer, "PNG", save_all=True, append_images=[Image.fromarray(second)])
    np.testing.assert_array_equal(read_image(buffer.getvalue()), first)


# ----------------------------------------------------------------------------- DICOM

def test_dicom_monochrome1_is_inverted():
    pixels = gradient(maximum=4000).astype(np.uint16)
    normal = read_image(dicom_bytes(pixels, "MONOCHROME2"))
    inverted = read_image(dicom_bytes(pixels, "MONOCHROME1"))
    np.testing.assert_allclose(normal + inverted, 255, atol=1e-3)
    assert normal[10, 10] > 250 and inverted[10, 10] < 5  # the bright square


def test_dicom_window_and_rescale():
    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (20, 1))  # 0..3960
    image = read_image(dicom_bytes(pixels, window=(1000, 1000)))  # shows 500..1500
    values = pixels[0].astype(float)
    assert np.all(image[0][values <= 480] == 0) and np.all(image[0][values >= 1520] == 255)
    assert 0 < image[0][values == 1000][0] < 255
    shifted = read_image(dicom_bytes(pixels, window=(0, 1000), RescaleIntercept=-1000, RescaleSlope=1))
    np.testing.assert_allclose(shifted, image, atol=1e-3)  # the window applies after the rescale


def test_dicom_voi_lut_sequence():
    from pydicom.sequence import Sequence

    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (20, 1))
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4096, 0, 16])
    lut.add_new("LUTData", "OW", ((4095 - np.arange(4096)) * 16).astype("<u2").tobytes())  # an inverting LUT
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels)))
    ds.VOILUTSequence = Sequence([lut])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = read_image(buffer.getvalue())
    np.testing.assert_allclose(image[0], (4095 - pixels[0]) * 16 / 65535 * 255, atol=0.01)


def test_dicom_signed_pixels_and_multiframe():
    frames = np.stack([gradient().astype(np.int16) - 100, np.zeros((64, 96), np.int16)])
    image = read_image(dicom_bytes(frames, bits_stored=16, NumberOfFrames=2))
    assert image.shape == (64, 96) and image.max() == 255  # first frame, full range


def test_pydicom_sample_files():
    ct = read_image(get_testdata_file("CT_small.dcm"))  # signed, rescaled
    assert ct.shape == (128, 128) and 0 <= ct.min() < ct.max() <= 255
    assert read_image(get_testdata_file("MR_small_RLE.dcm")).shape == (64, 64)
    np.testing.assert_array_equal(read_image(get_testdata_file("MR_small.dcm")),
                                  read_image(get_testdata_file("MR_small_RLE.dcm")))


def test_dicom_compressed_without_decoder_and_without_pixels():
    with pytest.raises(ImageLoadError, match="10x45 pixels"):  # JPEG-LS now decodes; the image is too small
        read_image(get_testdata_file("JPEGLSNearLossless_08.dcm"))
    with pytest.raises(ImageLoadError, match="no pixel data"):
        read_image(get_testdata_file("rtplan.dcm"))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_input_raises_the_typed_error(tmp_path, name):
    with pytest.raises(ImageLoadError) as raised:
        read_image(write(tmp_path, name, REFUSED[name]))
    message = str(raised.value)
    assert message.startswith(name) and "accepted: PNG" in message


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_odd_but_valid_input_is_read(tmp_path, name):
    image = read_image(write(tmp_path, name, ACCEPTED[name]))
    assert image.ndim == 2 and image.dtype == np.float32 and np.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 255 and image.max() > image.min()


def test_the_corpus_is_large_enough():
    assert len(REFUSED) + len(ACCEPTED) >= 40


def test_messages_say_what_was_wrong(tmp_path):
    for name, fragment in [("empty.png", "empty"), ("huge.png", "30000x30000"), ("one_pixel.png", "1x1")]:
        with pytest.raises(ImageLoadError, match=fragment):
            read_image(write(tmp_path, name, REFUSED[name]))
    assert 30000 * 30000 > MAX_PIXELS


def test_missing_file_is_the_typed_error(tmp_path):
    with pytest.raises(ImageLoadError, match="could not be decoded"):
        read_image(tmp_path / "absent.png")


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.sampled_from([".png", ".jpg", ".tif", ".dcm", ".bmp"]))
def test_fuzz_only_the_typed_error_escapes(data, suffix):
    try:
        image = read_image(data, name=f"fuzz{suffix}")
    except ImageLoadError:
        return
    assert image.ndim == 2 and image.dtype == np.float32  # a valid image out of random bytes is fine


# ----------------------------------------------------------------------------- letterbox

@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (224, 224), (50, 70)])
def test_letterbox_preserves_aspect_and_maps_back(shape):
    height, width = shape
    image = np.zeros(shape, np.float32)
    image[int(height * 0.8):int(height * 0.9), int(width * 0.1):int(width * 0.2)] = 255  # bottom-left spot
    boxed, geometry = letterbox(image, 224)
    assert boxed.shape == (224, 224)
    assert abs(geometry.width / geometry.height - width / height) < 0.02
    heatmap = letterbox(image, 224)[0][::8, ::8]  # a coarse "heatmap" over the model input
    back = geometry.to_original(heatmap)
    assert back.shape == shape
    row, col = np.unravel_index(np.argmax(back), shape)
    assert 0.7 * height <= row <= 0.95 * height and 0.05 * width <= col <= 0.25 * width


def test_load_for_model_returns_channel_last(tmp_path):
    tensor, geometry, display, notes = load_for_model(write(tmp_path, "a.png", VALID_PNG), 128)
    assert tensor.shape == (128, 128, 1) and tensor.dtype == np.float32
    assert display.shape == geometry.original == (64, 96) and display.dtype == np.uint8 and notes == ()
    assert 0 <= tensor.min() and tensor.max() <= 255


def test_to_original_places_map_cells_by_the_feature_grid():
    from radiograph.geometry import FeatureGrid

    _, geometry = letterbox(np.zeros((128, 128), np.float32), 128)
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[3, 5] = 1.0
    nominal = geometry.to_original(heatmap)  # cells tiling the input: cell (3, 5) centred at (56, 88)
    assert np.unravel_index(np.argmax(nominal), nominal.shape) in {(55, 87), (56, 88), (55, 88), (56, 87)}
    moved = geometry.to_original(heatmap, FeatureGrid((16.0, 16.0), (15.5, 8.0)))  # 7.5 px lower, x unchanged
    row, column = np.unravel_index(np.argmax(moved), moved.shape)
    assert 63 <= row <= 64 and 87 <= column <= 88
    np.testing.assert_allclose(moved[row, column], 1.0, atol=0.05)


def test_a_large_jpeg_is_decoded_at_reduced_scale_for_the_same_model_input(tmp_path):
    """A JPEG of 4096 pixels or more a side decodes straight to half scale or less (never under 2048); the model
    input barely changes, the display copy is at most DISPLAY_SIDE and the geometry keeps the file's own size."""
    from radiograph.imaging import DISPLAY_SIDE, letterbox

    pixels = np.tile(np.linspace(0, 255, 4400), (600, 1)).astype(np.uint8)
    pixels[200:400, 1000:1400] = 255
    path = write(tmp_path, "wide.jpg", encode(pixels, "JPEG", quality=95))
    tensor, geometry, display, _ = load_for_model(path, 256)
    assert geometry.original == (600, 4400) and max(display.shape) <= DISPLAY_SIDE
    full = letterbox(read_image(path), 256)[0]  # the same file decoded at full scale
    assert np.abs(tensor[..., 0] - full).mean() < 1.0


def test_untrustworthy_dicom_numbers(tmp_path):
    pixels = gradient(maximum=4000).astype(np.uint16)
    for window in [("NaN", "NaN"), (1000, 0), (1000, -100), ("1e308", "1e308")]:  # the last: inf in float32
        loaded = load_for_model(dicom_bytes(pixels, window=window), 64)
        assert np.isfinite(loaded.tensor).all() and "not a valid window" in loaded.notes[0]
    for tags in [{"RescaleSlope": 0}, {"RescaleSlope": "NaN"}, {"RescaleIntercept": "inf"}]:
        with pytest.raises(ImageLoadError, match="cannot be trusted"):
            read_image(dicom_bytes(pixels, **tags))
    negative = load_for_model(dicom_bytes(pixels, RescaleSlope=-1, RescaleIntercept=4000), 64)
    assert "negative" in negative.notes[0]
