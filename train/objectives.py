"""Class-imbalance handling by the task's policy (registry.TaskSpec.imbalance), and the monitored validation AUC.

    loss, weights, record = imbalance_objective(spec, train_targets)
    weights = class_weights(counts)                  # "class_weight": N / (K * n_c), mean weight 1
    loss = WeightedBinaryCrossentropy(positive_fraction)  # "weighted_bce" (chest14), as in the ChestX-ray14 course:
        per class c: w_pos = fraction of negatives, w_neg = fraction of positives,
        loss = -mean_c [ w_pos * y log p + w_neg * (1 - y) log(1 - p) ]
so that positives and negatives of every class contribute equally to the loss.

    metric = monitored_auc(spec)                     # a grouped decision (MURA): AUC of its positive score
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from radiograph.registry import TaskSpec


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


def imbalance_objective(spec: TaskSpec, train_targets) -> tuple[keras.losses.Loss, dict[int, float] | None, dict]:
    """(loss, class weights for `fit`, what the config records) by the task's imbalance policy (`spec.imbalance`):
    `weighted_bce` a WeightedBinaryCrossentropy from the training split's positive fractions and no class
    weights; `class_weight` categorical cross-entropy with balanced class weights from its counts."""
    if spec.imbalance == "weighted_bce":
        fractions = positive_fraction(train_targets)
        return WeightedBinaryCrossentropy(fractions), None, {"positive_fraction": dict(zip(spec.labels,
                                                                                          fractions.tolist()))}
    weights_by_class = class_weights(np.asarray(train_targets).sum(0))
    return keras.losses.CategoricalCrossentropy(), weights_by_class, {
        "class_weight": {spec.labels[i]: w for i, w in weights_by_class.items()}}


# The positive columns of models saved before AbnormalityAUC recorded them: MURA's body part x {normal, abnormal}
# layout, whose abnormal columns are the odd ones. A config without `columns` (read from such a model.keras)
# gets these; for the 14 MURA labels they are registry.MURA_DECISION.positive_columns().
LEGACY_COLUMNS = slice(1, None, 2)


@keras.saving.register_keras_serializable(package="radiograph")
class AbnormalityAUC(keras.metrics.AUC):
    """A grouped decision's validation score (registry.Decision kind "grouped"; MURA): AUC of the positive member's
    probability summed over groups, the sum of the `columns` of targets and predictions (MURA: part x abnormal).

    The plain AUC over every column is dominated by the group (the body part), learnt in a few epochs: monitoring
    it, early stopping and learning-rate reduction fire before the model has learnt the abnormality.

    `columns`: the decision's `positive_columns()`. None (the configs of models saved before the columns were
    recorded) means the odd columns, the layout those models were written with.
    """

    def __init__(self, columns=None, **kwargs):
        super().__init__(**kwargs)
        self.columns = None if columns is None else [int(c) for c in columns]

    def _positive(self, values):
        if self.columns is None:
            return ops.sum(values[:, LEGACY_COLUMNS], axis=1)
        return ops.sum(ops.take(values, self.columns, axis=1), axis=1)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._positive(y_true), self._positive(y_pred), sample_weight)

    def get_config(self):
        return {**super().get_config(), "columns": self.columns}


def monitored_auc(spec: TaskSpec) -> keras.metrics.Metric:
    """The validation AUC that early stopping, learning-rate reduction and checkpointing follow: for a grouped
    decision the AUC of its positive score (`AbnormalityAUC` over `spec.decision.positive_columns()`), else the
    AUC over the labels (multi-label for sigmoid heads)."""
    if spec.decision.kind == "grouped":
        return AbnormalityAUC(columns=spec.decision.positive_columns(), name="auc")
    return keras.metrics.AUC(name="auc", multi_label=spec.multi_label)
