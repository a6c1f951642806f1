"""The input gate: is this a radiograph a model here reads, and is it inside that model's training distribution?

    keeper = Gatekeeper(router, distances)              # radiograph.routing.Router (or None), {task: FeatureDistance}
    seen = keeper.inspect(display, colourfulness)       # image checks and routing, before any task model runs
    keeper.refusal(task, seen)                          # a Gate whose verdict is "refuse", or None: run the model
    keeper.gate(task, seen, features)                   # the full Gate, with the task model's feature distance

Every result (app, API, batch output) carries `Gate.as_dict()`:
    {"verdict": "ok" | "warn" | "refuse", "reasons": [sentences], "codes": [one per reason],
     "ood_score": float | null, "ood_threshold": float | null,
     "routed_task": str | null, "routed_probability": float | null}
`ood_score` is null when the task model did not run (a refusal) or its card has no fitted distance.

What each check looks at, and its verdict:
  refuse  colour      colour content (Hasler-Suesstrunk colourfulness of the file's channels above COLOUR_LIMIT):
                      a photograph, screenshot or coloured figure, not a radiograph
  refuse  blank       near-constant: the central 98% of grey levels span under BLANK_RANGE levels
  refuse  not_radiograph  the router says "none" with probability >= NONE_REFUSE (no task here reads it)
  warn    low_contrast    the central 98% span under LOW_RANGE of 256 levels
  warn    clipped_white / clipped_black   more than CLIPPED_WHITE / CLIPPED_BLACK of the pixels at full white /
                      full black (burnt out, or an empty film)
  warn    pose        the router reads the image only once it is turned or inverted (rotated 90 degrees or more,
                      or a negative), for tasks whose films have one right way up (registry `upright`)
  warn    unrecognised    the router says "none", but below NONE_REFUSE
  warn    other_task  the router assigns the image to another task with probability >= OTHER_TASK
  warn    unsure_route    (Any radiograph) the router's chosen task has probability below OTHER_TASK
  refuse  not_routed, task_unavailable    (Any radiograph) no task is chosen, or its model is not loaded
  warn    ood         the task model's feature distance is above its threshold (chosen on validation for a stated
                      false-alarm rate, radiograph.ood)
  warn    mixed_parts the views of one study are of different body parts (study_gate)
  warn    mixed_studies   the views' file names carry different patient/study ids or name different body parts
                      (MURA and phantom names do: wrist_patient00010_study1_view1.png): several studies pooled
                      into one (study_gate, names_of_several_studies)
  warn    dicom_modality  a DICOM header's Modality is not radiography (RADIOGRAPH_MODALITIES)
  warn    views_left_out  views of a study refused while others were read: left out of its mean (study_gate)
The thresholds on image statistics sit far outside every phantom the demo models trained on (docs/gate.md
gives the measured ranges); the router's and the distance's are chosen on validation data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from radiograph.decision import decide, grouped_summary, study_probabilities, uncertainty_summary
from radiograph.registry import TASKS

Verdict = Literal["ok", "warn", "refuse"]
SEVERITY = {"ok": 0, "warn": 1, "refuse": 2}

COLOUR_LIMIT = 20.0  # colourfulness; Hasler-Suesstrunk read 15 as "slightly", 33 as "moderately colourful"
BLANK_RANGE = 6  # grey levels spanned by the central 98% of pixels
LOW_RANGE = 64  # phantoms span at least 124
CLIPPED_WHITE = 0.5  # fraction of pixels at 254-255; phantoms reach at most 0.37
CLIPPED_BLACK = 0.6  # at 0-1; phantoms reach at most 0.35 (air and collimation are black on real films too)
NONE_REFUSE = 0.9  # router's P(none) at or above which an image is refused
OTHER_TASK = 0.9  # router's probability of another task at or above which a task's result is warned about;
# also the probability below which the Any radiograph tab's choice of task is warned about as unsure
AUTO = "auto"  # the task name of routing: the Any radiograph tab, its endpoint /auto, `predict auto`
STATISTICS_SIDE = 256  # image statistics are taken on every n-th pixel, about this many a side


@dataclass(frozen=True)
class Reason:
    code: str
    verdict: Verdict
    text: str  # a sentence for a person
    short: str  # a few words, for the decision text


@dataclass
class Inspection:
    """What is known of an image before any task model runs."""

    reasons: list[Reason]
    routing: object | None = None  # radiograph.routing.Routing, when a router is loaded
    dicom: dict | None = None  # a DICOM file's shown tags (imaging.SHOWN_TAGS), evidence for the task-specific gate


@dataclass
class Gate:
    verdict: Verdict
    reasons: list[Reason] = field(default_factory=list)
    ood_score: float | None = None
    ood_threshold: float | None = None
    routed_task: str | None = None
    routed_probability: float | None = None

    @property
    def refused(self) -> bool:
        return self.verdict == "refuse"

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": [r.text for r in self.reasons],
                "codes": [r.code for r in self.reasons],
                "ood_score": _rounded(self.ood_score), "ood_threshold": _rounded(self.ood_threshold),
                "routed_task": self.routed_task, "routed_probability": _rounded(self.routed_probability)}

    def summary(self) -> str:
        """The warnings in a few words ("" when there are none), for a decision text."""
        return "; ".join(r.short for r in self.reasons if r.verdict != "ok")

    def annotate(self, decided: dict) -> dict:
        """A decision whose text says the gate's warnings first ("Warning (...): ..."), or the refusal's text."""
        if self.refused:
            return {"text": "Refused: " + " ".join(r.text for r in self.reasons)}
        if self.verdict == "warn":
            decided["text"] = f"Warning ({self.summary()}): {decided['text']}"
        return decided


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def gate_of(reasons: list[Reason], **values) -> Gate:
    verdict = max((r.verdict for r in reasons), key=SEVERITY.__getitem__, default="ok")
    return Gate(verdict, list(reasons), **values)


def title(task: str | None) -> str:
    return TASKS[task].title if task in TASKS else str(task)


# ----------------------------------------------------------------------------- image statistics

def image_reasons(display: np.ndarray, colourfulness: float = 0.0) -> list[Reason]:
    """The checks on the image itself (colour, blank, contrast, clipping), from the grey-level histogram of the
    display copy (uint8, 2-D) thinned to about STATISTICS_SIDE pixels a side."""
    if colourfulness > COLOUR_LIMIT:
        return [Reason("colour", "refuse", f"The image has colour content (colourfulness {colourfulness:.0f}; "
                       f"radiographs are gray, and above {COLOUR_LIMIT:.0f} an image is refused): it looks like a "
                       "photograph, screenshot or coloured figure, not a radiograph.", "colour image")]
    small = _small(display)
    counts = np.bincount(small.ravel(), minlength=256)
    cumulative = np.cumsum(counts) / small.size
    low, high = int(np.searchsorted(cumulative, 0.01)), int(np.searchsorted(cumulative, 0.99))
    span = float(high - low)
    if span < BLANK_RANGE:
        return [Reason("blank", "refuse", f"The image is blank or nearly constant (98% of its pixels lie within "
                       f"{span:.0f} grey levels): there is nothing to analyse.", "blank image")]
    reasons = []
    if span < LOW_RANGE:
        reasons.append(Reason("low_contrast", "warn", f"The image has very little contrast: 98% of its pixels lie "
                              f"within {span:.0f} of 256 grey levels (the training films span at least 124).",
                              "very low contrast"))
    white, black = float(counts[254:].sum() / small.size), float(counts[:2].sum() / small.size)
    if white > CLIPPED_WHITE:
        reasons.append(Reason("clipped_white", "warn", f"{100 * white:.0f}% of the image is burnt out at full white "
                              "(over-exposed, or clipped when it was exported).", "burnt out"))
    if black > CLIPPED_BLACK:
        reasons.append(Reason("clipped_black", "warn", f"{100 * black:.0f}% of the image is at full black "
                              "(under-exposed, or mostly empty).", "mostly black"))
    return reasons


RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT")  # computed / digital radiography; OT: secondary capture


def dicom_reasons(dicom: dict | None) -> list[Reason]:
    """Evidence from a DICOM header (imaging.SHOWN_TAGS): a Modality that is not radiography (CT, MR, US,
    mammography...) is a warning; no header (a PNG or JPEG) says nothing."""
    modality = (dicom or {}).get("Modality", "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return [Reason("dicom_modality", "warn", f"The DICOM header gives the modality {modality!r}, not a "
                       f"radiograph ({', '.join(RADIOGRAPH_MODALITIES)}): the models here read radiographs only.",
                       f"modality {modality}")]
    return []


def body_part_reasons(task: str | None, dicom: dict | None) -> list[Reason]:
    """Evidence from a DICOM header for one task: a BodyPartExamined that is not one of the task's films
    (registry.TaskSpec.body_parts) is a warning, naming the task that reads it where there is one."""
    part = re.sub(r"[^A-Z0-9]", "", str((dicom or {}).get("BodyPartExamined", "")).upper())
    if not part or task not in TASKS or not TASKS[task].body_parts or part in TASKS[task].body_parts:
        return []
    others = [spec.title for spec in TASKS.values() if part in spec.body_parts]
    return [Reason("dicom_body_part", "warn", f"The DICOM header gives the body part {part!r}, which is not a "
                   f"{title(task)} film ({', '.join(TASKS[task].body_parts[:4])} ...): the result below is likely "
                   "meaningless" + (f"; analyse it as {' or '.join(others)}." if others else "."),
                   f"body part {part}")]


def _small(display: np.ndarray) -> np.ndarray:
    """Every n-th row and column, n the integer step that leaves at most about STATISTICS_SIDE pixels a side (a
    view, no copy: a resampling of a large film costs milliseconds, this nothing)."""
    step = max(1, max(display.shape[:2]) // STATISTICS_SIDE)
    return np.asarray(display, np.uint8)[::step, ::step]


# ----------------------------------------------------------------------------- routing and distance

ROUTER_FOLDER = "router"  # models/router: the task router's model and card


def load_router(models: Path, device: str = "auto", strict: bool = False):
    """(the Router of models/router, None) or (None, why there is none): no router folder, or one that fails
    verification or loading (raised instead when `strict`)."""
    from radiograph.routing import Router

    folder = Path(models) / ROUTER_FOLDER
    if not (folder / "card.json").exists():
        if strict:
            raise FileNotFoundError(f"no router model in {folder}: train one with `python -m train.router`")
        return None, f"no router model in {folder}"
    try:
        return Router(folder, device=device), None
    except Exception as error:  # noqa: BLE001 - serving goes on without routing unless strict
        if strict:
            raise
        return None, f"{type(error).__name__}: {error}"


def load_gatekeeper(models: Path, loaded: dict, device: str = "auto", strict: bool = False):
    """(the gate of the loaded task models (`loaded`: task -> OnnxModel), why there is no router or None): the
    router of models/router (`load_router`) and each card's feature distance. A distance whose file fails
    verification raises (radiograph.cards.ModelFileError)."""
    from radiograph.ood import FeatureDistance

    distances = {task: FeatureDistance.load(model.folder, model.card) for task, model in loaded.items()}
    router, problem = load_router(models, device, strict)
    return Gatekeeper(router, distances), problem


class Gatekeeper:
    """The gate of every task served: the router (None: no routing) and each task's feature distance
    (radiograph.ood.FeatureDistance, or None where a card has none)."""

    def __init__(self, router=None, distances: dict | None = None):
        self.router = router
        self.distances = distances or {}

    def inspect(self, display: np.ndarray, colourfulness: float = 0.0) -> Inspection:
        reasons = image_reasons(display, colourfulness)
        refused = any(r.verdict == "refuse" for r in reasons)
        routing = self.router.route(display) if self.router is not None and not refused else None
        return Inspection(reasons, routing)

    @staticmethod
    def chosen_task(seen: Inspection) -> str | None:
        """The task the router assigns the image to (turned upright where it had to be), or None."""
        routing = seen.routing
        if routing is None:
            return None
        return routing.task or (routing.pose_task if routing.pose else None)

    def routing_reasons(self, task: str | None, seen: Inspection) -> list[Reason]:
        """What the router says about the image, for the task it is analysed as (None: the Auto tab)."""
        routing = seen.routing
        if routing is None:
            return []
        if routing.pose and routing.pose_task is not None:
            return [Reason("pose", "warn", f"The image looks turned or inverted: it reads as a "
                           f"{title(routing.pose_task)} image only once {routing.pose} (router P = "
                           f"{routing.pose_probability:.2f}). Correct it and analyse it again; the result below is of "
                           "the image as given.", f"needs to be {routing.pose}")]
        if routing.task is None:
            p_none = routing.probability
            known = ", ".join(spec.title for spec in TASKS.values())
            if p_none >= NONE_REFUSE:
                return [Reason("not_radiograph", "refuse", f"This does not look like an image any model here reads "
                               f"({known}): the router says none of them, P = {p_none:.2f}. It may not be a "
                               "radiograph, or be one of another body part or view.", "not a recognised radiograph")]
            return [Reason("unrecognised", "warn", f"The router does not recognise this as one of the tasks here "
                           f"(P(none) = {p_none:.2f}).", "not recognised")]
        if task is None and routing.probability < OTHER_TASK:
            return [Reason("unsure_route", "warn", f"The router is not sure this is a {title(routing.task)} image "
                           f"(P = {routing.probability:.2f}); if you know its task, analyse it there.",
                           "task unsure")]
        if task is not None and routing.task != task and routing.probability >= OTHER_TASK:
            return [Reason("other_task", "warn", f"This looks like a {title(routing.task)} image (router P = "
                           f"{routing.probability:.2f}), not a {title(task)} one: its result below is likely "
                           f"meaningless. Analyse it in the {title(routing.task)} tab.",
                           f"looks like {title(routing.task)}")]
        return []

    def choose(self, seen: Inspection, available) -> tuple[str | None, Gate | None]:
        """The choice of the Any radiograph tab, `/auto` and `predict auto`: (the routed task, None) when the router assigns the image to
        a task in `available`, else (None, the refusal, with the reasons)."""
        task = self.chosen_task(seen)
        if task in available:
            return task, None
        reasons = seen.reasons + self.routing_reasons(None, seen)
        if task is not None:
            reasons.append(Reason("task_unavailable", "refuse", f"The router assigns this image to {title(task)}, "
                                  "whose model is unavailable here.", "task unavailable"))
        elif not any(r.verdict == "refuse" for r in reasons):
            reasons.append(Reason("not_routed", "refuse", "No task here could be chosen for this image; if you know "
                                  "its task, analyse it there.", "no task chosen"))
        return None, gate_of(reasons, **self._routed(seen))

    def _routed(self, seen: Inspection) -> dict:
        routing = seen.routing
        if routing is None:
            return {}
        task = self.chosen_task(seen)
        probability = routing.probability if routing.task else (routing.pose_probability if routing.pose else None)
        return {"routed_task": task, "routed_probability": probability}

    def refusal(self, task: str | None, seen: Inspection) -> Gate | None:
        """The gate when the image is refused before the task model runs; None when the model should run."""
        reasons = seen.reasons + self.routing_reasons(task, seen) + body_part_reasons(task, seen.dicom)
        if any(r.verdict == "refuse" for r in reasons):
            distance = self.distances.get(task)
            return gate_of(reasons, ood_threshold=distance.threshold if distance else None, **self._routed(seen))
        return None

    def gate(self, task: str, seen: Inspection, features: np.ndarray | None) -> Gate:
        """The full gate of an image the task model has run on (`features`: its [h, w, K] map)."""
        reasons = seen.reasons + self.routing_reasons(task, seen) + body_part_reasons(task, seen.dicom)
        distance = self.distances.get(task)
        score = distance.score(features) if distance is not None and features is not None else None
        if score is not None and score > distance.threshold:
            reasons.append(Reason("ood", "warn", f"The image is outside this model's training distribution: its "
                                  f"feature distance {score:.1f} is above the threshold {distance.threshold:.1f} that "
                                  f"{100 * distance.false_alarm_rate:.0f}% of validation images exceed. Treat the "
                                  "result with suspicion.", "outside the training distribution"))
        return gate_of(reasons, ood_score=score, ood_threshold=distance.threshold if distance else None,
                       **self._routed(seen))


STUDY_ID = re.compile(r"(patient\d+)|(study\d+)", re.IGNORECASE)  # MURA's patient00010/study1, in a name


def names_of_several_studies(names: list[str], groups: tuple[str, ...] = (), noun: str = "body part",
                             study_noun: str = "study") -> Reason | None:
    """A warning when the views' file names say they are several studies: names carrying different patient or
    study ids (`patient00010`, `study1`, as MURA paths and the phantom names do), or naming different `groups`
    (body parts: `wrist_...`, `XR_HAND`). Names that carry neither say nothing, and are not warned about."""
    ids, named = set(), set()
    for name in names:
        stem = Path(name).stem.lower()
        found = ["".join(match) for match in STUDY_ID.findall(stem)]
        patient = next((f for f in found if f.startswith("patient")), "")
        study = next((f for f in found if f.startswith("study")), "")
        if patient or study:
            ids.add(f"{patient}/{study}".strip("/"))
        named |= set(re.split(r"[^a-z0-9]+", stem)) & set(groups)
    if len(ids) < 2 and len(named) < 2:
        return None
    several = study_noun[:-1] + "ies" if study_noun.endswith("y") else study_noun + "s"
    said = [f"ids {', '.join(sorted(ids))}" if len(ids) > 1 else "", f"{noun}s {', '.join(sorted(named))}"
            if len(named) > 1 else ""]
    return Reason("mixed_studies", "warn", f"The file names look like several {several} ({'; '.join(s for s in said if s)}), "
                  f"pooled here into one result. One {study_noun} is the views of one {noun} of one patient: put "
                  f"each {study_noun}'s files in a folder of their own (batch prediction) or upload them on their "
                  "own (the app).", f"several {several} pooled")


def study_gate(views: list[tuple[str, Gate]], parts: list[str | None], noun: str = "body part",
               also: tuple[Reason, ...] = ()) -> Gate:
    """One study's gate from its views' (name, gate): each view's reasons under its name, a warning when the views
    are of different `parts` (each view's decided group; None for a refused view), the study-level reasons `also`
    (names_of_several_studies), and the worst verdict. A view
    refused while others were read is left out of the study, so its refusal is a warning here. The routed task
    is the views' most common one, and its probability the lowest among the views routed to it."""
    some_read = any(part is not None for part in parts)
    reasons = [Reason(r.code, "warn" if some_read and r.verdict == "refuse" else r.verdict, f"{name}: {r.text}",
                      r.short) for name, gate in views for r in gate.reasons]
    left_out = [name for (name, gate), part in zip(views, parts) if part is None]
    if some_read and left_out:
        reasons.append(Reason("views_left_out", "warn", f"{len(left_out)} of {len(views)} views were refused and "
                              f"left out of the study result: {', '.join(left_out)}.", f"{len(left_out)} view(s) left out"))
    shown = sorted({part for part in parts if part})
    if len(shown) > 1:
        reasons.append(Reason("mixed_parts", "warn", f"The views are of different {noun}s ({', '.join(shown)}): one "
                              f"study is one {noun}, so the study result mixes them. Analyse each {noun}'s views as "
                              "a study of its own.", f"mixed {noun}s"))
    reasons += also
    scores = [gate.ood_score for _, gate in views if gate.ood_score is not None]
    routed = [gate.routed_task for _, gate in views if gate.routed_task]
    task = max(sorted(set(routed)), key=routed.count) if routed else None  # the views' most common routed task
    probabilities = [gate.routed_probability for _, gate in views if gate.routed_task == task and task is not None]
    return gate_of(reasons, ood_score=max(scores) if scores else None,
                   ood_threshold=next((g.ood_threshold for _, g in views if g.ood_threshold is not None), None),
                   routed_task=task, routed_probability=min(probabilities) if probabilities else None)


def study_result(card, views: list[tuple[str, Gate, np.ndarray | None]]) -> tuple[Gate, dict]:
    """A study's gate and result from its views' (name, gate, probabilities; None for a refused view): the
    probabilities are the mean over the views that were read, decided by the card's rule (`card.study`), with
    the decision's uncertainty; a study whose every view was refused has only the refusal's decision."""
    decision = card.decision
    parts = [None if p is None else grouped_summary(decision, p)[decision.group_name] for _, _, p in views]
    noun = decision.group_name.replace("_", " ")
    several = names_of_several_studies([name for name, _, _ in views], tuple(decision.groups), noun,
                                       card.study.noun if card.study else "study")
    gate = study_gate([(name, view_gate) for name, view_gate, _ in views], parts, noun=noun,
                      also=(several,) if several else ())
    read = [p for _, _, p in views if p is not None]
    if not read:
        return gate, {"decision": gate.annotate({})}  # every view refused: the study gate's verdict is refuse
    mean = study_probabilities(read)
    return gate, {"probabilities": dict(zip(card.labels, mean.tolist())), "decision": gate.annotate(decide(card, mean)),
                  "uncertainty": uncertainty_summary(card, mean)}
