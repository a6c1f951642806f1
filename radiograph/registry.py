"""The task registry: every task this project knows, described as data.

Training, export, the app, the batch command, the tests and the benchmarks
loop over `TASKS`; nothing else keeps a per-task list. Labels here are the
single source for training; a trained model copies them into its card.json,
from which the app reads them.

    >>> from radiograph.registry import TASKS, get_task
    >>> get_task("chest14").labels[:3]
    ('Atelectasis', 'Cardiomegaly', 'Effusion')
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

Head = Literal["softmax", "sigmoid"]
ImbalancePolicy = Literal["class_weight", "weighted_bce"]


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation a task allows (applied in train/, never at serving)."""

    horizontal_flip: bool  # False for chest films: the heart is on the left, always.
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.05
    zoom_fraction: float = 0.10
    brightness_delta: float = 0.10  # fraction of the 0-255 range
    contrast_range: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class Dataset:
    """The real public dataset a task trains on, and how to read its folder."""

    name: str
    reference: str
    layout: str  # shown in error messages when a folder does not match
    reader: str  # "module:function" taking a root folder, returning train.datasets.DatasetIndex


@dataclass(frozen=True)
class TaskSpec:
    id: str
    title: str
    question: str
    labels: tuple[str, ...]
    head: Head
    image_size: int  # square model input, pixels per side after letterboxing
    backbone: str  # default backbone name (train/ builds it)
    augmentation: Augmentation
    imbalance: ImbalancePolicy
    metrics: tuple[str, ...]  # the figures that matter for this task, first = model selection
    dataset: Dataset
    # (class, alternative): the class's heatmap score is its logit minus the alternative's. A softmax logit is
    # defined only up to a shift shared by all classes, so where the decision is one class against another
    # (pneumonia or not; a MURA part abnormal or normal), that log-odds is the pre-activation score to explain.
    heatmap_versus: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.head == "sigmoid"

    def reader(self) -> Callable:
        """Import and return the dataset reader for this task (lazy: the app never needs it)."""
        module, function = self.dataset.reader.split(":")
        return getattr(importlib.import_module(module), function)


KL_GRADES = ("Healthy", "Doubtful", "Minimal", "Moderate", "Severe")  # KL 0..4
MURA_PARTS = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")
CHEST14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

TASKS: dict[str, TaskSpec] = {
    spec.id: spec
    for spec in (
        TaskSpec(
            id="knee",
            title="Knee OA (KL grade)",
            question="Kellgren-Lawrence osteoarthritis grade 0-4 of a knee radiograph",
            labels=KL_GRADES,
            head="softmax",
            image_size=224,
            backbone="xception",
            augmentation=Augmentation(horizontal_flip=True),  # left and right knees mirror each other
            imbalance="class_weight",
            metrics=("quadratic_weighted_kappa", "balanced_accuracy", "accuracy", "macro_f1",
                     "mean_absolute_error", "per_class_auc", "confusion_matrix"),
            dataset=Dataset(
                name="Knee Osteoarthritis Severity Grading (Chen 2018)",
                reference="https://doi.org/10.17632/56rmx5bjcr.1",
                layout="ROOT/{train,val,test[,auto_test]}/{0,1,2,3,4}/*.png",
                reader="train.datasets:read_knee",
            ),
        ),
        TaskSpec(
            id="mura",
            title="MURA (musculoskeletal)",
            question="Is this upper-extremity study normal or abnormal, and which body part is it?",
            labels=tuple(f"{part}_{status}" for part in MURA_PARTS for status in ("normal", "abnormal")),
            head="softmax",
            image_size=320,
            backbone="densenet121",
            augmentation=Augmentation(horizontal_flip=True, rotation_degrees=15.0),
            imbalance="class_weight",
            metrics=("study_cohen_kappa", "study_auc", "study_accuracy", "image_auc", "body_part_accuracy"),
            heatmap_versus=tuple(pair for part in MURA_PARTS for pair in (
                (f"{part}_abnormal", f"{part}_normal"), (f"{part}_normal", f"{part}_abnormal"))),
            dataset=Dataset(
                name="MURA v1.1 (Stanford ML Group)",
                reference="https://stanfordmlgroup.github.io/competitions/mura/",
                layout="ROOT/MURA-v1.1/{train,valid}/XR_<PART>/patient<N>/study<K>_{positive,negative}/image<N>.png "
                       "with headerless {train,valid}_image_paths.csv and {train,valid}_labeled_studies.csv",
                reader="train.datasets:read_mura",
            ),
        ),
        TaskSpec(
            id="pneumonia",
            title="Pneumonia (pediatric chest)",
            question="Does this pediatric chest film show pneumonia?",
            labels=("NORMAL", "PNEUMONIA"),
            head="softmax",
            image_size=224,
            backbone="small_cnn",
            augmentation=Augmentation(horizontal_flip=False, rotation_degrees=7.0),
            imbalance="class_weight",
            metrics=("auc", "sensitivity", "specificity", "accuracy", "f1", "confusion_matrix"),
            heatmap_versus=(("PNEUMONIA", "NORMAL"), ("NORMAL", "PNEUMONIA")),
            dataset=Dataset(
                name="Labeled Optical Coherence Tomography and Chest X-Ray Images (Kermany 2018)",
                reference="https://doi.org/10.17632/rscbjbr9sj.2",
                layout="ROOT/[chest_xray/]{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
                reader="train.datasets:read_pneumonia",
            ),
        ),
        TaskSpec(
            id="chest14",
            title="Chest X-ray (14 findings)",
            question="Which of 14 thoracic findings does this chest radiograph show?",
            labels=CHEST14_FINDINGS,
            head="sigmoid",
            image_size=320,
            backbone="densenet121",
            augmentation=Augmentation(horizontal_flip=False, rotation_degrees=7.0),
            imbalance="weighted_bce",
            metrics=("mean_auc", "per_class_auc", "per_class_f1_at_threshold"),
            dataset=Dataset(
                name="NIH ChestX-ray14",
                reference="https://nihcc.app.box.com/v/ChestXray-NIHCC",
                layout="ROOT/{images/,images_*/images/}*.png with Data_Entry_2017*.csv, "
                       "train_val_list.txt, test_list.txt[, BBox_List_2017.csv]",
                reader="train.datasets:read_chest14",
            ),
        ),
    )
}


def get_task(task_id: str) -> TaskSpec:
    try:
        return TASKS[task_id]
    except KeyError:
        raise ValueError(f"unknown task {task_id!r}; known tasks: {', '.join(TASKS)}") from None
