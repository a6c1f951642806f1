"""The input gate's logic (radiograph.gate) on made-up images, routings and distances; the shipped router and
distances are tested in test_router.py and test_ood.py, and the gate end to end in test_app.py and test_predict.py."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from radiograph.gate import (
    Gate,
    Gatekeeper,
    Reason,
    gate_of,
    image_reasons,
    names_of_several_studies,
    study_gate,
)
from radiograph.imaging import decode, display_copy

RNG = np.random.default_rng(0)


def film(height=300, width=240) -> np.ndarray:
    """A radiograph-like uint8 image: dark background, a bright smooth blob, a little noise."""
    y, x = np.mgrid[:height, :width]
    blob = 200 * np.exp(-(((x - width / 2) / (width / 4)) ** 2 + ((y - height / 2) / (height / 3)) ** 2))
    return np.clip(blob + RNG.normal(0, 6, blob.shape) + 20, 0, 255).astype(np.uint8)


def codes(reasons) -> list[str]:
    return [r.code for r in reasons]


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def test_a_film_passes_the_image_checks():
    assert image_reasons(film()) == []


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_constant_image_is_refused_as_blank(value):
    reasons = image_reasons(np.full((200, 200), value, np.uint8))
    assert codes(reasons) == ["blank"] and reasons[0].verdict == "refuse"
    assert "blank" in reasons[0].text


def test_faint_noise_on_a_constant_image_is_still_blank():
    image = np.clip(100 + RNG.normal(0, 1, (400, 400)), 0, 255).astype(np.uint8)
    assert codes(image_reasons(image)) == ["blank"]


def test_low_contrast_and_clipping_warn():
    squeezed = (film().astype(np.float32) * 40 / 255 + 100).astype(np.uint8)
    assert codes(image_reasons(squeezed)) == ["low_contrast"]
    burnt = film()
    burnt[: int(0.7 * len(burnt))] = 255
    assert "clipped_white" in codes(image_reasons(burnt))
    dark = film()
    dark[: int(0.8 * len(dark))] = 0
    assert "clipped_black" in codes(image_reasons(dark))
    assert all(r.verdict == "warn" for r in image_reasons(burnt) + image_reasons(dark))


def test_colour_is_measured_while_decoding_and_refused():
    gray = film()
    assert decode(png(np.dstack([gray] * 3))).colourfulness == 0.0  # RGB with R = G = B is gray
    photo = np.dstack([gray, np.roll(gray, 40, axis=1), 255 - gray])
    colourful = decode(png(photo)).colourfulness
    assert colourful > 20
    reasons = image_reasons(display_copy(decode(png(photo)).image), colourful)
    assert codes(reasons) == ["colour"] and reasons[0].verdict == "refuse"


def test_a_large_image_is_checked_on_a_small_copy():
    big = np.kron(film(), np.ones((8, 8), np.uint8))  # 2400 x 1920
    assert image_reasons(big) == []


@dataclass
class FakeRouting:
    task: str | None
    probability: float
    pose: str | None = None
    pose_task: str | None = None
    pose_probability: float | None = None


class FakeRouter:
    def __init__(self, routing):
        self.routing = routing

    def route(self, display):
        return self.routing


class FakeDistance:
    threshold, false_alarm_rate = 10.0, 0.01

    def __init__(self, score):
        self.value = score

    def score(self, features):
        return self.value


def keeper(routing=None, score=1.0) -> Gatekeeper:
    return Gatekeeper(FakeRouter(routing) if routing else None, {"knee": FakeDistance(score)})


def test_no_router_and_a_near_distance_is_ok():
    keep = keeper()
    seen = keep.inspect(film())
    assert keep.refusal("knee", seen) is None
    gate = keep.gate("knee", seen, np.zeros((2, 2, 3)))
    assert gate.as_dict() == {"verdict": "ok", "reasons": [], "codes": [], "ood_score": 1.0, "ood_threshold": 10.0,
                              "routed_task": None, "routed_probability": None}


def test_a_far_distance_warns_with_the_threshold_in_words():
    gate = keeper(score=25.0).gate("knee", keeper().inspect(film()), np.zeros((2, 2, 3)))
    assert gate.verdict == "warn" and codes(gate.reasons) == ["ood"]
    assert "25.0" in gate.reasons[0].text and "10.0" in gate.reasons[0].text and "1%" in gate.reasons[0].text


def test_another_tasks_image_warns_and_names_that_task():
    keep = keeper(FakeRouting("chest14", 0.97))
    seen = keep.inspect(film())
    assert keep.refusal("knee", seen) is None
    gate = keep.gate("knee", seen, None)
    assert gate.verdict == "warn" and codes(gate.reasons) == ["other_task"]
    assert "Chest X-ray (14 findings)" in gate.reasons[0].text
    assert gate.routed_task == "chest14" and gate.routed_probability == 0.97
    unsure = keeper(FakeRouting("chest14", 0.6))
    assert unsure.gate("knee", unsure.inspect(film()), None).verdict == "ok"  # not sure enough


def test_the_router_saying_none_refuses_when_sure_and_warns_when_not():
    sure = keeper(FakeRouting(None, 0.98))
    refusal = sure.refusal("knee", sure.inspect(film()))
    assert refusal.verdict == "refuse" and codes(refusal.reasons) == ["not_radiograph"]
    assert refusal.ood_score is None  # the task model did not run
    unsure = keeper(FakeRouting(None, 0.6))
    assert unsure.refusal("knee", unsure.inspect(film())) is None
    assert codes(unsure.gate("knee", unsure.inspect(film()), None).reasons) == ["unrecognised"]


def test_a_turned_image_warns_with_the_correction_and_routes_to_its_task():
    keep = keeper(FakeRouting(None, 0.95, "rotated by 90 degrees clockwise", "knee", 0.99))
    seen = keep.inspect(film())
    assert keep.refusal("knee", seen) is None  # a pose is a warning, not a refusal
    gate = keep.gate("knee", seen, None)
    assert codes(gate.reasons) == ["pose"] and "rotated by 90 degrees clockwise" in gate.reasons[0].text
    assert keep.choose(seen, {"knee": None}) == ("knee", None)


def test_auto_refuses_what_no_available_task_takes():
    unsure = keeper(FakeRouting(None, 0.6))
    task, gate = unsure.choose(unsure.inspect(film()), {"knee": None})
    assert task is None and gate.verdict == "refuse" and "not_routed" in codes(gate.reasons)
    elsewhere = keeper(FakeRouting("mura", 0.99))
    task, gate = elsewhere.choose(elsewhere.inspect(film()), {"knee": None})
    assert task is None and codes(gate.reasons) == ["task_unavailable"]


def test_the_image_checks_refuse_before_the_router_runs():
    class Exploding:
        def route(self, display):
            raise AssertionError("the router ran on a refused image")

    keep = Gatekeeper(Exploding(), {})
    seen = keep.inspect(np.zeros((64, 64), np.uint8))
    assert keep.refusal("knee", seen).verdict == "refuse" and seen.routing is None


def test_a_study_of_mixed_parts_warns_and_a_refused_view_is_left_out():
    ok = Gate("ok", ood_score=2.0, ood_threshold=10.0, routed_task="mura", routed_probability=0.99)
    gate = study_gate([("a.png", ok), ("b.png", ok)], ["hand", "wrist"])
    assert gate.verdict == "warn" and codes(gate.reasons) == ["mixed_parts"]
    assert "hand, wrist" in gate.reasons[0].text
    assert study_gate([("a.png", ok), ("b.png", ok)], ["hand", "hand"]).verdict == "ok"
    refused = gate_of([Reason("blank", "refuse", "The image is blank.", "blank")])
    partly = study_gate([("a.png", ok), ("b.png", refused)], ["hand", None])
    assert partly.verdict == "warn" and codes(partly.reasons) == ["blank", "views_left_out"]
    assert partly.reasons[0].text.startswith("b.png: ")
    assert study_gate([("b.png", refused)], [None]).verdict == "refuse"


MURA_PARTS = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")


def test_file_names_of_several_studies_are_warned_about_and_one_studys_are_not():
    one = [f"wrist_patient00010_study1_view{n}.png" for n in (1, 2, 3)]
    assert names_of_several_studies(one, MURA_PARTS) is None
    assert names_of_several_studies(["image1.png", "image2.png"], MURA_PARTS) is None  # MURA's own: names say nothing
    assert names_of_several_studies(["a.png", "hand.png"], MURA_PARTS) is None  # one part named: nothing to compare
    pooled = names_of_several_studies(one + ["hand_patient00043_study1_view1.png"], MURA_PARTS)
    assert pooled.code == "mixed_studies" and pooled.verdict == "warn"
    assert "patient00010/study1, patient00043/study1" in pooled.text and "hand, wrist" in pooled.text
    second = names_of_several_studies(["patient00010_study1_image1.png", "patient00010_study2_image1.png"])
    assert second is not None and "study2" in second.text  # same patient, another study
    parts = names_of_several_studies(["XR_HAND_1.png", "XR_WRIST_1.png"], MURA_PARTS)
    assert parts is not None and "ids" not in parts.text  # only the body parts differ
    ok = Gate("ok")
    gate = study_gate([("a.png", ok)], ["hand"], also=(pooled,))
    assert gate.verdict == "warn" and gate.as_dict()["codes"] == ["mixed_studies"]


def test_uncertainty_is_the_decision_margin_worked_by_hand():
    from pathlib import Path

    from radiograph.cards import ModelCard
    from radiograph.decision import uncertainty, uncertainty_summary

    models = Path(__file__).resolve().parent.parent / "models"
    knee, mura, chest = (ModelCard.load(models / task) for task in ("knee", "mura", "chest14"))
    assert uncertainty(knee, [0.6, 0.3, 0.1, 0, 0]) == pytest.approx(0.7)  # 1 - (0.6 - 0.3)
    assert uncertainty(knee, [1, 0, 0, 0, 0]) == 0 and uncertainty(knee, [0.5, 0.5, 0, 0, 0]) == 1
    p = np.zeros(14)
    p[[1, 3]] = [0.35, 0.05]  # elbow_abnormal, finger_abnormal: P(abnormal) summed over the parts is 0.4
    assert uncertainty(mura, p) == pytest.approx(1 - (0.5 - 0.4) / 0.5)  # below the cut 0.5 by 0.1 of 0.5
    p = np.zeros(14)
    p[[0, 1]] = [0.1, 0.8]  # elbow: normal 0.1, abnormal 0.8 (and nothing else): 0.3 above the cut, of 0.5
    assert uncertainty(mura, p) == pytest.approx(1 - 0.3 / 0.5)
    thresholds = np.array([chest.thresholds[label] for label in chest.labels])
    assert uncertainty(chest, thresholds) == 1  # every finding on its threshold
    far = np.where(thresholds < 0.5, 0.0, 1.0)
    near = far.copy()
    near[4] = thresholds[4] * 0.9  # one finding just below its threshold: the image is as unsure as that finding
    assert uncertainty(chest, near) == pytest.approx(0.9)
    summary = uncertainty_summary(knee, [0.6, 0.3, 0.1, 0, 0])
    assert summary["high"] == (0.7 >= knee.uncertainty["high_above"]) and summary["high_above"] > 0
