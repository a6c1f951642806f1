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
