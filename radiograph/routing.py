"""The task router: which task an image belongs to ("none" when it is no task's image), and how it is posed.

    router = Router(Path("models/router"))           # checks model.onnx's sha256 against card.json
    routing = router.route(load_for_model(path, 224).display)
    routing.task, routing.probability, routing.pose   # e.g. "knee", 0.998, None

Labels: the task ids of `radiograph.registry.TASKS` in registry order, then "none" (`router_labels()`); the
card's labels must equal them. Input: the uint8 display copy that `radiograph.imaging.load_for_model` returns
for any model size, letterboxed by `router_input` to ROUTER_SIZE (intensities 0-255; the model rescales them).

`route` routes the image as given and, only when that says "none", its four corrected copies (`router_batch`
holds all five: the image as given, then the image rotated by 90 degrees
clockwise, by 180 degrees, by 90 degrees anticlockwise (as seen on screen, row 0 at the top), and its negative
(255 - x inside the image; the letterbox padding stays black). The model was trained to call a film of an
upright task (registry `upright`: knee, pneumonia, chest14) "none" when it is turned or inverted, and to keep
MURA's label in any orientation (MURA films come every way up).

Pose. When the image as given routes to a task, `pose` is None. When it routes to "none" but one of the four
corrected copies routes to an upright task with probability >= POSE_CONFIDENCE, `pose` names the correction: the
operation that turns the given image into that copy. So "rotated by 90 degrees clockwise" means the image is
shown turned 90 degrees anticlockwise, and turning it 90 degrees clockwise puts it upright (`pose_task`,
`pose_probability` are the corrected copy's routing). In numpy terms (np.rot90 turns anticlockwise on screen):
an upright film `u` given as `np.rot90(u, 1)` gets pose "rotated by 90 degrees clockwise"; as `np.rot90(u, -1)`,
"rotated by 90 degrees anticlockwise"; as `np.rot90(u, 2)`, "rotated by 180 degrees"; as `255 - u`, "inverted
(a negative)". Where several copies pass, the most probable wins.

POSE_CONFIDENCE = 0.9: on the router's validation split (training families and seed-0 phantoms carved apart
from its training data), no non-radiograph's corrected copy reached it, while the corrected copies of turned and
inverted upright films did (figures in docs/router.md and the card's metrics). A pose is a claim about a film
the user sent, so it is made only when the corrected copy is clearly that task's.

This module imports neither TensorFlow nor Keras nor anything from train/ (the light install serves it).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from radiograph.cards import ModelFileError, verified_file
from radiograph.imaging import letterbox
from radiograph.inference import create_session
from radiograph.registry import TASKS

ROUTER_SIZE = 96
NONE = "none"
POSE_CONFIDENCE = 0.9
CARD_KIND = "router"
# The copies of one routing batch, in order: (correction's name, or None for the image as given).
CORRECTIONS = (None, "rotated by 90 degrees clockwise", "rotated by 180 degrees", "rotated by 90 degrees anticlockwise",
               "inverted (a negative)")


def router_labels() -> list[str]:
    """The task ids in registry order, then "none"."""
    return [*TASKS, NONE]


def _boxed(display: np.ndarray, size: int):
    display = np.asarray(display)
    if display.ndim != 2:
        raise ValueError(f"expected a 2-D display image, got shape {list(display.shape)}")
    image = display if display.dtype in (np.uint8, np.float32) else display.astype(np.float32)
    if max(display.shape) > 4 * size:  # a cheap integer pre-reduction: INTER_AREA from 2048 px is slow
        step = max(display.shape) // (2 * size)
        image = image[::step, ::step] if step > 1 else image
    return letterbox(image, size)


def router_input(display: np.ndarray, size: int = ROUTER_SIZE) -> np.ndarray:
    """float32 [size, size], 0-255: the display copy letterboxed (radiograph.imaging.letterbox) to the router's
    input. Large displays are first thinned by an integer step to at most 4x the input, so a 2048-pixel display
    costs a fraction of a millisecond more than a small one."""
    return _boxed(display, size)[0]


def router_batch(display: np.ndarray, size: int = ROUTER_SIZE) -> np.ndarray:
    """float32 [5, size, size, 1]: the image as given, then its copies in CORRECTIONS order."""
    return corrected_copies(*_boxed(display, size))


def corrected_copies(boxed: np.ndarray, geometry) -> np.ndarray:
    """float32 [5, size, size, 1] of a letterboxed router input: itself, then its copies in CORRECTIONS order."""
    inverted = boxed.copy()
    region = (slice(geometry.top, geometry.top + geometry.height),
              slice(geometry.left, geometry.left + geometry.width))
    inverted[region] = 255.0 - inverted[region]
    copies = (boxed, np.rot90(boxed, -1), np.rot90(boxed, 2), np.rot90(boxed, 1), inverted)
    return np.stack(copies)[..., None].astype(np.float32)


@dataclass
class Routing:
    probabilities: dict[str, float]  # of the image as given
    task: str | None  # the most probable label, None when it is "none"
    probability: float  # that label's probability ("none"'s when task is None)
    pose: str | None  # None, or the correction that makes the image route to an upright task (module docstring)
    pose_task: str | None  # the task the corrected copy routes to
    pose_probability: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def read_card(folder: Path) -> dict:
    path = Path(folder) / "card.json"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: train the router with `python -m train.router`")
    card = json.loads(path.read_text())
    if card.get("kind") != CARD_KIND:
        raise ModelFileError(f"{path} is not a router card (kind {card.get('kind')!r})")
    if card.get("labels") != router_labels():
        raise ModelFileError(f"{path} has labels {card.get('labels')}, but the registry's are {router_labels()}: "
                             "retrain the router after adding a task")
    return card


def verify(folder: Path, card: dict, name: str = "model.onnx") -> Path:
    """The path of `name`, after checking its sha256 against the card."""
    return verified_file(folder, card.get("files", {}), name, "train the router with `python -m train.router`")


class Router:
    """The router model of one folder (card.json + model.onnx)."""

    def __init__(self, folder: Path, device: str = "auto"):
        self.folder = Path(folder)
        self.card = read_card(self.folder)
        self.labels: list[str] = list(self.card["labels"])
        self.size: int = int(self.card["input"]["size"])
        self.session = create_session(verify(self.folder, self.card), device, threads=1)
        self.provider = self.session.get_providers()[0]
        self.route(np.zeros((self.size, self.size), np.uint8))  # warm-up: the first run allocates

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"image": batch})[0]

    def route(self, display: np.ndarray) -> Routing:
        """The image as given first; its four corrected copies only when it routes to "none" (most images
        route to a task, so most requests pay for one copy, not five)."""
        boxed, geometry = _boxed(display, self.size)
        given = self.probabilities(boxed[None, ..., None].astype(np.float32))[0]
        top = int(np.argmax(given))
        task = None if self.labels[top] == NONE else self.labels[top]
        routing = Routing({label: float(p) for label, p in zip(self.labels, given)}, task, float(given[top]),
                          None, None, None)
        if task is not None:
            return routing
        copies = corrected_copies(boxed, geometry)[1:]
        best = pose_of(np.concatenate([given[None], self.probabilities(copies)]), self.labels)
        if best is not None:
            routing.pose, routing.pose_task, routing.pose_probability = best
        return routing


def router_markdown(card: dict) -> str:
    """The router's card for people (the app's Models tab)."""
    training, metrics = card.get("training", {}), card.get("metrics", {}).get("validation", {})
    lines = [f"> {card.get('notice', '')}", "",
             f"- Router `{card.get('model_version')}`: labels {', '.join(card.get('labels', []))}; input "
             f"{card.get('input', {}).get('size')} px; a turned or inverted film is named when its corrected copy "
             f"routes with P >= {card.get('pose_confidence')}",
             f"- Training: `{training.get('command', '')}`, kept epoch {training.get('kept_epoch')}, "
             f"{training.get('seconds')} s; validation accuracy {metrics.get('accuracy', float('nan')):.3f}"]
    held = card.get("heldout")
    if held:
        accuracy, refused = held.get("routing_accuracy", {}), held.get("auto_non_radiographs_refused", {})
        lines.append(f"- Held-out (seed 2026 phantoms, never-seen families of non-radiographs): routing accuracy "
                     f"{accuracy.get('rate')} of {accuracy.get('of')}; non-radiographs refused {refused.get('rate')} "
                     f"of {refused.get('of')} (`{held.get('command', '')}`)")
    files = card.get("files", {})
    lines.append("- Files (sha256 checked before use): " + ", ".join(
        f"`{name}` {entry['sha256'][:12]}..." for name, entry in files.items()))
    return "\n".join(lines)


def pose_of(probabilities: np.ndarray, labels: list[str], threshold: float = POSE_CONFIDENCE):
    """(correction, task, probability) of the most probable corrected copy (rows 1-4 of a `router_batch`'s
    probabilities) that routes to an upright task with at least `threshold`; None when none does. Only meaningful
    when row 0, the image as given, routes to "none"."""
    best = None
    for copy, name in enumerate(CORRECTIONS[1:], start=1):
        label = int(np.argmax(probabilities[copy]))
        p = float(probabilities[copy, label])
        upright = labels[label] in TASKS and TASKS[labels[label]].upright
        if upright and p >= threshold and (best is None or p > best[2]):
            best = (name, labels[label], p)
    return best


__all__ = ["CORRECTIONS", "NONE", "POSE_CONFIDENCE", "ROUTER_SIZE", "Router", "Routing", "pose_of", "router_batch",
           "router_input", "router_labels", "router_markdown"]
