"""From probabilities to a decision, by the rule the model's card records (registry.Decision).

    decide(card, probabilities)          # the decision for one image or one study, in labels and words
    heatmap_classes(card, probabilities) # the classes whose heatmaps are shown by default
    uncertainty(card, probabilities)     # 0 (far from the decision boundary) .. 1 (on it)
    study_probabilities(views)           # a study's probabilities: the mean over its views (registry.Study)

Only the card is read: nothing here knows a task by name.
"""
from __future__ import annotations

import numpy as np

from radiograph.cards import ModelCard
from radiograph.registry import Decision


def grouped_summary(decision: Decision, probabilities: np.ndarray) -> dict:
    """A grouped decision's figures: the positive member's probability summed over groups, the group with the
    largest summed probability, and that sum (MURA: abnormal_probability, body_part, body_part_probability)."""
    p = np.asarray(probabilities, np.float64).reshape(len(decision.groups), len(decision.members))
    group = int(np.argmax(p.sum(axis=1)))
    positive = decision.members.index(decision.positive)
    return {decision.score_key: float(p[:, positive].sum()), decision.group_name: decision.groups[group],
            decision.group_score_key: float(p[group].sum())}


def positive_scores(decision: Decision, probabilities: np.ndarray) -> np.ndarray:
    """[N] the positive member's probability summed over groups, for a batch [N, C] (evaluation's score)."""
    return np.asarray(probabilities)[:, list(decision.positive_columns())].sum(axis=1)


def group_indices(decision: Decision, probabilities: np.ndarray) -> np.ndarray:
    """[N] the decided group of each row of a batch [N, C] (for targets: the true group)."""
    p = np.asarray(probabilities)
    return p.reshape(len(p), len(decision.groups), len(decision.members)).sum(axis=2).argmax(axis=1)


def heatmap_classes(card: ModelCard, probabilities: np.ndarray) -> list[int]:
    """The classes whose heatmaps are shown by default, the first on the overlay: for a multi-label decision every
    label at or above its threshold, most probable first (the top class when none is); for a grouped decision the
    positive member of the decided group; else the top class."""
    p = np.asarray(probabilities, np.float64)
    decision = card.decision
    if decision.kind == "each_above_threshold":
        positives = [c for c in np.argsort(-p, kind="stable") if p[c] >= card.thresholds[card.labels[c]]]
        return [int(c) for c in positives] or [int(np.argmax(p))]
    if decision.kind == "grouped":
        return [decision.positive_columns()[int(group_indices(decision, p[None])[0])]]
    return [int(np.argmax(p))]


def decide(card: ModelCard, probabilities: np.ndarray) -> dict:
    """The decision for one image (or one study's mean probabilities) at the card's operating thresholds."""
    labels, p, decision = card.labels, np.asarray(probabilities, np.float64), card.decision
    if decision.kind == "each_above_threshold":
        thresholds = card.thresholds
        positives = [label for label, value in zip(labels, p) if value >= thresholds[label]]
        return {"positive": positives, "thresholds": thresholds,
                "unreachable_thresholds": card.unreachable_thresholds,  # met only saturated (cards.UNREACHABLE_ABOVE)
                "text": "Positive: " + ", ".join(positives) if positives else "No finding above its threshold"}
    if decision.kind == "grouped":
        summary = grouped_summary(decision, p)
        score = summary[decision.score_key]
        called = score >= decision.cut
        word = (decision.positive if called else decision.negative).capitalize()
        return {**summary, decision.positive: called,
                "text": f"{word} {summary[decision.group_name]} (P({decision.positive}) = {score:.2f})"}
    top = int(np.argmax(p))
    return {"label": labels[top], "probability": float(p[top]), "text": f"{labels[top]} ({p[top]:.2f})"}


def uncertainty(card: ModelCard, probabilities: np.ndarray) -> float:
    """How near the decision is to flipping: 0 where it is as far from its boundary as it can be, 1 on it.

    The margin of the decision the card's rule makes, scaled by the room on its side of the boundary:
    - top_class: 1 - (top probability - second probability);
    - grouped: 1 - |score - cut| / (cut below it, 1 - cut above it), on the summed positive probability;
    - each_above_threshold: the same for every label against its threshold, and the largest (the least
      certain call of the image).
    One pass, no extra model run; the card's `uncertainty.high_above` (chosen on validation) says which values
    count as high."""
    p = np.asarray(probabilities, np.float64)
    decision = card.decision
    if decision.kind == "each_above_threshold":
        return float(np.max(label_uncertainties(card, p)))
    if decision.kind == "grouped":
        return float(_beyond(np.array([grouped_summary(decision, p)[decision.score_key]]),
                             np.array([decision.cut]))[0])
    top, second = np.sort(p)[::-1][:2] if len(p) > 1 else (p[0], 0.0)
    return float(np.clip(1.0 - (top - second), 0.0, 1.0))


def label_uncertainties(card: ModelCard, probabilities: np.ndarray) -> np.ndarray:
    """[C] each label's call against its own threshold, as in `uncertainty` (a multi-label card's findings)."""
    cuts = np.array([card.thresholds[label] for label in card.labels], np.float64)
    return _beyond(np.asarray(probabilities, np.float64), cuts)


def uncertainty_summary(card: ModelCard, probabilities: np.ndarray) -> dict:
    """What a result says of its uncertainty: the value, whether it is high by the card's cut (`uncertainty.
    high_above`, the 90th percentile on validation; None where the card has none), the cut and the method."""
    value = uncertainty(card, probabilities)
    cut = (card.uncertainty or {}).get("high_above")
    return {"value": round(value, 4), "high": None if cut is None else bool(value >= cut), "high_above": cut,
            "method": "decision margin (0: far from the decision boundary, 1: on it)"}


def _beyond(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """1 - distance from each cut, as a fraction of the room between the cut and 0 (below) or 1 (above)."""
    room = np.where(values < cuts, cuts, 1.0 - cuts)
    margin = np.divide(np.abs(values - cuts), room, out=np.ones_like(values), where=room > 0)
    return np.clip(1.0 - margin, 0.0, 1.0)


def decision_key(card: ModelCard, probabilities: np.ndarray) -> tuple:
    """What must not change between a model and its export: the top class (and a grouped decision's call), or
    the threshold crossings."""
    if card.decision.kind == "each_above_threshold":
        return tuple(decide(card, probabilities)["positive"])
    key = (card.labels[int(np.argmax(probabilities))],)
    if card.decision.kind == "grouped":
        key += (decide(card, probabilities)[card.decision.positive],)
    return key


def study_probabilities(views: list[np.ndarray]) -> np.ndarray:
    """A study's probabilities: the mean over its views (registry.Study rule "mean_over_views")."""
    if not views:
        raise ValueError("a study needs at least one view")
    return np.mean(np.asarray(views), axis=0)
