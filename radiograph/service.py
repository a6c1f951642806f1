"""One analysis of one radiograph (or one MURA study): what the app and its API return.

    service = Service(Path("models"))                     # every task with a model folder; loads once
    analysis = service.analyse("knee", "examples/knee/9143052L.png")
    analysis.result()                                     # JSON-serialisable: gate, probabilities, decision, timings
    analysis.overlay(class_index=3, opacity=0.5)          # RGB uint8 at the original image's size, viridis
    analysis.overlay(3, colormap="jet")                   # or another of radiograph.cam.COLORMAPS
    analysis.description(3)["text"]                       # where the map's hottest region lies, in words
    analysis.overlay(3, method="gradcam++")               # where TensorFlow is installed (analysis.methods)
    service.analyse_auto("film.png")                      # routed to the task the router assigns it to

Every analysis passes the input gate (radiograph.gate) first: the image checks and the router (models/router,
when there is one) run before the task model, and a refused image gets no probabilities and no heatmap, only
the gate's reasons. The task model's feature distance (radiograph.ood) completes the gate of an image it ran on.

An analysis keeps the heatmap of every class (one batched Grad-CAM call on the
Keras path, one matrix product on the ONNX path), so choosing another class or
opacity re-renders the overlay without running the model again. On the Keras path
it also keeps every class's Grad-CAM++ map, weighted from the same gradients.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiograph.cam import DEFAULT_COLORMAP, hottest_region, outline, overlay, score_names
from radiograph.cards import ModelCard, sha256_of
from radiograph.decision import decide, heatmap_classes, uncertainty_summary
from radiograph.explain import Explainer
from radiograph.gate import Gate, Gatekeeper, Inspection, dicom_reasons, load_router, study_result
from radiograph.geometry import FeatureGrid, Letterbox, on_original
from radiograph.imaging import DISPLAY_SIDE, decode, display_copy, model_input, placement
from radiograph.inference import OnnxModel
from radiograph.ood import FeatureDistance
from radiograph.regions import describe
from radiograph.registry import TASKS, get_task


@dataclass
class Analysis:
    """One image through one model: probabilities, decision, every class's heatmap, timings."""

    card: ModelCard | None  # None only for an image the Auto tab refused before choosing a task
    model: dict | None  # OnnxModel.describe() plus the CAM path
    name: str
    display: np.ndarray  # 2-D uint8: the whole decoded image, longer side at most imaging.DISPLAY_SIDE
    geometry: Letterbox  # `original`: the file's own size
    probabilities: np.ndarray | None  # None when the gate refused the image (no model ran)
    heatmaps: np.ndarray | None  # [C, h, w], each scaled to [0, 1] (all zero where the class has no positive evidence)
    flat: list[bool] | None
    gate: Gate = field(default_factory=lambda: Gate("ok"))
    timings_ms: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # values of the file the loader did not trust and worked around
    sha256: str = ""  # of the input file's bytes, as read
    other_methods: dict = field(default_factory=dict)  # {"gradcam++": (heatmaps, flat)} on the Keras path
    dicom: dict | None = None  # a DICOM input's imaging.SHOWN_TAGS (never an identifying one)
    dicom_header: object = None  # a DICOM input's identity (radiograph.imaging.dicom_header), else None

    @property
    def methods(self) -> list[str]:
        """The heatmap methods this analysis can show: Grad-CAM (`heatmaps`), then the others it kept."""
        return ["gradcam", *self.other_methods]

    def maps(self, method: str = "gradcam") -> tuple[np.ndarray, list[bool]]:
        """Every class's [0, 1] map by `method` and which are flat."""
        if method == "gradcam":
            return self.heatmaps, self.flat
        if method not in self.other_methods:
            raise ValueError(f"heatmap method {method!r} is not available for this analysis; available: "
                             f"{', '.join(self.methods)} (Grad-CAM++ needs TensorFlow, the Keras path)")
        return self.other_methods[method]

    @property
    def refused(self) -> bool:
        return self.probabilities is None

    @property
    def task(self) -> str | None:
        return self.card.task if self.card is not None else None

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

    def heatmap_on_display(self, class_index: int, method: str = "gradcam") -> np.ndarray | None:
        if self.refused:
            return None
        heatmaps, flat = self.maps(method)
        if flat[class_index]:
            return None
        return on_original(heatmaps[class_index], self.geometry, FeatureGrid.from_card(self.card), self.display.shape)

    def overlay(self, class_index: int | None = None, opacity: float = 0.4, region: bool = False,
                colormap: str = DEFAULT_COLORMAP, method: str = "gradcam") -> np.ndarray:
        """RGB uint8 at the display size (the input's size up to imaging.DISPLAY_SIDE a side), in a colour map of
        radiograph.cam.COLORMAPS; `region` outlines the hottest region and draws its bounding box; `method` one of
        `methods`. A refused image is shown as it is."""
        if self.refused:
            return overlay(self.display, None, colormap=colormap)
        class_index = self.shown_class if class_index is None else class_index
        heatmap = self.heatmap_on_display(class_index, method)
        picture = overlay(self.display, heatmap, opacity, colormap)
        if region and heatmap is not None:
            picture = outline(picture, hottest_region(heatmap))
        return picture

    def region(self, class_index: int, method: str = "gradcam") -> list[float] | None:
        """The hottest region's bounding box (x, y, width, height) in the original image's pixels."""
        return self.located(class_index, method)["hottest_region_xywh"]

    def description(self, class_index: int, method: str = "gradcam") -> dict:
        """Class `class_index`'s heatmap in words (radiograph.regions.describe, in the task's registry.Anatomy):
        where its hottest region lies, how much of the image it covers; `text` says it in a sentence."""
        return self.located(class_index, method)["description"]

    def located(self, class_index: int, method: str = "gradcam") -> dict:
        """The hottest region's box (`hottest_region_xywh`, original pixels) and the map's `description`, from one
        placement of the map on the display copy."""
        heatmap = self.heatmap_on_display(class_index, method)
        found = hottest_region(heatmap) if heatmap is not None else None
        words = describe(heatmap if found else None, get_task(self.card.task).anatomy, found)
        if not found:
            return {"hottest_region_xywh": None, "description": words}
        (height, width), (shown_height, shown_width) = self.geometry.original, self.display.shape
        x, y, w, h = found[0]
        sx, sy = width / shown_width, height / shown_height
        return {"hottest_region_xywh": [round(x * sx, 1), round(y * sy, 1), round(w * sx, 1), round(h * sy, 1)],
                "description": words}

    def decision(self) -> dict:
        """The card's decision, its text prefixed with the gate's warnings (the refusal's reasons when refused)."""
        return self.gate.annotate({} if self.refused else decide(self.card, self.probabilities))

    def result(self, class_index: int | None = None, method: str = "gradcam") -> dict:
        """Everything a script needs, JSON-serialisable; the heatmaps described are `method`'s (Grad-CAM unless
        asked)."""
        height, width = self.geometry.original
        image = {"width": width, "height": height, "notes": list(self.notes), "sha256": self.sha256,
                 "overlay_width": self.display.shape[1], "overlay_height": self.display.shape[0]}
        if self.dicom is not None:
            image["dicom"] = dict(self.dicom)
        if self.refused:
            return {"task": self.task, "file": self.name, "gate": self.gate.as_dict(), "image": image,
                    "decision": self.decision(), "model": self.model, "timings_ms": self.timings_ms,
                    "notice": self.card.notice if self.card else REFUSED_NOTICE}
        shown = self.shown_classes
        class_index = shown[0] if class_index is None else class_index
        scores = score_names(self.labels, self.card.heatmap_versus)
        flat = self.maps(method)[1]
        described = {c: {"class": self.labels[c], "score": scores[c], "flat": flat[c],
                         **self.located(c, method)}  # each region once: it maps a full-size map
                     for c in dict.fromkeys([class_index, *shown])}
        return {
            "task": self.card.task, "file": self.name, "gate": self.gate.as_dict(), "image": image,
            "probabilities": {label: float(p) for label, p in zip(self.labels, self.probabilities)},
            "uncertainty": uncertainty_summary(self.card, self.probabilities),
            "decision": self.decision(),
            "heatmap": {**described[class_index], "method": self.model["cam_path"] if method == "gradcam"
                        else f"keras-{method}", "methods_available": self.methods,
                        "flat_classes": [label for label, is_flat in zip(self.labels, flat) if is_flat]},
            "heatmaps": [described[c] for c in shown],  # the default ones (e.g. every positive finding)
            "model": self.model, "timings_ms": self.timings_ms, "notice": self.card.notice,
        }


REFUSED_NOTICE = ("Research software, not a medical device. The image was refused before any task model ran; "
                  "the router and the models here are demo models trained on synthetic phantoms.")


class UnusableResult(ValueError):
    """The model gave something that is not a result (a probability that is not finite): an error, never shown."""


class Service:
    """The loaded models of every task (once), the input gate, and the analyses the app serves from them.

    A task whose model (or its fitted feature distance) fails verification or loading is left out of `models`
    and its reason kept in `unavailable`, so the other tasks keep serving; a router that fails to load leaves
    routing off, its reason in `router_problem`, and a models folder without router/ serves without routing (the
    image checks and feature distances still run). `strict=True` raises instead."""

    def __init__(self, models: Path, tasks: list[str] | None = None, cam_path: str = "auto", device: str = "auto",
                 variant: str = "fp32", strict: bool = False):
        tasks = tasks or [task for task in TASKS if (Path(models) / task / "card.json").exists()]
        if not tasks:
            raise FileNotFoundError(f"no model folders with a card.json under {models}")
        self.models: dict[str, OnnxModel] = {}
        self.explainers: dict[str, Explainer] = {}
        self.unavailable: dict[str, str] = {}
        distances: dict[str, FeatureDistance | None] = {}
        for task in tasks:
            try:
                self.models[task] = OnnxModel(Path(models) / task, variant=variant, device=device)
                self.explainers[task] = Explainer(self.models[task], cam_path)
                distances[task] = FeatureDistance.load(self.models[task].folder, self.models[task].card)
            except Exception as error:  # noqa: BLE001 - any failure disables this task only (unless strict)
                if strict:
                    raise
                self.models.pop(task, None)
                self.unavailable[task] = f"{type(error).__name__}: {error}"
        if not self.models:
            raise RuntimeError("no model could be loaded: " + "; ".join(f"{t}: {r}" for t, r in self.unavailable.items()))
        self.router, self.router_problem = load_router(Path(models), device, strict)
        self.gatekeeper = Gatekeeper(self.router, distances)

    @property
    def tasks(self) -> list[str]:
        """Every task the service was asked for, loaded or not, in registry order."""
        return [task for task in TASKS if task in self.models or task in self.unavailable]

    def warm_up(self) -> None:
        """Run every model's heatmaps once (the Keras path traces its graph on the first call), and the router."""
        for task, model in self.models.items():
            blank = np.zeros((1, model.size, model.size, 1), np.float32)
            self.explainers[task].heatmaps(blank, model.run(blank).features[0])
        if self.router is not None:
            self.router.route(np.zeros((64, 64), np.uint8))

    def describe(self, task: str) -> dict:
        return {**self.models[task].describe(), "cam_path": self.explainers[task].path}

    def analyse(self, task: str, source, name: str | None = None) -> Analysis:
        """Decode, gate, predict and explain one file (path or bytes); raises ImageLoadError for unreadable
        input and UnusableResult when the model's output is not finite."""
        return self._analyse(task, self._inspect(source, name))

    def analyse_auto(self, source, name: str | None = None) -> Analysis:
        """Route one file to the task the router assigns it to, and analyse it there (the gate says which task
        and how sure the router is); an image no task is chosen for is refused."""
        if self.router is None:
            raise RoutingUnavailable(f"Routing is unavailable ({self.router_problem}); choose the task's tab.")
        inspected = self._inspect(source, name)
        task, refusal = self.gatekeeper.choose(inspected.seen, self.models)
        if refusal is not None:
            return self._refused(None, inspected, refusal)
        return self._analyse(task, inspected)

    def _inspect(self, source, name: str | None) -> Inspected:
        """Decode once, keep the display copy, and look at it (image checks, router) before any task model."""
        name = name or (Path(str(source)).name if not isinstance(source, bytes) else "input")
        clock = {"start": time.perf_counter()}
        decoded = decode(source, name, reduce_to=DISPLAY_SIDE)
        display = display_copy(decoded.image)
        clock["decoded"] = time.perf_counter()
        seen = self.gatekeeper.inspect(display, decoded.colourfulness)
        seen.reasons.extend(dicom_reasons(decoded.dicom))
        seen.dicom = decoded.dicom
        clock["inspected"] = time.perf_counter()
        return Inspected(decoded, display, seen, name, clock, file_sha256(source))

    def _refused(self, task: str | None, inspected: Inspected, gate: Gate) -> Analysis:
        decoded = inspected.take()  # no model runs; only the file's size is kept
        geometry = placement(decoded.original, self.models[task].size if task else DISPLAY_SIDE)
        card, model = (self.models[task].card, self.describe(task)) if task else (None, None)
        return Analysis(card, model, inspected.name, inspected.display, geometry, None, None, None, gate,
                        _milliseconds(inspected.clock, time.perf_counter()), decoded.notes, inspected.sha256,
                        dicom=decoded.dicom, dicom_header=decoded.header)

    def _analyse(self, task: str, inspected: Inspected) -> Analysis:
        model, explainer, seen, name = self.models[task], self.explainers[task], inspected.seen, inspected.name
        refusal = self.gatekeeper.refusal(task, seen)
        if refusal is not None:
            return self._refused(task, inspected, refusal)
        start = time.perf_counter()
        decoded = inspected.take()
        image, geometry = model_input(decoded, model.size)
        notes, dicom, header = decoded.notes, decoded.dicom, decoded.header
        del decoded  # the last reference to the full-size image: it is freed before the model runs
        letterboxed = time.perf_counter()
        output = model.run(image[None])
        probabilities = output.probabilities[0]
        if not np.isfinite(probabilities).all():
            raise UnusableResult(f"{name}: the model returned a probability that is not a finite number "
                                 "for this image, so there is no result; the image's values may be out of range")
        predicted = time.perf_counter()
        gate = self.gatekeeper.gate(task, seen, output.features[0] if output.features is not None else None)
        gated = time.perf_counter()
        by_method = explainer.heatmaps_by_method(image[None], output.features[0])
        heatmaps, flat = by_method.pop("gradcam")
        explained = time.perf_counter()
        timings = _milliseconds(inspected.clock, explained, letterbox=letterboxed - start, distance=gated - predicted,
                                inference=predicted - letterboxed, cam=explained - gated)
        return Analysis(model.card, self.describe(task), name, inspected.display, geometry, probabilities, heatmaps,
                        flat, gate, timings, notes, inspected.sha256, other_methods=by_method, dicom=dicom,
                        dicom_header=header)

    def analyse_study(self, task: str, sources: list, names: list[str] | None = None) -> tuple[list[Analysis], dict]:
        """Every view of one study of a task whose card groups images into studies, and the study's result
        (probabilities: the mean over its views that passed the gate, decided by the card's rule; its gate: the
        views' gates, and a warning when the views are of different body parts)."""
        card = self.models[task].card
        if card.study is None:
            raise ValueError(f"{task} does not group images into studies")
        if not sources:
            raise ValueError("a study needs at least one image")
        names = names or [Path(str(source)).name for source in sources]
        views = [self.analyse(task, source, name) for source, name in zip(sources, names)]
        return views, self.study_of(task, views)

    def study_of(self, task: str, views: list[Analysis], per_view: list[dict] | None = None) -> dict:
        """The study result of views already analysed by `task`'s model (see analyse_study); `per_view`: their
        results where the caller has them already (each `view.result()`, not computed twice)."""
        card, names = self.models[task].card, [view.name for view in views]
        gate, result = study_result(card, [(view.name, view.gate, view.probabilities) for view in views])
        study = {"task": task, "views": len(views), "files": names, "gate": gate.as_dict(), **result}
        study.update(per_view=per_view or [view.result() for view in views], model=self.describe(task),
                     timings_ms={key: round(sum(view.timings_ms.get(key, 0.0) for view in views), 2)
                                 for key in dict.fromkeys(k for view in views for k in view.timings_ms)},
                     notice=card.notice)
        return study


@dataclass
class Inspected:
    """A decoded file and what the gate saw of it, before any task model. It holds the only reference to the
    full-size decoded image, which `take` hands over once (so it is freed as soon as the model input is made)."""

    decoded: object  # radiograph.imaging.Decoded, or None once taken
    display: np.ndarray
    seen: Inspection
    name: str
    clock: dict
    sha256: str  # of the file's bytes

    def take(self):
        decoded, self.decoded = self.decoded, None
        return decoded


def file_sha256(source) -> str:
    """The sha256 of an input file (bytes, or a path the decoder has just read), for reports and results."""
    return hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else sha256_of(Path(source))


class RoutingUnavailable(RuntimeError):
    """The Auto tab's router is not loaded."""


def _milliseconds(clock: dict, end: float, letterbox: float = 0.0, distance: float = 0.0, **parts: float) -> dict:
    """decode (with the display copy and the letterbox), gate (image checks, routing, feature distance), the
    model's parts, total; in ms."""
    values = {"decode": clock["decoded"] - clock["start"] + letterbox,
              "gate": clock["inspected"] - clock["decoded"] + distance, **parts, "total": end - clock["start"]}
    return {key: round(value * 1e3, 2) for key, value in values.items()}
