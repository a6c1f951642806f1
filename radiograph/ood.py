"""Out-of-distribution score: how far an image's pooled `features` lie from the training split's.

    gate = FeatureDistance.load(Path("models/chest14"), card)    # None for a card without an `ood` section
    output = model.run(batch)                                     # radiograph.inference.OnnxModel
    distance = gate.score(output.features[0])                     # one image's [h, w, K] map -> float
    unusual = distance > gate.threshold                           # chosen on validation at gate.false_alarm_rate

The score is the Mahalanobis distance of the globally pooled feature vector (the mean of the model's own
`features` map over h and w: exactly what its classifier head reads) to the pooled features of the task's
training split, under their mean and a Ledoit-Wolf shrunk covariance. `python -m train.ood` fits it and chooses
the threshold as a quantile of the validation split's distances (docs/ood.md).

Why the full shrunk covariance and not a PCA-reduced one (measured, docs/ood.md): with ~2000 training images
and K = 256 or 576 channels, the leading components carry the training images' own variation, and foreign images
differ mostly in the directions that barely vary in training, which PCA drops. On the shipped knee model, with the
threshold at the 99% quantile of its validation distances, other tasks' validation phantoms were flagged 39-55%
of the time by the full distance but 0-3% by a PCA distance on the components holding 95% of the variance (r = 3)
and 0-29% at 99% (r = 8); a plain Euclidean distance flagged 0-3%. Ledoit-Wolf shrinkage towards a scaled
identity keeps every direction with a floor on its variance, so none blows up (the fitted shrinkage is small,
0.001-0.003, as n is several times K). Square-root or log transforms of the pooled features helped some models
and hurt others (MURA: 100% flagged untransformed, 53-100% transformed), so the features are used as pooled.

The fitted statistics live in `models/<task>/ood.npz` (float32 `mean` [K] and `whiten` [K, K] with
`whiten @ whiten.T` the precision matrix, plus `channels` = K and `feature_shape` = [h, w, K]); the card
records its sha256 in `files` and the method, threshold and false-alarm rate in its `ood` section. A score is
one pooling and one K x K matrix-vector product (0.2-0.4 ms measured on a busy 2-core CPU, docs/ood.md).

This module imports numpy and radiograph.cards only (the light install: no TensorFlow, Keras or train/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from radiograph.cards import ModelCard, ModelFileError

FILE = "ood.npz"
METHOD = ("Mahalanobis distance of the globally pooled `features` to the training split's pooled features "
          "(their mean and a Ledoit-Wolf shrunk covariance)")


def pool(features: np.ndarray) -> np.ndarray:
    """[N, h, w, K] -> [N, K] (or [h, w, K] -> [K]): the mean over the map, as the global average pooling."""
    features = np.asarray(features, np.float32)
    if features.ndim not in (3, 4):
        raise ValueError(f"features must be [h, w, K] or [N, h, w, K], got shape {list(features.shape)}")
    return features.mean(axis=(-3, -2))


def ledoit_wolf(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean [K], shrunk covariance [K, K], shrinkage in 0..1) of pooled features [n, K] (Ledoit & Wolf 2004:
    the covariance pulled towards trace/K times the identity by the amount that minimises the expected
    squared error)."""
    x = np.asarray(pooled, np.float64)
    n, k = x.shape
    if n < 2:
        raise ValueError(f"fitting needs at least 2 images, got {n}")
    mean = x.mean(axis=0)
    x = x - mean
    sample = x.T @ x / n
    mu = np.trace(sample) / k
    d2 = np.sum((sample - mu * np.eye(k)) ** 2)
    b2 = (np.sum(np.sum(x ** 2, axis=1) ** 2) / n - np.sum(sample ** 2)) / n
    shrinkage = float(min(max(b2, 0.0), d2) / d2) if d2 > 0 else 1.0
    return mean, (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(k), shrinkage


def whitening(covariance: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """W [K, K] with W @ W.T = covariance^-1: ||(x - mean) @ W|| is the Mahalanobis distance. Eigenvalues are
    floored at `floor` times the largest (a dead channel of a tiny fit must not divide by zero)."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, np.float64))
    values = np.maximum(values, floor * max(values.max(), 1e-30))
    return vectors / np.sqrt(values)


class FeatureDistance:
    """Mahalanobis distance of an image's globally pooled `features` (mean over h, w) to the training split's
    pooled features (mean and a shrunk covariance, Ledoit-Wolf), fitted by `python -m train.ood`."""

    def __init__(self, mean: np.ndarray, whiten: np.ndarray, feature_shape: tuple[int, ...] = (),
                 threshold: float = float("inf"), false_alarm_rate: float = float("nan"), shrinkage: float = 0.0):
        self.mean = np.asarray(mean, np.float32)
        self.whiten = np.asarray(whiten, np.float32)
        if self.mean.ndim != 1 or self.whiten.shape[0] != self.mean.shape[0]:
            raise ValueError(f"mean {list(self.mean.shape)} and whitening matrix {list(self.whiten.shape)} disagree")
        self.channels = int(self.mean.shape[0])
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.threshold = float(threshold)
        self.false_alarm_rate = float(false_alarm_rate)
        self.shrinkage = float(shrinkage)

    # ------------------------------------------------------------------ fitting and files

    @classmethod
    def fit(cls, pooled: np.ndarray, feature_shape: tuple[int, ...] = ()) -> "FeatureDistance":
        """Fitted on pooled training features [n, K] (no threshold yet: see `choose_threshold`)."""
        mean, covariance, shrinkage = ledoit_wolf(pooled)
        return cls(mean, whitening(covariance), feature_shape or (np.asarray(pooled).shape[1],), shrinkage=shrinkage)

    def choose_threshold(self, pooled_validation: np.ndarray, false_alarm_rate: float) -> np.ndarray:
        """Sets the threshold to the (1 - false_alarm_rate) quantile of the validation distances; returns them."""
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"the false-alarm rate must lie strictly between 0 and 1, got {false_alarm_rate}")
        distances = self.distances(pooled_validation)
        self.threshold = float(np.quantile(distances, 1.0 - false_alarm_rate))
        self.false_alarm_rate = float(false_alarm_rate)
        return distances

    def save(self, path: Path) -> Path:
        np.savez(path, mean=self.mean, whiten=self.whiten, channels=np.int64(self.channels),
                 feature_shape=np.asarray(self.feature_shape, np.int64), shrinkage=np.float64(self.shrinkage))
        return Path(path)

    @classmethod
    def load(cls, folder: Path, card: ModelCard) -> "FeatureDistance | None":
        """The card's fitted score, or None when the card has no `ood` section (older model folders). The file's
        sha256 is checked against the card first (ModelFileError when it differs or is missing)."""
        section = card.ood
        if not section:
            return None
        path = card.verify(folder, section.get("file", FILE))
        try:
            with np.load(path, allow_pickle=False) as stored:
                values = {name: stored[name] for name in stored.files}
            score = cls(values["mean"], values["whiten"], tuple(values.get("feature_shape", ())),
                        threshold=section["threshold"], false_alarm_rate=section["false_alarm_rate"],
                        shrinkage=float(values.get("shrinkage", 0.0)))
        except (OSError, ValueError, KeyError) as error:
            raise ModelFileError(f"{path} is not a readable out-of-distribution file: {error}") from None
        if "channels" in values and int(values["channels"]) != score.channels:
            raise ModelFileError(f"{path} says {int(values['channels'])} channels but holds {score.channels}")
        return score

    # ------------------------------------------------------------------ scoring

    def distances(self, pooled: np.ndarray) -> np.ndarray:
        """Distances of pooled features [N, K]."""
        pooled = np.asarray(pooled, np.float32)
        if pooled.ndim != 2 or pooled.shape[1] != self.channels:
            raise ValueError(f"expected pooled features [N, {self.channels}], got {list(pooled.shape)}")
        return np.linalg.norm((pooled - self.mean) @ self.whiten, axis=1).astype(np.float64)

    def score(self, features: np.ndarray) -> float:
        """One image's `features` map [h, w, K] -> its distance."""
        features = np.asarray(features, np.float32)
        if features.ndim != 3 or features.shape[-1] != self.channels:
            raise ValueError(f"expected one image's features [h, w, {self.channels}], got {list(features.shape)}")
        centred = features.mean(axis=(0, 1)) - self.mean
        return float(np.sqrt(np.sum(np.square(centred @ self.whiten))))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """A batch's `features` [N, h, w, K] -> distances [N]."""
        features = np.asarray(features, np.float32)
        if features.ndim != 4:
            raise ValueError(f"expected a batch of features [N, h, w, {self.channels}], got {list(features.shape)}")
        return self.distances(pool(features))

    def above(self, features: np.ndarray) -> np.ndarray:
        """Whether each image of a batch lies beyond the threshold (out of distribution)."""
        return self.scores(features) > self.threshold
