"""Class-imbalance handling: class weights for single-label heads, weighted BCE for multi-label ones.

    weights = class_weights(counts)                  # softmax tasks: N / (K * n_c), mean weight 1
    loss = WeightedBinaryCrossentropy(positive_fraction)  # chest14, as in the ChestX-ray14 course:
        per class c: w_pos = fraction of negatives, w_neg = fraction of positives,
        loss = -mean_c [ w_pos * y log p + w_neg * (1 - y) log(1 - p) ]
so that positives and negatives of every class contribute equally to the loss.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def class_weights(counts) -> dict[int, float]:
    """Balanced weights N / (K * n_c) from per-class counts; a class with no example gets weight 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no examples to weigh")
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {index: float(weight) for index, weight in enumerate(weights)}


def positive_fraction(targets) -> np.ndarray:
    """Per-class fraction of positive examples in a multi-hot target matrix [N, C]."""
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or not len(targets):
        raise ValueError("targets must be a non-empty [examples, classes] matrix")
    return targets.mean(axis=0)


@keras.saving.register_keras_serializable(package="radiograph")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    def __init__(self, positive_fraction, epsilon: float = 1e-7, name="weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_fraction = [float(f) for f in np.asarray(positive_fraction).ravel()]
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        positive = ops.convert_to_tensor(self.positive_fraction, dtype=y_pred.dtype)
        y_true = ops.cast(y_true, y_pred.dtype)
        y_pred = ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon)
        per_class = -((1.0 - positive) * y_true * ops.log(y_pred) + positive * (1.0 - y_true) * ops.log(1.0 - y_pred))
        return ops.mean(per_class, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_fraction": self.positive_fraction, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="radiograph")
class AbnormalityAUC(keras.metrics.AUC):
    """MURA's validation score: AUC of P(abnormal), the sum of the part x abnormal columns (the odd ones).

    The plain 14-column AUC is dominated by the body part, which is learnt in a few epochs: monitoring it,
    early stopping and learning-rate reduction fire before the model has learnt the abnormality.
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(ops.sum(y_true[:, 1::2], axis=1), ops.sum(y_pred[:, 1::2], axis=1), sample_weight)


def monitored_auc(task: str, multi_label: bool) -> keras.metrics.Metric:
    """The validation AUC that early stopping, learning-rate reduction and checkpointing follow."""
    if task == "mura":
        return AbnormalityAUC(name="auc")
    return keras.metrics.AUC(name="auc", multi_label=multi_label)
