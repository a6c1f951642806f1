"""Grad-CAM and Grad-CAM++ on the retained Keras model (needs TensorFlow; serving without it uses radiograph.cam).

    cam = GradCam(radiograph.layers.load_model("models/knee/model.keras"))
    maps = cam(images, classes)          # images [N, H, W, 1] 0-255, classes [N] -> [N, h, w] >= 0

The score is the class's pre-activation logit (on a probability, a saturated
softmax or sigmoid has an all-zero gradient), or with `scores`
(radiograph.cam.score_matrix) its logit minus an alternative's, differentiated
with respect to the `features` layer, the map that feeds the pooling. Grad-CAM weights each
channel by the spatial mean of its gradient (Selvaraju et al. 2017);
Grad-CAM++ by the positive gradients weighted with the closed-form alphas of
Chattopadhay et al. 2018 for an exponential score. The computation is one
`tf.function` traced once per batch shape; the class index is a tensor, so
asking for another class does not retrace.

Ensembles (layer `member_<i>` submodels with an EnsembleCombine head) get the
rule of their combine layer's `method` (the card records it as `ensemble.heatmap`): each member's map on its own logit for
the class, scaled to [0, 1] and placed on the input by the member's own
feature grid (radiograph.geometry.feature_grid), then averaged (mean), weighted by the member's
validation F1 for the class (f1), or averaged over the members that voted for
the class, all of them when every member votes differently (mixvote).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from radiograph.cam import METHODS
from radiograph.geometry import feature_grid


def _branch(model: keras.Model) -> keras.Model:
    """image -> (feature map, logits, probabilities) of one network."""
    return keras.Model(model.input, [model.get_layer("features").output, model.get_layer("logits").output,
                                     model.output])


def members_of(model: keras.Model) -> list[keras.Model]:
    """Submodels of an ensemble (each with its own features and logits), or [model] for a single network."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith("member_")]
    return members or [model]


def member_weights(combine, probabilities: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """[N, M] weight of each member's map for each image's class, by the ensemble's combine method."""
    members, images = probabilities.shape[:2]
    if combine.method == "f1":
        return np.asarray(combine.member_weights, np.float64)[:, classes].T
    if combine.method == "mixvote":
        votes = probabilities.argmax(axis=2).T  # [N, M]
        voted = votes == classes[:, None]
        all_disagree = np.array([len(set(row)) == members for row in votes])
        return np.where((voted.any(axis=1) & ~all_disagree)[:, None], voted, True).astype(np.float64)
    return np.ones((images, members))


class GradCam:
    """Class activation maps on the Keras graph; for an ensemble, the members' maps combined by its rule."""

    def __init__(self, model: keras.Model, method: str = "gradcam", scores: np.ndarray | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        classes = int(model.output.shape[-1])
        self.scores = tf.constant(np.eye(classes) if scores is None else scores, tf.float32)  # logits -> scores
        members = members_of(model)
        self.combine = model.get_layer("probabilities") if len(members) > 1 else None
        self.size = int(model.input.shape[1])
        self.branches = [_branch(member) for member in members]
        self.grids = [feature_grid(member.get_config()) for member in members]
        self._compiled = tf.function(self._maps, reduce_retracing=True)
        self._every_class_compiled = tf.function(self._every_class_maps, reduce_retracing=True)

    def _channel_weights(self, features, gradients, method: str | None = None):
        """Per-channel weights from gradients [..., h, w, k] of the score w.r.t. features (broadcast to them), by
        `method` (default: this GradCam's)."""
        if (method or self.method) == "gradcam":
            return tf.reduce_mean(gradients, axis=(-3, -2))
        g2, g3 = tf.square(gradients), tf.pow(gradients, 3)  # Grad-CAM++ with score exp(S): d2 = g^2, d3 = g^3
        total = tf.reduce_sum(features, axis=(-3, -2), keepdims=True)
        alphas = tf.math.divide_no_nan(g2, 2.0 * g2 + total * g3)  # 0 where the denominator vanishes
        return tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=(-3, -2))

    def _maps(self, images, classes):
        maps, probabilities = [], []
        for branch in self.branches:
            with tf.GradientTape() as tape:
                tape.watch(images)  # records the graph even where no variable lies before the feature map
                features, logits, member_probabilities = branch(images, training=False)
                score = tf.gather(logits @ self.scores, classes, axis=1, batch_dims=1)  # [N]: each image's class
            weights = self._channel_weights(features, tape.gradient(score, features))  # [N, k]
            maps.append(tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights)))
            probabilities.append(member_probabilities)
        return maps, probabilities

    def _every_class_maps(self, images):
        """One forward pass per branch; the gradient of every class's score at once (a batch Jacobian), and from
        those same gradients every method's maps ({method: [per branch [N, C, h, w]]})."""
        maps, probabilities = {method: [] for method in METHODS}, []
        for branch in self.branches:
            with tf.GradientTape() as tape:
                tape.watch(images)
                features, logits, member_probabilities = branch(images, training=False)
                scores = logits @ self.scores  # [N, C]
            gradients = tape.batch_jacobian(scores, features)  # [N, C, h, w, k]
            for method in METHODS:
                weights = self._channel_weights(features[:, None], gradients, method)  # [N, C, k]
                maps[method].append(tf.nn.relu(tf.einsum("nhwk,nck->nchw", features, weights)))
            probabilities.append(member_probabilities)
        return maps, probabilities

    def __call__(self, images: np.ndarray, classes) -> np.ndarray:
        """Maps [N, h, w] >= 0 (an ensemble's: [N, H, W] at input size, each member's map scaled to [0, 1])."""
        images = tf.convert_to_tensor(np.asarray(images, np.float32))
        classes = np.broadcast_to(np.asarray(classes, np.int32), (images.shape[0],))
        maps, probabilities = self._compiled(images, tf.convert_to_tensor(classes))
        return self._combined([m.numpy() for m in maps], [p.numpy() for p in probabilities], classes)

    def every_class(self, image: np.ndarray) -> np.ndarray:
        """Every class's map for one image [1, H, W, 1] from one forward pass: [C, h, w] (an ensemble's [C, H, W])."""
        return self.every_class_by_method(image)[self.method]

    def every_class_by_method(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """`every_class` by every method at once ({"gradcam": [C, h, w], "gradcam++": ...}): one forward pass and
        one Jacobian, which both methods weight."""
        maps, probabilities = self._every_class_compiled(tf.convert_to_tensor(np.asarray(image, np.float32)))
        classes = np.arange(self.scores.shape[1], dtype=np.int32)
        repeated = [np.repeat(p.numpy(), len(classes), axis=0) for p in probabilities]  # one "image" a class
        return {method: self._combined([m.numpy()[0] for m in maps[method]], repeated, classes)  # [C, h, w] a member
                for method in METHODS}

    def _combined(self, maps: list[np.ndarray], probabilities: list[np.ndarray], classes: np.ndarray) -> np.ndarray:
        """One network's maps as they are; an ensemble's members' maps [N, h, w] combined by its rule."""
        if self.combine is None:
            return maps[0]
        scaled = np.stack([[grid.onto_input(m / (m.max() + 1e-12), self.size) for m in member]
                           for member, grid in zip(maps, self.grids)], axis=1)  # [N, M, H, W], cells placed
        weights = member_weights(self.combine, np.stack(probabilities), classes)
        return np.einsum("nmhw,nm->nhw", scaled, weights) / weights.sum(axis=1)[:, None, None]
