import re
from pathlib import Path

import pytest

from radiograph.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"knee": ("softmax", 5), "mura": ("softmax", 14), "pneumonia": ("softmax", 2), "chest14": ("sigmoid", 14)}


def test_the_four_tasks():
    assert set(TASKS) == set(EXPECTED)


@pytest.mark.parametrize("task", list(TASKS))
def test_spec_is_consistent(task):
    spec = TASKS[task]
    head, classes = EXPECTED[task]
    assert spec.id == task
    assert (spec.head, spec.num_classes) == (head, classes)
    assert len(set(spec.labels)) == spec.num_classes
    assert spec.image_size >= 128 and spec.metrics and spec.backbone
    from train.datasets import READERS

    assert callable(READERS[task])
    assert spec.multi_label == (spec.imbalance == "weighted_bce")


def test_chest_films_are_never_flipped_and_limbs_may_be():
    assert not TASKS["pneumonia"].augmentation.horizontal_flip
    assert not TASKS["chest14"].augmentation.horizontal_flip
    assert TASKS["knee"].augmentation.horizontal_flip and TASKS["mura"].augmentation.horizontal_flip


def test_label_spellings():
    assert TASKS["chest14"].labels[-2:] == ("Pleural_Thickening", "Hernia")
    assert "Infiltration" in TASKS["chest14"].labels
    assert TASKS["knee"].labels == ("Healthy", "Doubtful", "Minimal", "Moderate", "Severe")
    assert TASKS["mura"].labels[:2] == ("elbow_normal", "elbow_abnormal")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="known tasks: knee, mura, pneumonia, chest14"):
        get_task("elbow")


CODE = [ROOT / "app.py", *(ROOT / "radiograph").glob("*.py"), *(ROOT / "train").rglob("*.py"),
        *(ROOT / "export").glob("*.py"), *(ROOT / "bench").glob("*.py")]
TASK_NAME = "|".join(TASKS)


@pytest.mark.parametrize("path", [p for p in CODE if p.name != "registry.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_branches_on_a_task_name_or_keeps_a_per_task_dict(path):
    """Task behaviour is registry data: comparing with a task's name, or a dict keyed by task names, is refused
    outside radiograph/registry.py (a reader or phantom recipe registering itself under its task is allowed)."""
    text = path.read_text()
    branches = re.findall(rf"""(?:==|!=|\bin)\s*\(?["']({TASK_NAME})["']""", text)
    per_task = re.findall(rf"""[{{,]\s*["']({TASK_NAME})["']\s*:""", text)
    assert not branches and not per_task, (branches, per_task)


@pytest.mark.parametrize("path", sorted((ROOT / "radiograph").glob("*.py")), ids=lambda p: p.name)
def test_the_core_never_imports_training_code(path):
    assert not re.search(r"^\s*(?:from|import)\s+train\b|importlib|['\"]train\.", path.read_text(), re.M)
