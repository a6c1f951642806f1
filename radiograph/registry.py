"""The task registry: every task this project knows, described as data.

Training, export, the app, the batch command, the tests and the benchmarks
loop over `TASKS`; nothing else keeps a per-task list, and nothing outside
this module branches on a task's name. What a task does is a field here: its
labels, head, decision rule, study grouping, heatmap scores, headline figures
and example picks. A trained model copies what serving needs (labels, head,
decision, study, heatmap scores) into its card (radiograph.cards.ModelCard),
and serving reads only the card. Dataset readers and phantom recipes live in
train/ and register themselves under a task id; this package never imports
train/.

Adding a task: one `TaskSpec` here, a reader in train/datasets.py and a
phantom recipe in train/phantoms/.

    >>> from radiograph.registry import TASKS, get_task
    >>> get_task("chest14").labels[:3]
    ('Atelectasis', 'Cardiomegaly', 'Effusion')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Head = Literal["softmax", "sigmoid"]
ImbalancePolicy = Literal["class_weight", "weighted_bce"]
DecisionKind = Literal["top_class", "each_above_threshold", "grouped"]


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
    """The real public dataset a task trains on (its reader registers itself in train/datasets.py)."""

    name: str
    reference: str
    layout: str  # shown in error messages when a folder does not match


@dataclass(frozen=True)
class Decision:
    """How probabilities become a decision.

    - `top_class`: the most probable label.
    - `each_above_threshold`: every label at or above its card threshold (multi-label heads).
    - `grouped`: labels are `f"{group}_{member}"` for every group and member, in that order (MURA: body part x
      {normal, abnormal}). The group is the one with the largest summed probability; the score is the summed
      probability of the `positive` member over all groups, called positive at or above `cut`.
    """

    kind: DecisionKind
    groups: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    positive: str = ""
    cut: float = 0.5
    group_name: str = "group"  # the result's key for the decided group ("body_part")

    def labels(self) -> tuple[str, ...]:
        return tuple(f"{group}_{member}" for group in self.groups for member in self.members)

    @property
    def score_key(self) -> str:
        """The result's key for the positive member's probability summed over groups ("abnormal_probability")."""
        return f"{self.positive}_probability"

    @property
    def group_score_key(self) -> str:
        """The result's key for the decided group's summed probability ("body_part_probability")."""
        return f"{self.group_name}_probability"

    @property
    def negative(self) -> str:
        """The member a grouped decision calls when the score is below the cut (MURA: normal)."""
        return next(member for member in self.members if member != self.positive)

    def versus_pairs(self) -> tuple[tuple[str, str], ...]:
        """Each group's members scored against each other, positive first (TaskSpec.heatmap_versus of a grouped
        task: a part's abnormal map explains logit(abnormal) - logit(normal), and its normal map the reverse)."""
        return tuple(pair for group in self.groups for pair in (
            (f"{group}_{self.positive}", f"{group}_{self.negative}"),
            (f"{group}_{self.negative}", f"{group}_{self.positive}")))

    def positive_columns(self) -> tuple[int, ...]:
        """The columns of the positive member, one per group (MURA: the odd columns)."""
        index = self.members.index(self.positive)
        return tuple(g * len(self.members) + index for g in range(len(self.groups)))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "groups": list(self.groups), "members": list(self.members),
                "positive": self.positive, "cut": self.cut, "group_name": self.group_name}


@dataclass(frozen=True)
class Study:
    """Several images form one study (MURA): the folder that holds them is the study, and its probabilities are
    the mean of its views' probabilities (radiograph.decision.study_probabilities), decided by the task's
    `Decision`, which must be `grouped` (the app shows each view's P(positive))."""

    rule: Literal["mean_over_views"] = "mean_over_views"
    noun: str = "study"

    def as_dict(self) -> dict:
        return {"rule": self.rule, "noun": self.noun}


@dataclass(frozen=True)
class ExamplePicks:
    """Which phantoms `python -m train.examples` ships in examples/<task>/ (from a fresh set at its own seed).

    One example per entry of `truths` (a label set; () = no label, e.g. No Finding), taken in path order, each a
    different image (for a study task, a different study of at least `min_views` views). `deeper` also writes one
    example again in a deeper container: ("16-bit PNG" or "DICOM", the index in `truths` of the example).
    """

    count: int  # phantoms generated to pick from
    truths: tuple[tuple[str, ...], ...]
    min_views: int = 1
    deeper: tuple[str, int] | None = None
    # How an example is captioned (after "Truth: "). {labels}: the truth's labels joined by ", " (`no_label` when
    # there are none); {index}: the first label's position in the task's labels; {group}, {member_title}: a grouped
    # label's group and its member capitalised; {views}: the number of images.
    caption: str = "{labels}"
    no_label: str = "No Finding"


@dataclass(frozen=True)
class Anatomy:
    """How the place of a heatmap's hottest region on a film of this task is named (radiograph.regions).

    The image is cut into equal bands: `rows` names them from top to bottom, `columns` from the image's left to its
    right. `place` joins a row's and a column's name into words; `terms` says what kind of names they are and how
    the image's sides relate to the patient's, and is shown with every description."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    terms: str
    place: str = "{column}, {row}"

    def zone(self, x_fraction: float, y_fraction: float) -> tuple[str, str]:
        """(row, column) names of a point given as fractions of the image's width and height (0 to 1)."""
        def band(names, fraction):
            return names[min(max(int(fraction * len(names)), 0), len(names) - 1)]

        return band(self.rows, y_fraction), band(self.columns, x_fraction)

    def as_dict(self) -> dict:
        return {"rows": list(self.rows), "columns": list(self.columns), "terms": self.terms, "place": self.place}


# A PA or AP chest film is shown in the radiological convention: the patient's right on the image's left.
CHEST_ANATOMY = Anatomy(
    rows=("upper zone", "middle zone", "lower zone"),
    columns=("patient's right lung", "centre (mediastinum and heart)", "patient's left lung"),
    terms="radiological convention: the patient's right is on the image's left; zones and columns are thirds of the "
          "image")
# An AP knee film: the image's halves are the medial and lateral compartments, which of them depends on whether it is
# a left or a right knee, and a PNG does not say.
KNEE_ANATOMY = Anatomy(
    rows=("distal femur", "joint space", "proximal tibia"),
    columns=("image left (the lateral compartment of a right knee, the medial of a left knee)",
             "image right (the medial compartment of a right knee, the lateral of a left knee)"),
    terms="an AP film centred on the joint, in thirds of its height and halves of its width; the file does not say "
          "whether it is a left or a right knee, so both readings of each side are given",
    place="{row}, {column}")
# Any of seven upper-limb parts, photographed in any orientation: only the image's own directions are sure.
IMAGE_ANATOMY = Anatomy(
    rows=("top", "middle", "bottom"),
    columns=("image left", "centre", "image right"),
    terms="image terms, thirds of the image: these films come in any orientation, so no anatomical side or level "
          "is implied",
    place="{row}, {column}")


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
    imbalance: ImbalancePolicy  # class_weight: per-class sample weights; weighted_bce: per-class weighted loss
    metrics: tuple[str, ...]  # the figures evaluation reports for this task (train/evaluate.py METRICS)
    headline: tuple[str, ...]  # the figures that sum a model up (export reports a variant's change in them)
    dataset: Dataset
    examples: ExamplePicks
    decision: Decision = Decision("top_class")
    study: Study | None = None  # None: every image stands alone
    # (class, alternative): the class's heatmap score is its logit minus the alternative's. A softmax logit is
    # defined only up to a shift shared by all classes, so where the decision is one class against another
    # (pneumonia or not; a MURA part abnormal or normal), that log-odds is the pre-activation score to explain.
    heatmap_versus: tuple[tuple[str, str], ...] = ()
    # Films of this task have one right way up (a chest is shown upright, a knee with the femur on top): a copy
    # turned by 90 degrees or more is not this task's image as the model knows it, and the input gate says so.
    # False where real films come in any orientation (MURA's hands and fingers are photographed every way).
    upright: bool = True
    # How a heatmap's hottest region is named in words (radiograph.regions); image terms unless a task says more.
    anatomy: Anatomy = IMAGE_ANATOMY
    # DICOM BodyPartExamined values (upper case, letters and digits only) of this task's films: a DICOM input that
    # names another part is warned about (radiograph.gate.body_part_reasons); empty: not checked
    body_parts: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.head == "sigmoid"



KL_GRADES = ("Healthy", "Doubtful", "Minimal", "Moderate", "Severe")  # KL 0..4
MURA_PARTS = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")
CHEST14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

MURA_DECISION = Decision("grouped", groups=MURA_PARTS, members=("normal", "abnormal"), positive="abnormal",
                         cut=0.5, group_name="body_part")

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
            headline=("balanced_accuracy", "quadratic_weighted_kappa"),
            examples=ExamplePicks(count=100, truths=tuple((grade,) for grade in KL_GRADES), deeper=("16-bit PNG", 3),
                                  caption="{labels} (KL {index})"),
            anatomy=KNEE_ANATOMY,
            body_parts=("KNEE", "LEG", "LOWERLIMB", "LOWEREXTREMITY", "EXTREMITY"),
            dataset=Dataset(
                name="Knee Osteoarthritis Severity Grading (Chen 2018)",
                reference="https://doi.org/10.17632/56rmx5bjcr.1",
                layout="ROOT/{train,val,test[,auto_test]}/{0,1,2,3,4}/*.png",
            ),
        ),
        TaskSpec(
            id="mura",
            title="MURA (musculoskeletal)",
            question="Is this upper-extremity study normal or abnormal, and which body part is it?",
            labels=MURA_DECISION.labels(),
            head="softmax",
            image_size=320,
            backbone="densenet121",
            augmentation=Augmentation(horizontal_flip=True, rotation_degrees=15.0),
            imbalance="class_weight",
            metrics=("study_cohen_kappa", "study_auc", "study_accuracy", "image_auc", "body_part_accuracy"),
            headline=("study_auc",),
            examples=ExamplePicks(count=160, truths=(("wrist_abnormal",), ("humerus_abnormal",), ("hand_normal",)),
                                  min_views=2, caption="{member_title} {group} study, {views} views"),
            decision=MURA_DECISION,
            study=Study(),
            upright=False,
            anatomy=IMAGE_ANATOMY,
            body_parts=("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "ARM", "UPPERARM", "SHOULDER", "WRIST",
                        "UPPERLIMB", "UPPEREXTREMITY", "EXTREMITY"),
            heatmap_versus=MURA_DECISION.versus_pairs(),
            dataset=Dataset(
                name="MURA v1.1 (Stanford ML Group)",
                reference="https://stanfordmlgroup.github.io/competitions/mura/",
                layout="ROOT/MURA-v1.1/{train,valid}/XR_<PART>/patient<N>/study<K>_{positive,negative}/image<N>.png "
                       "with headerless {train,valid}_image_paths.csv and {train,valid}_labeled_studies.csv",
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
            headline=("auc",),
            examples=ExamplePicks(count=60, truths=(("NORMAL",), ("NORMAL",), ("PNEUMONIA",), ("PNEUMONIA",))),
            heatmap_versus=(("PNEUMONIA", "NORMAL"), ("NORMAL", "PNEUMONIA")),
            anatomy=CHEST_ANATOMY,
            body_parts=("CHEST", "THORAX", "LUNG", "CHESTABDOMEN"),
            dataset=Dataset(
                name="Labeled Optical Coherence Tomography and Chest X-Ray Images (Kermany 2018)",
                reference="https://doi.org/10.17632/rscbjbr9sj.2",
                layout="ROOT/[chest_xray/[chest_xray/]]{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
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
            headline=("mean_auc",),
            examples=ExamplePicks(count=120, truths=(("Cardiomegaly",), ("Effusion",), ("Pneumothorax",), ("Edema",), ()),
                                  deeper=("DICOM", 0), caption="{labels}"),
            decision=Decision("each_above_threshold"),
            anatomy=CHEST_ANATOMY,
            body_parts=("CHEST", "THORAX", "LUNG", "CHESTABDOMEN"),
            dataset=Dataset(
                name="NIH ChestX-ray14",
                reference="https://nihcc.app.box.com/v/ChestXray-NIHCC",
                layout="ROOT/Data_Entry_2017*.csv, train_val_list.txt, test_list.txt, [BBox_List_2017.csv], "
                       "images in ROOT/images/ or ROOT/images_NNN/images/",
            ),
        ),
    )
}


def get_task(task_id: str) -> TaskSpec:
    try:
        return TASKS[task_id]
    except KeyError:
        raise ValueError(f"unknown task {task_id!r}; known tasks: {', '.join(TASKS)}") from None
