"""Every backbone follows the model contract and learns: built small, a few steps on a tiny phantom batch."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from radiograph.registry import TASKS, get_task  # noqa: E402
from train.backbones import BACKBONES, build_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_batch(phantom_root):
    from radiograph.imaging import load_for_model
    from train.datasets import read_dataset

    samples = read_dataset("knee", phantom_root / "knee").splits["train"][:4]
    images = np.stack([load_for_model(s.path, 75)[0] for s in samples])
    targets = np.eye(5, dtype=np.float32)[[0, 1, 2, 3]]  # distinct classes: something to learn
    return images, targets


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_contract_and_a_falling_loss(name, tiny_batch):
    images, targets = tiny_batch
    keras.utils.set_random_seed(0)
    model = build_model(get_task("knee"), name, image_size=75)
    assert model.input.shape == (None, 75, 75, 1) and model.output.shape == (None, 5)
    features = model.get_layer("features")
    assert model.get_layer("pool").input is features.output  # the map Grad-CAM uses feeds the pooling
    assert len(features.output.shape) == 4
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", run_eagerly=True)  # tracing a big graph costs minutes
    losses = [float(model.train_on_batch(images, targets)) for _ in range(4)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="known: xception"):
        build_model(get_task("knee"), "vgg16")
    with pytest.raises(ValueError, match="at least 75"):
        build_model(get_task("knee"), "inception_v3", image_size=64)
    with pytest.raises(ValueError, match="does not exist"):
        build_model(get_task("knee"), "densenet121", weights=tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model(get_task("pneumonia"), "small_cnn", weights="imagenet")


def test_transfer_copies_the_backbone_of_another_task_model(tmp_path):
    from train.backbones import save_model

    keras.utils.set_random_seed(1)
    donor = build_model(TASKS["pneumonia"], "compact", image_size=32)
    save_model(donor, tmp_path / "donor.keras")
    model = build_model(TASKS["chest14"], "compact", image_size=48, weights=tmp_path / "donor.keras")
    layer = next(l for l in donor.layers if l.weights and l.name.startswith("expanded_conv"))
    for mine, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert model.get_layer("logits").get_weights()[0].shape[1] == 14  # the head is chest14's own
    save_model(build_model(TASKS["pneumonia"], "small_cnn", image_size=32), tmp_path / "other.keras")
    with pytest.raises(ValueError, match="does not share this backbone"):
        build_model(TASKS["chest14"], "compact", image_size=48, weights=tmp_path / "other.keras")


def test_compact16_starts_from_a_compact_donor(tmp_path):
    from train.backbones import CUT_LAYERS, save_model

    donor = build_model(TASKS["pneumonia"], "compact", image_size=32)
    save_model(donor, tmp_path / "donor.keras")
    model = build_model(TASKS["chest14"], "compact16", image_size=32, weights=tmp_path / "donor.keras")
    np.testing.assert_array_equal(model.get_layer("expanded_conv_7_project").get_weights()[0],
                                  donor.get_layer("expanded_conv_7_project").get_weights()[0])
    assert all(model.get_layer(name) is not None for name in CUT_LAYERS)  # new layers, trained with the head


def test_a_mirror_averaged_model_is_the_mean_of_both_views(tmp_path):
    """features(x) = (f(x) + mirror(f(mirror(x)))) / 2 with f the plain model's map, so the class activation
    map is mirror-equivariant, the probabilities mirror-invariant, and a plain donor's backbone transfers."""
    from train.backbones import save_model

    keras.utils.set_random_seed(2)
    plain = build_model(TASKS["mura"], "compact16", image_size=48)
    save_model(plain, tmp_path / "plain.keras")
    mirrored = build_model(TASKS["mura"], "compact16", image_size=48, weights=tmp_path / "plain.keras", mirror=True)
    mirrored.get_layer("logits").set_weights(plain.get_layer("logits").get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype(np.float32)
    plain_map = keras.Model(plain.input, plain.get_layer("features").output)
    mirrored_map = keras.Model(mirrored.input, mirrored.get_layer("features").output)
    expected = (plain_map(images).numpy() + plain_map(images[:, :, ::-1]).numpy()[:, :, ::-1]) / 2
    np.testing.assert_allclose(mirrored_map(images).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(mirrored_map(images[:, :, ::-1]).numpy(), expected[:, :, ::-1], atol=1e-5)
    logits = keras.Model(plain.input, plain.get_layer("logits").output)
    mirrored_logits = keras.Model(mirrored.input, mirrored.get_layer("logits").output)
    np.testing.assert_allclose(mirrored_logits(images).numpy(),
                               (logits(images).numpy() + logits(images[:, :, ::-1]).numpy()) / 2, atol=1e-5)


def _plain_and(tmp_path, **settings):
    """A plain compact16 model at 48 px and the same network (backbone and head) built with `settings`."""
    from train.backbones import save_model

    keras.utils.set_random_seed(3)
    plain = build_model(TASKS["mura"], "compact16", image_size=48)
    save_model(plain, tmp_path / "plain.keras")
    other = build_model(TASKS["mura"], "compact16", image_size=48, weights=tmp_path / "plain.keras", **settings)
    other.get_layer("logits").set_weights(plain.get_layer("logits").get_weights())
    maps = [keras.Model(m.input, m.get_layer("features").output) for m in (plain, other)]
    logits = [keras.Model(m.input, m.get_layer("logits").output) for m in (plain, other)]
    return maps, logits


def test_a_mirror_offset_pairs_columns_across_the_views_and_leaves_the_logits(tmp_path):
    """MirrorAverage(offset): column j holds the direct map's column j - offset and the mirror's column j, scaled
    so the global average (and so every logit) is the mean of both views' as at offset 0; still equivariant."""
    (plain_map, offset_map), (plain_logits, offset_logits) = _plain_and(tmp_path, mirror=True, mirror_offset=2)
    images = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    direct, mirrored = plain_map(images).numpy(), plain_map(images[:, :, ::-1]).numpy()[:, :, ::-1]
    width = direct.shape[2]
    expected = np.zeros((*direct.shape[:2], width + 2, direct.shape[3]), np.float32)
    expected[:, :, 2:] += direct
    expected[:, :, :width] += mirrored
    expected *= (width + 2) / width / 2
    got = offset_map(images).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(offset_map(images[:, :, ::-1]).numpy(), got[:, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(offset_logits(images).numpy(),
                               (plain_logits(images).numpy() + plain_logits(images[:, :, ::-1]).numpy()) / 2, atol=1e-5)


def test_stitch_interleaves_the_maps_of_four_shifted_views(tmp_path):
    """features[2i + a, 2j + b] = cell (i, j) of the plain map of the image moved by (-+shift, -+shift) (view (a, b)),
    and the logits are the four views' mean."""
    (plain_map, stitched_map), (plain_logits, stitched_logits) = _plain_and(tmp_path, stitch_shift=4)
    images = np.random.default_rng(2).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    views = {(a, b): padded[:, 8 * a:8 * a + 48, 8 * b:8 * b + 48] for a in (0, 1) for b in (0, 1)}  # shows p -+ 4
    got = stitched_map(images).numpy()
    assert got.shape[1:3] == (6, 6)
    for (a, b), view in views.items():
        np.testing.assert_allclose(got[:, a::2, b::2], plain_map(view).numpy(), atol=1e-5)
    np.testing.assert_allclose(stitched_logits(images).numpy(),
                               np.mean([plain_logits(view).numpy() for view in views.values()], axis=0), atol=1e-5)
