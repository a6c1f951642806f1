"""Grad-CAM and Grad-CAM++ on the retained Keras model (needs TensorFlow; serving without it uses radiograph.cam).

    cam = GradCam(keras.saving.load_model("models/knee/model.keras", compile=False, safe_mode=True))
    maps = cam(images, classes)          # images [N, H, W, 1] 0-255, classes [N] -> [N, h, w] >= 0

The score is the class's pre-activation logit (on a probability, a saturated
softmax or sigmoid has an all-zero gradient), differentiated with respect to
the `features` layer, the map that feeds the pooling. Grad-CAM weights each
channel by the spatial mean of its gradient (Selvaraju et al. 2017);
Grad-CAM++ by the positive gradients weighted with the closed-form alphas of
Chattopadhay et al. 2018 for an exponential score. The computation is one
`tf.function` traced once per batch shape; the class index is a tensor, so
asking for another class does not retrace.

Ensembles (layer `member_<i>` submodels with an EnsembleCombine head) get the
rule recorded in their card: the mean of the members' maps, each member's map
taken on its own logit for the class.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

METHODS = ("gradcam", "gradcam++")


def _single_maps(model: keras.Model, feature_layer: str = "features", logits_layer: str = "logits"):
    return keras.Model(model.input, [model.get_layer(feature_layer).output, model.get_layer(logits_layer).output])


def members_of(model: keras.Model) -> list[keras.Model]:
    """Submodels of an ensemble (each with its own features and logits), or [model] for a single network."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith("member_")]
    return members or [model]


class GradCam:
    def __init__(self, model: keras.Model, method: str = "gradcam"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.branches = [_single_maps(member) for member in members_of(model)]
        self._compiled = tf.function(self._maps, reduce_retracing=True)

    def _maps(self, images, classes):
        maps = []
        for branch in self.branches:
            with tf.GradientTape() as tape:
                tape.watch(images)  # records the graph even where no variable lies before the feature map
                features, logits = branch(images, training=False)
                score = tf.gather(logits, classes, axis=1, batch_dims=1)  # [N]: each image's chosen class
            gradients = tape.gradient(score, features)  # [N, h, w, k]
            if self.method == "gradcam":
                weights = tf.reduce_mean(gradients, axis=(1, 2))
            else:  # Grad-CAM++ with score exp(S): d2 = g^2, d3 = g^3 in the closed form
                g2, g3 = tf.square(gradients), tf.pow(gradients, 3)
                total = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
                denominator = 2.0 * g2 + total * g3
                alphas = tf.math.divide_no_nan(g2, denominator)  # 0 where the denominator vanishes
                weights = tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=(1, 2))
            cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights))
            maps.append(cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-12) if len(self.branches) > 1 else cam)
        return tf.add_n(maps) / len(maps)

    def __call__(self, images: np.ndarray, classes) -> np.ndarray:
        images = tf.convert_to_tensor(np.asarray(images, np.float32))
        classes = tf.convert_to_tensor(np.broadcast_to(np.asarray(classes, np.int32), (images.shape[0],)))
        return self._compiled(images, classes).numpy()
