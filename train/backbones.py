"""Backbones and the one model contract every task follows.

    model = build_model(get_task("knee"), backbone="xception", image_size=224, weights=None)

Graph (DESIGN.md contract 3 and 4):

    image float32 [N, H, W, 1], 0-255
      [-> with stitch_shift: each image moved by -+shift both ways, 4N images]
      [-> with mirror=True: the batch and its left-right mirror, 2N images]
      -> channel replication and the backbone's own normalisation (inside the graph)
      -> backbone [-> with mirror=True: each map averaged with its mirror's, flipped back]
                  [-> with stitch_shift: the four views' maps interleaved, a map of half the stride]
      -> `features` (the last conv map; Grad-CAM's layer)
      -> GlobalAveragePooling `pool` -> Dropout `dropout` -> Dense `logits`
      -> softmax or sigmoid `probabilities`

The seed projects' backbones come from `keras.applications` (Xception, ResNet50
and InceptionResNetV2 from the knee project; DenseNet121, InceptionV3 and
ResNet152 from the MURA and chest projects), plus the pneumonia project's
small four-block CNN, `compact`, a MobileNetV3-Small sized for CPU demo
models (files under 10 MB), and `compact16`, the same cut after its stride-16 stage
(a twice finer Grad-CAM map). Weights: None (random; nothing is downloaded),
"imagenet" (downloaded by Keras, needs internet), a path to a local
weights file for the backbone without its top, or a trained `.keras` model of
this project with the same backbone (its backbone is copied by layer name,
the head is new: transfer between tasks, e.g. chest14 from pneumonia).
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import keras
import numpy as np
from keras import layers

from radiograph.layers import MirrorAverage, MirrorPair, Stitch, StitchViews, load_model
from radiograph.registry import TaskSpec

# How each family normalises its RGB input (keras.applications' preprocess_input modes).
# "caffe" also swaps RGB to BGR, a no-op here: the three channels are one gray image.
Normalisation = Literal["tf", "torch", "caffe", "unit", "raw"]
BATCH_NORM_MOMENTUM = 0.9
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: Callable | None  # keras.applications class; None = built here
    normalisation: Normalisation
    min_size: int  # smallest input side the architecture accepts
    channels: int = 3  # the ImageNet architectures take RGB: the gray image is replicated
    cut: str | None = None  # end the network at this layer (a finer feature map for Grad-CAM), then a 1x1 conv
    imagenet_file: str | None = None  # the ImageNet weights without top that Keras downloads (~/.keras/models/)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("xception", keras.applications.Xception, "tf", 71,
                 imagenet_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("resnet50", keras.applications.ResNet50, "caffe", 32,
                 imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("inception_resnet_v2", keras.applications.InceptionResNetV2, "tf", 75,
                 imagenet_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("densenet121", keras.applications.DenseNet121, "torch", 32,
                 imagenet_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("inception_v3", keras.applications.InceptionV3, "tf", 75,
                 imagenet_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("resnet152", keras.applications.ResNet152, "caffe", 32,
                 imagenet_file="resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("small_cnn", None, "unit", 32, channels=1),
        Backbone("compact", keras.applications.MobileNetV3Small, "raw", 32,
                 imagenet_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        Backbone("compact16", keras.applications.MobileNetV3Small, "raw", 32, cut="expanded_conv_7_add",
                 imagenet_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def _normalise(x, backbone: Backbone):
    if backbone.channels == 3:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if backbone.normalisation == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(x)
    if backbone.normalisation == "torch":
        x = layers.Rescaling(1 / 255.0, name="to_unit")(x)
        return layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="normalise")(x)
    if backbone.normalisation == "caffe":
        return layers.Normalization(mean=CAFFE_MEAN_BGR, variance=(1.0, 1.0, 1.0), name="normalise")(x)
    if backbone.normalisation == "unit":
        return layers.Rescaling(1 / 255.0, name="normalise")(x)
    return x  # "raw": the architecture rescales 0-255 itself (MobileNetV3's include_preprocessing)


def small_cnn(x):
    """The pneumonia seed project's CNN: four conv blocks (32-64-128-256 filters), each conv-conv-BN, pooled between."""
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv1")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv2")(x)
        x = layers.BatchNormalization(name=f"block{block}_bn")(x)
    return x


def build_model(spec: TaskSpec, backbone: str | None = None, image_size: int | None = None,
                weights: str | Path | None = None, dropout_rate: float = 0.3, mirror: bool = False,
                mirror_offset: int = 0, stitch_shift: int = 0) -> keras.Model:
    """The task's model: one-channel 0-255 `image` in, `probabilities` out, `features` named for Grad-CAM.

    `mirror`: the backbone sees each image and its left-right mirror (one batch of 2N) and `features` is
    the mean of the two maps, the mirror's flipped back (MirrorPair, MirrorAverage, its columns paired with
    `mirror_offset`): twice the compute, a mirror-equivariant map, and the logits the mean of both views'.
    `stitch_shift`: the backbone also sees each image moved by -+shift pixels both ways (four views) and
    `features` interleaves their maps (StitchViews, Stitch): with a shift of a quarter of the backbone's
    stride, a map of half its stride, four times the compute, and the logits the mean of the four views'.
    Neither setting adds weights: train.maps sets them on a trained model.
    """
    chosen = get_backbone(backbone or spec.backbone)
    size = image_size or spec.image_size
    if size < chosen.min_size:
        raise ValueError(f"{chosen.name} needs an input of at least {chosen.min_size} pixels, got {size}")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(f"weights must be none, imagenet or an existing file; {weights} does not exist")
    donor = Path(weights) if weights not in (None, "imagenet") and str(weights).endswith(".keras") else None
    if donor is not None:  # another trained model of this project: built empty, then its backbone copied
        model = build_model(spec, chosen.name, size, None, dropout_rate, mirror, mirror_offset, stitch_shift)
        transfer_backbone(model, donor)
        return model
    if chosen.constructor is None and weights is not None:
        raise ValueError(f"{chosen.name} has no pretrained weights; train it with --weights none")

    image = keras.Input((size, size, 1), name="image")
    x = StitchViews(stitch_shift, name="stitch_views")(image) if stitch_shift else image
    x = _normalise(MirrorPair(name="mirror_pair")(x) if mirror else x, chosen)
    if chosen.constructor is None:
        x = small_cnn(x)
    else:
        kwargs = {"include_preprocessing": True} if chosen.constructor is keras.applications.MobileNetV3Small else {}
        network = chosen.constructor(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                                     input_tensor=x, **kwargs)
        if weights not in (None, "imagenet"):
            load_backbone_weights(network, chosen, Path(weights))
        x = network.output
        if chosen.cut:  # stride 16 instead of 32: twice the heatmap resolution
            x = network.get_layer(chosen.cut).output
            x = layers.Conv2D(256, 1, use_bias=False, name=CUT_LAYERS[0])(x)
            x = layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=CUT_LAYERS[1])(x)
            x = layers.Activation("hard_swish", name=CUT_LAYERS[2])(x)
        for layer in network.layers:  # keras.applications use momentum up to 0.999: tuned for ImageNet-length
            if isinstance(layer, layers.BatchNormalization):  # runs; from scratch on a few thousand images
                layer.momentum = min(layer.momentum, BATCH_NORM_MOMENTUM)  # validation would lag for dozens of epochs
    if mirror:
        x = MirrorAverage(mirror_offset, name="mirror_average")(x)
    if stitch_shift:
        x = Stitch(stitch_shift, name="stitch")(x)
    features = layers.Activation("linear", name="features")(x)  # the map that feeds the pooling
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    pooled = layers.Dropout(dropout_rate, name="dropout")(pooled)
    logits = layers.Dense(spec.num_classes, name="logits", dtype="float32")(pooled)  # float32 under mixed precision
    probabilities = layers.Activation(spec.head, name="probabilities", dtype="float32")(logits)
    return keras.Model(image, probabilities, name=f"{spec.id}_{chosen.name}")


def load_backbone_weights(network: keras.Model, backbone: Backbone, path: Path) -> None:
    """Load a local ImageNet weights file into the keras.applications network (built without its top).

    Accepted: the `..._notop.h5` file Keras itself downloads for this architecture (`Backbone.imagenet_file`,
    legacy HDF5, matched layer by layer in order), or a `.weights.h5` saved from the same constructor with
    `include_top=False`. Keras's own errors for another file are cryptic, and a `.weights.h5` of the network
    with its top loads with only warnings, leaving layers at their random start; every mismatch (warnings
    included) is refused here with one message naming the backbone, the file and what is expected.
    """
    try:
        if path.name.endswith(".weights.h5"):  # Keras 3 loads such a file by layer path and can skip layers
            held = weight_arrays_in(path)
            wanted = [tuple(w.shape) for w in network.weights]
            if sorted(held) != sorted(wanted):
                raise ValueError(f"the file holds {len(held)} arrays ({sum(np.prod(s) for s in held):,.0f} values), "
                                 f"the network {len(wanted)} ({network.count_params():,} values)")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a partial load only warns: make it fail
            network.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError, UserWarning) as error:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not ImageNet weights for the {backbone.name} backbone without its top "
            f"(keras.applications.{backbone.constructor.__name__}(include_top=False)); expected the file Keras "
            f"downloads for it, {backbone.imagenet_file}, or a .weights.h5 saved from that network "
            f"({reason})") from None


def weight_arrays_in(path: Path) -> list[tuple[int, ...]]:
    """The shapes of every array stored in an HDF5 weights file."""
    import h5py

    shapes = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda _, item: shapes.append(tuple(item.shape)) if isinstance(item, h5py.Dataset) else None)
    return shapes


HEAD = ("pool", "dropout", "logits", "probabilities")
CUT_LAYERS = ("cut_conv", "cut_bn", "cut_act")  # added after a cut backbone: new, so trained with the head


def transfer_backbone(model: keras.Model, donor_path: Path) -> int:
    """Copy every backbone layer's weights from a trained .keras model of the same backbone (by layer name).

    The head is left as built (the donor's task has other classes), and so are the layers added after a cut
    (CUT_LAYERS) when the donor is the uncut network: `compact16` starts from a `compact` donor.
    Refuses a donor of another architecture.
    """
    donor = load_model(donor_path)
    theirs = {layer.name: layer for layer in donor.layers}
    copied = missing = 0
    for layer in model.layers:
        if layer.name in HEAD or not layer.weights:
            continue
        source = theirs.get(layer.name)
        if source is None and layer.name in CUT_LAYERS:
            continue
        if source is None or [w.shape for w in source.weights] != [w.shape for w in layer.weights]:
            missing += 1
            continue
        layer.set_weights(source.get_weights())
        copied += 1
    if missing or not copied:
        raise ValueError(f"{donor_path} does not share this backbone: {missing} of {missing + copied} weighted "
                         f"layers have no same-named, same-shaped layer in it")
    return copied


def save_model(model: keras.Model, path: Path) -> Path:
    """Save for shipping: no optimizer state, and a deflated archive.

    Keras writes .keras archives uncompressed, and the HDF5 weights of a many-layered network are
    mostly padding: `compact` goes from 11.9 MB to 3.5 MB, under the 10 MB a Space takes without LFS.
    Keras reads the deflated archive as it is.
    """
    path = Path(path)
    shipped = keras.models.clone_model(model)  # an uncompiled copy: the optimizer state is not saved
    shipped.set_weights(model.get_weights())
    temporary = path.with_name(path.stem + ".uncompressed.keras")
    shipped.save(temporary)
    with zipfile.ZipFile(temporary) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    temporary.unlink()
    return path
