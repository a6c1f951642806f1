"""One analysis of one radiograph (or one MURA study): what the app and its API return.

    service = Service(Path("models"))                     # every task with a model folder; loads once
    analysis = service.analyse("knee", "examples/knee/9143052L.png")
    analysis.result()                                     # JSON-serialisable: probabilities, decision, model, timings
    analysis.overlay(class_index=3, opacity=0.5)          # RGB uint8 at the original image's size

An analysis keeps the heatmap of every class (one batched Grad-CAM call on the
Keras path, one matrix product on the ONNX path), so choosing another class or
opacity re-renders the overlay without running the model again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiograph.cam import hottest_region, outline, overlay, score_names
from radiograph.explain import Explainer
from radiograph.geometry import FeatureGrid, Letterbox, on_original
from radiograph.imaging import load_for_model
from radiograph.cards import ModelCard
from radiograph.decision import decide, heatmap_classes, study_probabilities
from radiograph.inference import OnnxModel
from radiograph.registry import TASKS


@dataclass
class Analysis:
    """One image through one model: probabilities, decision, every class's heatmap, timings."""

    card: ModelCard
    model: dict  # OnnxModel.describe() plus the CAM path
    name: str
    display: np.ndarray  # 2-D uint8: the whole decoded image, longer side at most imaging.DISPLAY_SIDE
    geometry: Letterbox  # `original`: the file's own size
    probabilities: np.ndarray
    heatmaps: np.ndarray  # [C, h, w], each scaled to [0, 1] (all zero where the class has no positive evidence)
    flat: list[bool]
    timings_ms: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # values of the file the loader did not trust and worked around

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    @property
    def shown_classes(self) -> list[int]:
        """The default heatmaps (radiograph.decision.heatmap_classes); the overlay shows the first."""
        return heatmap_classes(self.card, self.probabilities)

    @property
    def shown_class(self) -> int:
        return self.shown_classes[0]

    def heatmap_on_display(self, class_index: int) -> np.ndarray | None:
        if self.flat[class_index]:
            return None
        return on_original(self.heatmaps[class_index], self.geometry, FeatureGrid.from_card(self.card),
                           self.display.shape)

    def overlay(self, class_index: int | None = None, opacity: float = 0.4, region: bool = False) -> np.ndarray:
        """RGB uint8 at the display size (the input's size up to imaging.DISPLAY_SIDE a side); `region` outlines
        the hottest region and draws its bounding box."""
        class_index = self.shown_class if class_index is None else class_index
        heatmap = self.heatmap_on_display(class_index)
        picture = overlay(self.display, heatmap, opacity)
        if region and heatmap is not None:
            picture = outline(picture, hottest_region(heatmap))
        return picture

    def region(self, class_index: int) -> list[float] | None:
        """The hottest region's bounding box (x, y, width, height) in the original image's pixels."""
        heatmap = self.heatmap_on_display(class_index)
        found = hottest_region(heatmap) if heatmap is not None else None
        if not found:
            return None
        (height, width), (shown_height, shown_width) = self.geometry.original, self.display.shape
        x, y, w, h = found[0]
        sx, sy = width / shown_width, height / shown_height
        return [round(x * sx, 1), round(y * sy, 1), round(w * sx, 1), round(h * sy, 1)]

    def result(self, class_index: int | None = None) -> dict:
        """Everything a script needs, JSON-serialisable."""
        shown = self.shown_classes
        class_index = shown[0] if class_index is None else class_index
        height, width = self.geometry.original
        scores = score_names(self.labels, self.card.heatmap_versus)
        described = {c: {"class": self.labels[c], "score": scores[c], "flat": self.flat[c],
                         "hottest_region_xywh": self.region(c)}  # each region once: it maps a full-size map
                     for c in dict.fromkeys([class_index, *shown])}
        return {
            "task": self.card.task, "file": self.name,
            "image": {"width": width, "height": height, "notes": list(self.notes),
                      "overlay_width": self.display.shape[1], "overlay_height": self.display.shape[0]},
            "probabilities": {label: float(p) for label, p in zip(self.labels, self.probabilities)},
            "decision": decide(self.card, self.probabilities),
            "heatmap": {**described[class_index], "method": self.model["cam_path"],
                        "flat_classes": [label for label, flat in zip(self.labels, self.flat) if flat]},
            "heatmaps": [described[c] for c in shown],  # the default ones (e.g. every positive finding)
            "model": self.model, "timings_ms": self.timings_ms, "notice": self.card.notice,
        }


class UnusableResult(ValueError):
    """The model gave something that is not a result (a probability that is not finite): an error, never shown."""


class Service:
    """The loaded models of every task (once), and the analyses the app serves from them.

    A task whose model fails verification or loading is left out of `models` and its reason kept in
    `unavailable`, so the other tasks keep serving; `strict=True` raises instead."""

    def __init__(self, models: Path, tasks: list[str] | None = None, cam_path: str = "auto", device: str = "auto",
                 variant: str = "fp32", strict: bool = False):
        tasks = tasks or [task for task in TASKS if (Path(models) / task / "card.json").exists()]
        if not tasks:
            raise FileNotFoundError(f"no model folders with a card.json under {models}")
        self.models: dict[str, OnnxModel] = {}
        self.explainers: dict[str, Explainer] = {}
        self.unavailable: dict[str, str] = {}
        for task in tasks:
            try:
                self.models[task] = OnnxModel(Path(models) / task, variant=variant, device=device)
                self.explainers[task] = Explainer(self.models[task], cam_path)
            except Exception as error:  # noqa: BLE001 - any failure disables this task only (unless strict)
                if strict:
                    raise
                self.models.pop(task, None)
                self.unavailable[task] = f"{type(error).__name__}: {error}"
        if not self.models:
            raise RuntimeError("no model could be loaded: " + "; ".join(f"{t}: {r}" for t, r in self.unavailable.items()))

    @property
    def tasks(self) -> list[str]:
        """Every task the service was asked for, loaded or not, in registry order."""
        return [task for task in TASKS if task in self.models or task in self.unavailable]

    def warm_up(self) -> None:
        """Run every model's heatmaps once (the Keras path traces its graph on the first call)."""
        for task, model in self.models.items():
            blank = np.zeros((1, model.size, model.size, 1), np.float32)
            self.explainers[task].heatmaps(blank, model.run(blank).features[0])

    def describe(self, task: str) -> dict:
        return {**self.models[task].describe(), "cam_path": self.explainers[task].path}

    def analyse(self, task: str, source, name: str | None = None) -> Analysis:
        """Decode, predict and explain one file (path or bytes); raises ImageLoadError for unreadable input and
        UnusableResult when the model's output is not finite."""
        model, explainer = self.models[task], self.explainers[task]
        start = time.perf_counter()
        image, geometry, display, notes = load_for_model(source, model.size, name)
        decoded = time.perf_counter()
        output = model.run(image[None])
        probabilities = output.probabilities[0]
        if not np.isfinite(probabilities).all():
            raise UnusableResult(f"{name or 'input'}: the model returned a probability that is not a finite number "
                                 "for this image, so there is no result; the image's values may be out of range")
        predicted = time.perf_counter()
        heatmaps, flat = explainer.heatmaps(image[None], output.features[0])
        explained = time.perf_counter()
        timings = {"decode": (decoded - start) * 1e3, "inference": (predicted - decoded) * 1e3,
                   "cam": (explained - predicted) * 1e3, "total": (explained - start) * 1e3}
        return Analysis(model.card, self.describe(task), name or Path(str(source)).name, display, geometry,
                        probabilities, heatmaps, flat, {k: round(v, 2) for k, v in timings.items()}, notes)

    def analyse_study(self, task: str, sources: list, names: list[str] | None = None) -> tuple[list[Analysis], dict]:
        """Every view of one study of a task whose card groups images into studies, and the study's result
        (probabilities: the mean over its views, decided by the card's rule)."""
        if self.models[task].card.study is None:
            raise ValueError(f"{task} does not group images into studies")
        if not sources:
            raise ValueError("a study needs at least one image")
        names = names or [Path(str(source)).name for source in sources]
        views = [self.analyse(task, source, name) for source, name in zip(sources, names)]
        card = views[0].card
        mean = study_probabilities([view.probabilities for view in views])
        study = {"task": task, "views": len(views), "files": names,
                 "probabilities": dict(zip(card.labels, mean.tolist())), "decision": decide(card, mean),
                 "per_view": [view.result() for view in views], "model": views[0].model,
                 "timings_ms": {key: round(sum(view.timings_ms[key] for view in views), 2) for key in views[0].timings_ms},
                 "notice": card.notice}
        return views, study
