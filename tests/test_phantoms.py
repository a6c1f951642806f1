"""Phantom sets: deterministic, in the real layouts (see test_datasets), and no label leaks into nuisances."""
import hashlib

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiograph.registry import TASKS
from train.datasets import read_dataset
from train.phantoms import PROVENANCE_FILE, RECIPES, generate, render

LEAKAGE_IMAGES = 500
LEAKAGE_AUC_LIMIT = 0.65  # chance is 0.5; the finding itself moves global statistics a little
# A binary question per task whose answer only the finding carries.
POSITIVE = {
    "knee": lambda t: t[2:].sum() > 0,  # KL >= 2 (definite osteoarthritis)
    "mura": lambda t: t[1::2].sum() > 0,  # abnormal
    "pneumonia": lambda t: t[1] > 0,
    "chest14": lambda t: t.sum() > 0,  # any finding
}


def digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE)
    return hashlib.sha256(b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.mark.parametrize("task", list(TASKS))
def test_deterministic_for_a_seed(tmp_path, task):
    first = generate(task, tmp_path / "a", 12, seed=4, workers=2)
    second = generate(task, tmp_path / "b", 12, seed=4, workers=1)
    third = generate(task, tmp_path / "c", 12, seed=5, workers=1)
    assert digest(first) == digest(second) != digest(third)


def test_each_task_keeps_its_own_random_stream():
    """A phantom depends on its task's stream number, never on the task's place in TASKS: these are pinned (a
    change would change every phantom of the task)."""
    assert {task: RECIPES[task].stream for task in TASKS} == {"knee": 0, "mura": 1, "pneumonia": 2, "chest14": 3}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_box_lies_on_its_image(task):
    jobs = RECIPES[task].plan(40, np.random.default_rng(1))
    for job in jobs[:15]:
        image, findings = render(task, job, seed=2)
        assert image.shape == job.size[::-1] and image.dtype == np.uint8
        for finding in findings:
            x, y, w, h = finding.box
            assert finding.label in TASKS[task].labels
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= image.shape[1] + 1e-3 and y + h <= image.shape[0] + 1e-3


def test_chest14_prevalence_follows_nih_with_a_floor():
    jobs = RECIPES["chest14"].plan(3000, np.random.default_rng(0))
    counts = {label: sum(label in dict(job.params)["labels"] for job in jobs) / len(jobs)
              for label in TASKS["chest14"].labels}
    assert counts["Infiltration"] > counts["Effusion"] > counts["Nodule"] > counts["Hernia"]
    assert min(counts.values()) > 0.025  # the floor keeps Hernia (0.2% in NIH) present
    none = sum(not dict(job.params)["labels"] for job in jobs) / len(jobs)
    assert 0.35 < none < 0.6  # NIH: 54% No Finding


def global_statistics(path):
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    height, width = image.shape
    laplacian = np.abs(cv2.Laplacian(image, cv2.CV_32F)).mean()  # noise and sharpness
    return [height, width, width / height, image.mean(), image.std(),
            *np.percentile(image, (1, 5, 25, 50, 75, 95, 99)), laplacian, path.stat().st_size]


@pytest.mark.parametrize("task", list(TASKS))
def test_global_statistics_and_size_do_not_predict_the_label(tmp_path, task):
    """A classifier on brightness, contrast, histogram, noise, size and file size stays near chance."""
    index = read_dataset(task, generate(task, tmp_path, LEAKAGE_IMAGES, seed=21))
    samples = [s for split in index.splits.values() for s in split]
    features = np.array([global_statistics(s.path) for s in samples])
    positive = np.array([POSITIVE[task](np.array(s.target)) for s in samples], int)
    assert 0.15 < positive.mean() < 0.85
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(classifier, features, positive, method="predict_proba",
                               cv=StratifiedKFold(5, shuffle=True, random_state=0))[:, 1]
    auc = roc_auc_score(positive, scores)
    print(f"{task}: leakage AUC {auc:.3f} on {len(samples)} images")
    assert auc < LEAKAGE_AUC_LIMIT


# Drawn after the anatomy and the lung markings, so with one seed the attenuation maps with and without the
# finding differ by the finding alone.
DRAWN_LAST = ("Effusion", "Atelectasis", "Infiltration", "Pneumonia", "Consolidation", "Mass", "Nodule", "Edema",
              "Fibrosis", "Pleural_Thickening")


@pytest.mark.parametrize("label", DRAWN_LAST)
def test_a_chest14_box_holds_what_was_drawn(label):
    """The ground truth Grad-CAM is scored against: 98% or more of the pixels where a finding adds at least half
    its strongest attenuation lie in its box (blur tails below that may spill over)."""
    from train.phantoms.chest14 import draw_chest14

    for index in range(8):
        with_finding, findings = draw_chest14(np.random.default_rng([8, index]), 512, 512, frozenset({label}))
        without, _ = draw_chest14(np.random.default_rng([8, index]), 512, 512, frozenset())
        added = np.abs(with_finding - without)
        core = added >= 0.5 * added.max()
        x, y, w, h = findings[0].box
        inside = core[max(0, int(y)):int(np.ceil(y + h)), max(0, int(x)):int(np.ceil(x + w))].sum()
        assert inside >= 0.98 * core.sum(), f"{label}: {inside / core.sum():.3f} of the finding inside its box"


@pytest.mark.parametrize("angle", [-15.0, 0.0, 5.0, 40.0])
def test_an_ellipse_box_bounds_the_drawn_ellipse(angle):
    from train.phantoms.drawing import ellipse, ellipse_box

    canvas = np.zeros((200, 200), np.float32)
    ellipse(canvas, (100, 90), (60, 25), 1.0, angle)  # the heart shadow is drawn this way
    ys, xs = np.nonzero(canvas)
    x, y, w, h = ellipse_box((100, 90), (60, 25), angle)
    np.testing.assert_allclose([x, y, x + w, y + h], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=2.0)


def test_a_box_keeps_only_what_the_exposed_film_shows():
    """Collimator shutters overwrite the film's edges and rotation moves findings off the canvas: a box is cut
    to the exposed field, and a finding wholly outside it has no box (nothing visible to point at)."""
    from train.phantoms import Finding
    from train.phantoms.film import _on_film

    field = (10, 20, 190, 180)  # x0, y0, x1, y1 of the exposed film
    findings = [Finding("a", "a", (50.0, 50.0, 30.0, 40.0)),  # inside: unchanged
                Finding("b", "b", (0.0, 100.0, 30.0, 20.0)),  # under the left shutter in part: cut
                Finding("c", "c", (185.0, 170.0, 40.0, 40.0)),  # over a corner: cut on two sides
                Finding("d", "d", (195.0, 50.0, 10.0, 10.0)),  # wholly under the right shutter: dropped
                Finding("e", "e", (60.0, 19.5, 10.0, 0.8))]  # less than a pixel of it exposed: dropped
    assert [(f.label, f.box) for f in _on_film(findings, field)] == [
        ("a", (50.0, 50.0, 30.0, 40.0)), ("b", (10.0, 100.0, 20.0, 20.0)), ("c", (185.0, 170.0, 5.0, 10.0))]


def test_mura_examples_regenerate_as_shipped_one_folder_per_study(tmp_path):
    """`python -m train.examples mura` writes what examples/mura ships: the same studies, one folder per study as
    in MURA (XR_<PART>/patientN/studyK/), the same pixels."""
    import json
    from pathlib import Path

    from train.examples import write_examples

    shipped = Path(__file__).resolve().parent.parent / "examples" / "mura"
    entries = write_examples("mura", tmp_path, seed=7)
    assert entries == json.loads((shipped / "examples.json").read_text())
    for entry in entries:
        folders = {Path(name).parent for name in entry["files"]}
        assert len(folders) == 1 and len(folders.pop().parts) == 3  # XR_WRIST/patient00010/study1
        for name in entry["files"]:
            made, kept = (cv2.imread(str(root / name), cv2.IMREAD_UNCHANGED) for root in (tmp_path / "mura", shipped))
            assert made.shape == kept.shape and np.abs(made.astype(int) - kept).max() <= 1, name  # rounding


@pytest.mark.parametrize("task", list(TASKS))
def test_every_shipped_example_has_a_thumbnail_of_its_first_file(task):
    """The app's example thumbnails (python -m train.examples --thumbnails): one per example, the whole first file
    (its aspect), at most THUMBNAIL_SIDE a side, in the hidden folder batch prediction skips."""
    import json
    from pathlib import Path

    from radiograph.imaging import decode
    from train.examples import THUMBNAIL_SIDE, THUMBNAILS

    folder = Path(__file__).resolve().parent.parent / "examples" / task
    for entry in json.loads((folder / "examples.json").read_text()):
        assert entry["thumbnail"].startswith(THUMBNAILS + "/")
        thumbnail = cv2.imread(str(folder / entry["thumbnail"]), cv2.IMREAD_GRAYSCALE)
        height, width = decode(folder / entry["files"][0]).image.shape
        assert max(thumbnail.shape) == min(THUMBNAIL_SIDE, max(height, width))
        assert thumbnail.shape[1] / thumbnail.shape[0] == pytest.approx(width / height, rel=0.02)
