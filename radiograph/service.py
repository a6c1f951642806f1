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

from radiograph.cam import hottest_region, on_original, outline, overlay, score_names
from radiograph.explain import Explainer
from radiograph.imaging import FeatureGrid, Letterbox, load_for_model
from radiograph.inference import OnnxModel, decide, heatmap_classes
from radiograph.registry import TASKS


@dataclass
class Analysis:
    """One image through one model: probabilities, decision, every class's heatmap, timings."""

    card: dict
    model: dict  # OnnxModel.describe() plus the CAM path
    name: str
    original: np.ndarray  # 2-D float32, 0-255, the decoded image at its own size
    geometry: Letterbox
    probabilities: np.ndarray
    heatmaps: np.ndarray  # [C, h, w], each scaled to [0, 1] (all zero where the class has no positive evidence)
    flat: list[bool]
    timings_ms: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.card["labels"])

    @property
    def shown_classes(self) -> list[int]:
        """The default heatmaps: for chest14 every positive finding; the overlay shows the first."""
        return heatmap_classes(self.card, self.probabilities)

    @property
    def shown_class(self) -> int:
        return self.shown_classes[0]

    def heatmap_on_original(self, class_index: int) -> np.ndarray | None:
        if self.flat[class_index]:
            return None
        return on_original(self.heatmaps[class_index], self.geometry, FeatureGrid.from_card(self.card))

    def overlay(self, class_index: int | None = None, opacity: float = 0.4, region: bool = False) -> np.ndarray:
        """RGB uint8 at the original size; `region` outlines the hottest region and draws its bounding box."""
        class_index = self.shown_class if class_index is None else class_index
        heatmap = self.heatmap_on_original(class_index)
        picture = overlay(self.original, heatmap, opacity)
        if region and heatmap is not None:
            picture = outline(picture, hottest_region(heatmap))
        return picture

    def region(self, class_index: int) -> list[float] | None:
        heatmap = self.heatmap_on_original(class_index)
        found = hottest_region(heatmap) if heatmap is not None else None
        return [round(v, 1) for v in found[0]] if found else None

    def result(self, class_index: int | None = None) -> dict:
        """Everything a script needs, JSON-serialisable."""
        shown = self.shown_classes
        class_index = shown[0] if class_index is None else class_index
        height, width = self.original.shape
        scores = score_names(self.card["task"], self.labels)
        described = {c: {"class": self.labels[c], "score": scores[c], "flat": self.flat[c],
                         "hottest_region_xywh": self.region(c)}  # each region once: it maps a full-size map
                     for c in dict.fromkeys([class_index, *shown])}
        return {
            "task": self.card["task"], "file": self.name, "image": {"width": width, "height": height},
            "probabilities": {label: float(p) for label, p in zip(self.labels, self.probabilities)},
            "decision": decide(self.card, self.probabilities),
            "heatmap": {**described[class_index], "method": self.model["cam_path"],
                        "flat_classes": [label for label, flat in zip(self.labels, self.flat) if flat]},
            "heatmaps": [described[c] for c in shown],  # the default ones: chest14's positive findings
            "model": self.model, "timings_ms": self.timings_ms, "notice": self.card.get("notice"),
        }


class Service:
    """The loaded models of every task (once), and the analyses the app serves from them."""

    def __init__(self, models: Path, tasks: list[str] | None = None, cam_path: str = "auto", device: str = "auto",
                 variant: str = "fp32"):
        tasks = tasks or [task for task in TASKS if (Path(models) / task / "card.json").exists()]
        if not tasks:
            raise FileNotFoundError(f"no model folders with a card.json under {models}")
        self.models = {task: OnnxModel(Path(models) / task, variant=variant, device=device) for task in tasks}
        self.explainers = {task: Explainer(model, cam_path) for task, model in self.models.items()}

    def warm_up(self) -> None:
        """Run every model's heatmaps once (the Keras path traces its graph on the first call)."""
        for task, model in self.models.items():
            blank = np.zeros((1, model.size, model.size, 1), np.float32)
            self.explainers[task].heatmaps(blank, model.run(blank).features[0])

    def describe(self, task: str) -> dict:
        return {**self.models[task].describe(), "cam_path": self.explainers[task].path}

    def analyse(self, task: str, source, name: str | None = None) -> Analysis:
        """Decode, predict and explain one file (path or bytes); raises ImageLoadError for unreadable input."""
        model, explainer = self.models[task], self.explainers[task]
        start = time.perf_counter()
        image, geometry, original = load_for_model(source, model.size, name)
        decoded = time.perf_counter()
        output = model.run(image[None])
        predicted = time.perf_counter()
        heatmaps, flat = explainer.heatmaps(image[None], output.features[0])
        explained = time.perf_counter()
        timings = {"decode": (decoded - start) * 1e3, "inference": (predicted - decoded) * 1e3,
                   "cam": (explained - predicted) * 1e3, "total": (explained - start) * 1e3}
        return Analysis(model.card, self.describe(task), name or Path(str(source)).name, original, geometry,
                        output.probabilities[0], heatmaps, flat, {k: round(v, 2) for k, v in timings.items()})

    def analyse_study(self, sources: list, names: list[str] | None = None) -> tuple[list[Analysis], dict]:
        """MURA: every view of one study, and the study's result (probabilities = mean over its views)."""
        if not sources:
            raise ValueError("a study needs at least one image")
        names = names or [Path(str(source)).name for source in sources]
        views = [self.analyse("mura", source, name) for source, name in zip(sources, names)]
        card = views[0].card
        mean = np.mean([view.probabilities for view in views], axis=0)
        study = {"task": "mura", "views": len(views), "files": names,
                 "probabilities": dict(zip(card["labels"], mean.tolist())), "decision": decide(card, mean),
                 "per_view": [view.result() for view in views], "model": views[0].model,
                 "timings_ms": {key: round(sum(view.timings_ms[key] for view in views), 2) for key in views[0].timings_ms},
                 "notice": card.get("notice")}
        return views, study
