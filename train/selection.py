"""Which epoch's weights a training run keeps: by validation AUC, validation loss, or where its maps point.

`--select-by auc` (the default) keeps the epoch with the best validation AUC.
`--select-by loss` keeps the epoch with the lowest validation loss (ties: the
earlier epoch). An AUC ranks: once validation's classes are separated it sits
at its ceiling, and the first epoch that reaches it is kept however
undertrained (a pneumonia retrain reached 0.9996 on 207 validation films at
epoch 3 and kept it: test AUC 0.998, where five other runs of its recipe gave
0.9995-1.0). The loss, a proper scoring rule, still tells such epochs apart.
`--select-by pointing_game` keeps, among the epochs whose validation AUC is
within `--auc-tolerance` of the run's best, the one whose class activation
maps hit the validation split's true boxes most often (ties: the higher AUC,
then the earlier epoch). The maps are the ones serving shows: the `features`
map times the logits kernel with each class's heatmap score folded in
(radiograph.cam), mapped back onto the original image and scored as
`python -m train.evaluate --localisation` scores them (radiograph.localisation). The learning-rate
schedule and early stopping follow validation AUC whatever the rule; only the
choice of the kept epoch changes. Test boxes are never looked at.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np

from radiograph.cam import score_matrix
from radiograph.geometry import feature_grid
from radiograph.imaging import load_for_model
from radiograph.localisation import localisation_summary, score_finding
from radiograph.registry import TaskSpec
from train.evaluate import boxed_findings

SELECT_BY = ("auc", "loss", "pointing_game")


class ValidationPointingGame(keras.callbacks.Callback):
    """Adds `val_pointing_game` to every epoch's logs: over the validation split's boxed findings, or their
    mean over classes for multi-label heads (the figure the chest14 target is stated in)."""

    def __init__(self, spec: TaskSpec, boxes, val_samples, image_size: int, batch_size: int):
        super().__init__()
        self.findings = boxed_findings(boxes, val_samples, spec.labels)
        if not self.findings:
            raise ValueError("--select-by pointing_game needs true boxes on validation images, and this dataset "
                             "has none there (phantom sets have them; of the real datasets only NIH ChestX-ray14 "
                             "ships boxes, BBox_List_2017.csv, and they count only where their images fall in the "
                             "validation split). Use --select-by auc.")
        self.spec, self.batch_size = spec, batch_size
        self.scores = score_matrix(spec.labels, spec.heatmap_versus)  # folds each class's heatmap score into the kernel
        paths = sorted({path for path, _, _ in self.findings}, key=str)
        self.row = {path: i for i, path in enumerate(paths)}
        loaded = [load_for_model(path, image_size) for path in paths]
        self.images = np.stack([item.tensor for item in loaded])
        self.geometries = [item.geometry for item in loaded]

    def set_model(self, model):
        super().set_model(model)
        self.features = keras.Model(model.inputs, model.get_layer("features").output)  # shares the model's layers
        self.grid = feature_grid(model.get_config())

    def on_epoch_end(self, epoch, logs=None):
        logs["val_pointing_game"] = self.figure(self.summary(self.model, self.features, self.grid))

    def summary(self, model, features=None, grid=None) -> dict:
        """`localisation_summary` of `model`'s maps on these findings (any model of this task and input size;
        its features sub-model and grid are built when not given)."""
        if features is None:
            features = keras.Model(model.inputs, model.get_layer("features").output)
        maps = features.predict(self.images, batch_size=self.batch_size, verbose=0)
        kernel = model.get_layer("logits").get_weights()[0] @ self.scores
        grid = feature_grid(model.get_config()) if grid is None else grid
        scores: dict[str, list] = defaultdict(list)
        for path, label, boxes in self.findings:
            row = self.row[path]
            scores[label].append(score_finding(maps[row], kernel, self.spec.labels.index(label),
                                               self.geometries[row], boxes, grid))
        return localisation_summary(scores)

    def figure(self, summary: dict) -> float:
        return summary["pointing_game_mean_over_classes" if self.spec.multi_label else "pointing_game"]

    def standard_error(self, summary: dict) -> float:
        """The figure's binomial standard error (for a mean over classes, the classes' errors combined)."""
        if self.spec.multi_label:
            rows = list(summary["per_class"].values())
            variance = sum(r["pointing_game"] * (1 - r["pointing_game"]) / r["findings"] for r in rows)
            return float(np.sqrt(variance) / len(rows))
        hit_rate = summary["pointing_game"]
        return float(np.sqrt(hit_rate * (1 - hit_rate) / summary["findings"]))


def chosen_epoch(history: list[dict], select_by: str, auc_tolerance: float) -> int:
    """Index of the epoch to keep (see the module docstring); `history` holds each epoch's logs."""
    if select_by == "loss":
        return min(range(len(history)), key=lambda i: history[i]["val_loss"])
    best = max(h["val_auc"] for h in history)
    if select_by == "auc":
        return max(range(len(history)), key=lambda i: history[i]["val_auc"])
    eligible = [i for i, h in enumerate(history) if h["val_auc"] >= best - auc_tolerance]
    return max(eligible, key=lambda i: (history[i]["val_pointing_game"], history[i]["val_auc"]))


class EpochCandidates(keras.callbacks.Callback):
    """Saves every epoch's weights that may still be chosen (validation AUC within the tolerance of the best
    so far, 0 for --select-by auc; the lowest validation loss so far for --select-by loss) in a temporary
    folder, never beside the shipped files; `keep` loads the
    chosen epoch's weights into the model."""

    def __init__(self, select_by: str, auc_tolerance: float):
        super().__init__()
        self.select_by, self.tolerance = select_by, auc_tolerance if select_by == "pointing_game" else 0.0
        self.folder = tempfile.TemporaryDirectory(prefix="radiograph-train-")
        self.history: list[dict] = []

    @property
    def folder_path(self) -> Path:
        return Path(self.folder.name)

    def _path(self, index: int) -> Path:
        return self.folder_path / f"epoch-{index + 1}.weights.h5"

    def kept_indices(self) -> list[int]:
        """The epochs whose weights are still held (those that may yet be chosen)."""
        return [index for index in range(len(self.history)) if self._path(index).exists()]

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({key: float(value) for key, value in logs.items()})
        self.model.save_weights(str(self._path(len(self.history) - 1)))
        if self.select_by == "loss":  # only the lowest loss so far may still be chosen
            lowest = min(h["val_loss"] for h in self.history)
            out = [index for index, record in enumerate(self.history) if record["val_loss"] > lowest]
        else:
            best = max(h["val_auc"] for h in self.history)
            out = [index for index, record in enumerate(self.history) if record["val_auc"] < best - self.tolerance]
        for index in out:
            self._path(index).unlink(missing_ok=True)

    def keep(self) -> dict:
        """Load the chosen epoch into the model, clean up, and say which it was and why."""
        index = chosen_epoch(self.history, self.select_by, self.tolerance)
        self.model.load_weights(str(self._path(index)))
        self.folder.cleanup()
        tolerance = self.tolerance if self.select_by == "pointing_game" else None
        return {"select_by": self.select_by, "auc_tolerance": tolerance,
                "kept_epoch": index + 1, "best_val_auc": max(h["val_auc"] for h in self.history),
                **{key: value for key, value in self.history[index].items() if key.startswith("val_")}}
