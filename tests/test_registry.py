import pytest

from radiograph.registry import TASKS, get_task

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
