"""--weights FILE for every keras.applications backbone: a local ImageNet-style file is loaded (weights equal after
the build), and a file that does not fit is refused naming the backbone, the file and what is expected.

No download is possible here, so the files are made like Keras's own: a freshly built backbone without its top
(another seed than the model's), saved as legacy HDF5 (the `..._notop.h5` format Keras downloads) or as
`.weights.h5` (Keras 3's format)."""
import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from radiograph.registry import get_task
from train.backbones import BACKBONES, CUT_LAYERS, HEAD, build_model

PRETRAINED = [name for name, backbone in BACKBONES.items() if backbone.constructor is not None]
HEAVY = {"inception_resnet_v2", "resnet152"}  # ~55-60M parameters: files of ~230 MB


def donor_network(name, size, top=False, seed=7):
    backbone = BACKBONES[name]
    keras.utils.set_random_seed(seed)
    extra = {"include_preprocessing": True} if backbone.constructor is keras.applications.MobileNetV3Small else {}
    return backbone.constructor(include_top=top, weights=None, input_shape=(size, size, 3), **extra)


def save_as_keras_download(network, path):
    """Legacy HDF5 weights, the layout of the files Keras downloads into ~/.keras/models/."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, network)
    return path


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in PRETRAINED])
def test_a_local_imagenet_file_is_loaded_into_every_backbone(name, tmp_path):
    size = BACKBONES[name].min_size
    donor = donor_network(name, size)
    path = save_as_keras_download(donor, tmp_path / BACKBONES[name].imagenet_file)
    keras.utils.set_random_seed(0)  # another start than the donor's: equality below means the file was loaded
    model = build_model(get_task("knee"), name, image_size=size, weights=path)
    # the backbone's layers in order (their automatic names differ between two builds in one process)
    added = set(HEAD + CUT_LAYERS) | {"normalise"}
    loaded = [w for layer in model.layers if layer.name not in added for w in layer.get_weights()]
    saved = donor.get_weights()[:len(loaded)]  # compact16: the model ends at the cut
    assert len(loaded) > 50 and [w.shape for w in loaded] == [w.shape for w in saved]
    for mine, theirs in zip(loaded, saved):
        np.testing.assert_array_equal(mine, theirs)


def test_a_keras3_weights_file_loads_too(tmp_path):
    donor = donor_network("densenet121", 32)
    donor.save_weights(tmp_path / "densenet121.weights.h5")
    model = build_model(get_task("knee"), "densenet121", image_size=32, weights=tmp_path / "densenet121.weights.h5")
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  donor.get_layer("conv1_conv").get_weights()[0])


def test_files_that_do_not_fit_the_backbone_are_refused_clearly(tmp_path):
    compact = save_as_keras_download(donor_network("compact", 32), tmp_path / "compact_notop.h5")
    with_top = save_as_keras_download(donor_network("compact", 32, top=True), tmp_path / "compact_top.h5")
    donor_network("compact", 32, top=True).save_weights(tmp_path / "compact_top.weights.h5")
    truncated = tmp_path / "truncated_notop.h5"
    truncated.write_bytes(compact.read_bytes()[: compact.stat().st_size // 2])
    cases = [("densenet121", compact, "Layer count mismatch"),  # another backbone's file
             ("compact", with_top, "Layer count mismatch"),  # the network with its top
             ("compact", tmp_path / "compact_top.weights.h5", "the file holds 210 arrays"),  # Keras loads part
             ("compact", truncated, "truncated file")]
    for name, path, keras_said in cases:
        with pytest.raises(ValueError) as refused:
            build_model(get_task("knee"), name, image_size=32, weights=path)
        message = str(refused.value)
        assert f"{path} is not ImageNet weights for the {name} backbone without its top" in message
        assert BACKBONES[name].imagenet_file in message and keras_said in message
