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
    """[2N, h, w, K] from a MirrorPair batch -> [N, h, w, K]: each map averaged with its mirror's, mirrored back.

    The result is mirror-equivariant (an image mirrored gives the map mirrored), so the class activation
    map cannot lean to one side of a finding; GAP -> Dense on it is the mean of both views' logits.
    """

    def call(self, maps):
        count = ops.shape(maps)[0] // 2
        return (maps[:count] + maps[count:, :, ::-1]) * 0.5

    def compute_output_shape(self, input_shape):
        return (None if input_shape[0] is None else input_shape[0] // 2, *input_shape[1:])


def load_model(path):
    """A .keras model of this project (its registered layers known), read with safe_mode and no optimizer."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)
