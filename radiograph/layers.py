"""Keras layers that saved models of this project may contain (registered, so safe_mode loading works).

Only the Keras path (training, Grad-CAM) imports this module; ONNX serving does not need it.
"""
from __future__ import annotations

import keras
from keras import ops

ENSEMBLE_METHODS = ("mean", "f1", "mixvote")


@keras.saving.register_keras_serializable(package="radiograph")
class EnsembleCombine(keras.layers.Layer):
    """Combine member probabilities [N, C] (a list, one per member) into one probability vector.

    mean     the average of the members' probabilities.
    f1       per class c, sum_m w[m][c] * p_m[c] with w from validation F1 (each class's weights
             sum to 1), renormalised over classes for a softmax head.
    mixvote  each member votes for its argmax; the output is the vote share, plus a 1e-3 share of
             the mean probabilities to break ties; when every member votes differently it is the
             mean probabilities (the knee projects' "mix voting").
    """

    def __init__(self, method: str, weights: list[list[float]] | None = None, softmax: bool = True, **kwargs):
        super().__init__(**kwargs)
        if method not in ENSEMBLE_METHODS:
            raise ValueError(f"unknown ensemble method {method!r}; known: {', '.join(ENSEMBLE_METHODS)}")
        if method == "f1" and weights is None:
            raise ValueError("the f1 method needs per-member, per-class weights")
        self.method, self.member_weights, self.softmax = method, weights, softmax

    def call(self, members):
        stacked = ops.stack(members, axis=1)  # [N, M, C]
        mean = ops.mean(stacked, axis=1)
        if self.method == "mean":
            return mean
        if self.method == "f1":
            weights = ops.convert_to_tensor(self.member_weights, dtype=stacked.dtype)  # [M, C]
            combined = ops.sum(stacked * weights[None], axis=1)
            return combined / ops.sum(combined, axis=-1, keepdims=True) if self.softmax else combined
        classes = ops.shape(stacked)[-1]
        votes = ops.sum(ops.one_hot(ops.argmax(stacked, axis=-1), classes, dtype=stacked.dtype), axis=1)
        share = votes / ops.cast(len(members), stacked.dtype) + 1e-3 * mean
        share = share / ops.sum(share, axis=-1, keepdims=True)
        all_disagree = ops.max(votes, axis=-1, keepdims=True) <= 1.0
        return ops.where(all_disagree, mean, share)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "weights": self.member_weights,
                "softmax": self.softmax}


@keras.saving.register_keras_serializable(package="radiograph")
class MirrorPair(keras.layers.Layer):
    """[N, H, W, C] -> [2N, H, W, C]: the batch, then the same images mirrored left-right."""

    def call(self, images):  # a step -1 slice, not a reverse: ONNX Slice, where a reverse becomes two transposes
        return ops.concatenate([images, images[:, :, ::-1]], axis=0)

    def compute_output_shape(self, input_shape):
        return (None if input_shape[0] is None else 2 * input_shape[0], *input_shape[1:])


@keras.saving.register_keras_serializable(package="radiograph")
class MirrorAverage(keras.layers.Layer):
    """[2N, h, w, K] from a MirrorPair batch -> [N, h, w + offset, K]: each map averaged with its mirror's,
    mirrored back.

    The result is mirror-equivariant (an image mirrored gives the map mirrored), so the class activation
    map cannot lean to one side of a finding. `offset` pairs the mirror's column j with the direct map's
    column j - offset (columns without a partner keep one view's half): with 'same' padding the two views'
    cells do not sit on one grid (MobileNetV3's stride-16 cells: 15 input pixels apart at offset 0, 1 pixel at
    offset 1), and a trained network's cells may respond beside their geometric centre, to opposite sides in
    the two views; an offset that pairs cells looking at one place keeps a small finding's two responses in
    one peak instead of two (the map-settings step of training chooses it on boxes the model never trained on). The map is rescaled by
    (w + offset) / w so its global average, and so every logit, is the mean of both views' whatever the
    offset.
    """

    def __init__(self, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        if offset < 0:
            raise ValueError(f"offset must be 0 or more columns, got {offset}")
        self.offset = int(offset)

    def call(self, maps):
        count = ops.shape(maps)[0] // 2
        direct, mirrored = maps[:count], maps[count:, :, ::-1]
        if not self.offset:  # the graph the models trained at offset 0 were exported with: no Pad
            return (direct + mirrored) * 0.5
        width = maps.shape[2]
        direct = ops.pad(direct, ((0, 0), (0, 0), (self.offset, 0), (0, 0)))
        mirrored = ops.pad(mirrored, ((0, 0), (0, 0), (0, self.offset), (0, 0)))
        return (direct + mirrored) * (0.5 * (width + self.offset) / width)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (None if batch is None else batch // 2, height, width + self.offset, channels)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="radiograph")
class StitchViews(keras.layers.Layer):
    """[N, H, W, C] -> [4N, H, W, C]: four views of each image, view (a, b)'s pixel (y, x) showing image pixel
    (y + (2a - 1) * shift, x + (2b - 1) * shift), black beyond the edges, in the order (0, 0), (0, 1), (1, 0),
    (1, 1); Stitch interleaves their maps (shift-and-stitch, as in Long et al.'s fully convolutional
    networks). The views are symmetric about the image, so a mirrored image's views are the mirrors of its
    own (columns b swapped) and a mirror-averaged map stays mirror-equivariant."""

    def __init__(self, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def call(self, images):
        s, height, width = self.shift, images.shape[1], images.shape[2]
        padded = ops.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))  # view pixel p shows image pixel p + a - s
        return ops.concatenate([padded[:, a:a + height, b:b + width] for a in (0, 2 * s) for b in (0, 2 * s)], axis=0)

    def compute_output_shape(self, input_shape):
        return (None if input_shape[0] is None else 4 * input_shape[0], *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


@keras.saving.register_keras_serializable(package="radiograph")
class Stitch(keras.layers.Layer):
    """[4N, h, w, K] maps of a StitchViews batch -> [N, 2h, 2w, K]: row 2i + a, column 2j + b is cell (i, j)
    of view (a, b). With shift = stride / 4 the four grids interleave into one of half the stride, so the map
    has twice the resolution of the network's; its global average is the mean of the four views' (their
    logits averaged)."""

    def __init__(self, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def call(self, maps):
        _, height, width, channels = maps.shape
        views = ops.reshape(maps, (2, 2, -1, height, width, channels))  # [a, b, N, h, w, K]
        rows = ops.transpose(views, (2, 3, 0, 4, 1, 5))  # [N, h, a, w, b, K]
        return ops.reshape(rows, (-1, 2 * height, 2 * width, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (None if batch is None else batch // 4, 2 * height, 2 * width, channels)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


def load_model(path):
    """A .keras model of this project (its registered layers known), read with safe_mode and no optimizer."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)
