"""Readers for the real dataset layouts (and the phantom sets written in the same layouts).

    python -m train.datasets knee --data /data/kneeKL224
    python -m train.datasets mura --data /data            # the folder holding MURA-v1.1/
    python -m train.datasets pneumonia --data /data/chest_xray
    python -m train.datasets chest14 --data /data/nih --val-fraction 0.1 --seed 0

Each prints a JSON summary (images, patients, studies, per-split and
per-label counts, patient overlap between splits). Readers read label files
and list folders; they never decode an image, so they are fast on the full
datasets. Every reader returns a `DatasetIndex` with the splits `train`,
`val` and `test` (knee may add `auto_test`):

  knee       the published train/val/test folders as they are.
  mura       official `train` minus a validation set carved from it by
             patient; official `valid` is the test set (MURA's test is hidden).
  pneumonia  official train and val pooled (val holds only 16 images) and a
             validation set carved by patient; official test as it is.
  chest14    official `test_list.txt` is test; validation carved by patient
             from `train_val_list.txt`.

Ground-truth boxes: chest14 reads `BBox_List_2017.csv` (NIH's file;
"Infiltrate" is read as Infiltration). Other tasks read this project's
`boxes.csv` at the dataset root when present (the phantom generator writes
it): columns `path,label,finding,x,y,w,h`, path relative to the root, label
one of the task's labels, box in pixels of the original image.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from radiograph.registry import MURA_PARTS, TASKS, get_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
BOXES_FILE = "boxes.csv"
BOXES_HEADER = ("path", "label", "finding", "x", "y", "w", "h")


class DatasetLayoutError(ValueError):
    """A folder that is not the expected dataset layout; says what was expected and what was found."""


@dataclass(frozen=True)
class Sample:
    path: Path
    target: tuple[int, ...]  # one-hot (softmax tasks) or multi-hot (chest14) over the task's labels
    patient: str
    study: str | None = None  # MURA: the study folder; predictions are averaged over its views


@dataclass(frozen=True)
class Box:
    path: Path
    label: str
    x: float
    y: float
    w: float
    h: float
    finding: str = ""


@dataclass
class DatasetIndex:
    task: str
    root: Path
    labels: tuple[str, ...]
    splits: dict[str, list[Sample]]
    boxes: list[Box] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        def describe(samples: list[Sample]) -> dict:
            counts = [sum(s.target[i] for s in samples) for i in range(len(self.labels))]
            result = {"images": len(samples), "patients": len({s.patient for s in samples})}
            if any(s.study for s in samples):
                result["studies"] = len({s.study for s in samples})
            result["labels"] = dict(zip(self.labels, counts))
            return result

        everything = [s for samples in self.splits.values() for s in samples]
        names = list(self.splits)
        patients = {name: {s.patient for s in samples} for name, samples in self.splits.items()}
        return {
            "task": self.task,
            "root": str(self.root),
            **describe(everything),
            "splits": {name: describe(samples) for name, samples in self.splits.items()},
            "patients_in_two_splits": {
                f"{a}/{b}": len(patients[a] & patients[b])
                for i, a in enumerate(names) for b in names[i + 1:]
            },
            "boxes": len(self.boxes),
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------- shared helpers

def find_layout_root(root: Path, required: tuple[str, ...], expected: str, max_depth: int = 4) -> Path:
    """The shallowest folder at or under `root` holding every entry in `required` (zips nest folders)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder; expected {expected}")
    level = [root]
    for _ in range(max_depth + 1):
        for folder in sorted(level):
            if all((folder / name).exists() for name in required):
                return folder
        level = [child for folder in level for child in _subfolders(folder)]
    found = ", ".join(sorted(p.name for p in _subfolders(root))[:12]) or "no folders"
    raise DatasetLayoutError(
        f"{root} does not hold the expected layout {expected}: no folder within {max_depth} levels "
        f"has {', '.join(required)}; found at the top: {found}"
    )


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder)
                if e.is_dir() and e.name != "__MACOSX" and not e.name.startswith(".")]
    except OSError:
        return []


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, skipping macOS resource forks (`._name`) and hidden files."""
    return sorted(Path(e.path) for e in os.scandir(folder)
                  if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES))


def one_hot(index: int, size: int) -> tuple[int, ...]:
    return tuple(int(i == index) for i in range(size))


def carve_by_patient(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split off about `fraction` of the patients (stratified by each patient's first label), no patient in both."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    by_stratum: dict[tuple, list[str]] = defaultdict(list)
    for patient, target in {s.patient: s.target for s in reversed(samples)}.items():
        by_stratum[target].append(patient)  # a patient's stratum: the label of its first image
    rng = random.Random(seed)
    ranked = []  # spread each stratum evenly over [0, 1), so any prefix is close to stratified
    for stratum in sorted(by_stratum):
        patients = sorted(by_stratum[stratum])
        rng.shuffle(patients)
        ranked += [((i + rng.random()) / len(patients), patient) for i, patient in enumerate(patients)]
    ranked.sort()
    held_out = {patient for _, patient in ranked[:round(len(ranked) * fraction)]}
    kept = [s for s in samples if s.patient not in held_out]
    return kept, [s for s in samples if s.patient in held_out]


def kfold_by_patient(samples: list[Sample], folds: int, fold: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Fold `fold` of `folds`: (train, validation), grouped by patient and stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need 2 or more folds and 0 <= fold < folds, got fold {fold} of {folds}")
    strata = [s.target.index(1) if sum(s.target) == 1 else int(any(s.target)) for s in samples]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, val = list(splitter.split(samples, strata, groups=[s.patient for s in samples]))[fold]
    return [samples[i] for i in train], [samples[i] for i in val]


def read_boxes_csv(root: Path, labels: tuple[str, ...]) -> list[Box]:
    """This project's box file for tasks whose public dataset has none (written by train.phantoms)."""
    path = root / BOXES_FILE
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    boxes = []
    for row in rows:
        if row["label"] not in labels:
            raise DatasetLayoutError(f"{path}: label {row['label']!r} is not one of {labels}")
        boxes.append(Box(root / row["path"], row["label"], *(float(row[k]) for k in "xywh"), row["finding"]))
    return boxes


def _check_class_folders(folder: Path, classes: list[str], what: str) -> None:
    found = sorted(p.name for p in _subfolders(folder))
    if not found or set(found) - set(classes):
        raise DatasetLayoutError(f"{folder} should hold only the folders {', '.join(classes)} ({what}), "
                                 f"found {', '.join(found) or 'none'}")


def _require_images(splits: dict[str, list[Sample]], root: Path, expected: str) -> None:
    if not any(splits.values()):
        raise DatasetLayoutError(f"{root} has the folders of {expected} but no images in them")


READERS: dict[str, Callable[..., DatasetIndex]] = {}


def reads(task: str):
    """Register a reader of `task`'s dataset layout: `reader(root, val_fraction, seed) -> DatasetIndex`."""
    def register(reader):
        READERS[task] = reader
        return reader

    return register


# ----------------------------------------------------------------------------- knee

KNEE_LAYOUT = TASKS["knee"].dataset.layout


@reads("knee")
def read_knee(root: Path, val_fraction: float = 0.1, seed: int = 0) -> DatasetIndex:
    """Chen 2018 knee KL folders. Patient = the file name's leading digits (the OAI subject id)."""
    labels = TASKS["knee"].labels
    base = find_layout_root(Path(root), ("train", "test"), KNEE_LAYOUT)
    splits: dict[str, list[Sample]] = {}
    for split in ("train", "val", "test", "auto_test"):
        if not (base / split).is_dir():
            continue
        _check_class_folders(base / split, [str(grade) for grade in range(len(labels))], "KL grades")
        splits[split] = [
            Sample(path, one_hot(grade, len(labels)), _knee_patient(path.stem))
            for grade in range(len(labels)) if (base / split / str(grade)).is_dir()
            for path in list_images(base / split / str(grade))
        ]
    notes = []
    if "val" not in splits:
        splits["train"], splits["val"] = carve_by_patient(splits["train"], val_fraction, seed)
        notes.append(f"no val folder: validation carved from train by patient ({val_fraction:.0%})")
    _require_images(splits, base, KNEE_LAYOUT)
    splits = {name: splits[name] for name in ("train", "val", "test", "auto_test") if name in splits}
    return DatasetIndex("knee", base, labels, splits, read_boxes_csv(base, labels), notes)


def _knee_patient(stem: str) -> str:
    match = re.match(r"\d+", stem)
    return match.group(0) if match else stem


# ----------------------------------------------------------------------------- MURA

MURA_LAYOUT = TASKS["mura"].dataset.layout


@reads("mura")
def read_mura(root: Path, val_fraction: float = 0.1, seed: int = 0) -> DatasetIndex:
    """MURA-v1.1: headerless CSVs whose paths start with `MURA-v1.1/`; label per study."""
    labels = TASKS["mura"].labels
    mura = find_layout_root(Path(root), ("train_image_paths.csv", "valid_image_paths.csv",
                                         "train_labeled_studies.csv", "valid_labeled_studies.csv"), MURA_LAYOUT)
    base = mura.parent  # CSV paths are relative to the folder holding MURA-v1.1/
    notes: list[str] = []
    official: dict[str, list[Sample]] = {}
    for split in ("train", "valid"):
        study_labels = {}
        for row in _headerless_csv(mura / f"{split}_labeled_studies.csv", 2):
            study_labels[row[0].rstrip("/")] = int(row[1])
        samples, missing, disagree = [], 0, 0
        for (relative,) in _headerless_csv(mura / f"{split}_image_paths.csv", 1):
            parts = Path(relative).parts  # MURA-v1.1/split/XR_PART/patientN/studyK_label/imageN.png
            if len(parts) != 6 or not parts[2].startswith("XR_") or parts[2][3:].lower() not in MURA_PARTS:
                raise DatasetLayoutError(f"{mura}/{split}_image_paths.csv: {relative!r} is not {MURA_LAYOUT}")
            study = "/".join(parts[:5])
            if study not in study_labels:
                raise DatasetLayoutError(f"{relative!r} has no row in {split}_labeled_studies.csv")
            abnormal = study_labels[study]
            disagree += abnormal != int(parts[4].endswith("_positive"))
            path = base / relative
            if not path.is_file():
                missing += 1
                continue
            part = MURA_PARTS.index(parts[2][3:].lower())
            samples.append(Sample(path, one_hot(2 * part + abnormal, len(labels)), parts[3], study))
        if missing:
            notes.append(f"{split}: {missing} images listed in {split}_image_paths.csv are missing and were skipped")
        if disagree:
            notes.append(f"{split}: {disagree} images whose study folder name disagrees with the labeled-studies CSV "
                         "(the CSV wins)")
        official[split] = samples
    train, val = carve_by_patient(official["train"], val_fraction, seed)
    notes.append(f"official 'valid' is the test split; validation carved from train by patient ({val_fraction:.0%})")
    splits = {"train": train, "val": val, "test": official["valid"]}
    _require_images(splits, mura, MURA_LAYOUT)
    return DatasetIndex("mura", mura, labels, splits, read_boxes_csv(mura, labels), notes)


def _headerless_csv(path: Path, columns: int) -> list[list[str]]:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    for row in rows[:1]:
        if len(row) != columns:
            raise DatasetLayoutError(f"{path}: expected {columns} column(s) per row and no header, found {row}")
    return rows


# ----------------------------------------------------------------------------- pneumonia (Kermany)

PNEUMONIA_LAYOUT = TASKS["pneumonia"].dataset.layout
KERMANY_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-")


@reads("pneumonia")
def read_pneumonia(root: Path, val_fraction: float = 0.1, seed: int = 0) -> DatasetIndex:
    """Kermany chest_xray folders; patient from the file name (personN_..., IM-NNNN-..., NORMAL2-IM-NNNN-...)."""
    labels = TASKS["pneumonia"].labels
    base = find_layout_root(Path(root), ("train", "test"), PNEUMONIA_LAYOUT)
    for split in ("train", "val", "test"):
        if (base / split).is_dir():
            _check_class_folders(base / split, list(labels), "classes")
    official = {
        split: [Sample(path, one_hot(index, len(labels)), _kermany_patient(path.stem))
                for index, label in enumerate(labels) if (base / split / label).is_dir()
                for path in list_images(base / split / label)]
        for split in ("train", "val", "test")
    }
    train, val = carve_by_patient(official["train"] + official["val"], val_fraction, seed)
    notes = [f"official train and val ({len(official['val'])} images) pooled; "
             f"validation carved by patient ({val_fraction:.0%})"]
    splits = {"train": train, "val": val, "test": official["test"]}
    _require_images(splits, base, PNEUMONIA_LAYOUT)
    return DatasetIndex("pneumonia", base, labels, splits, read_boxes_csv(base, labels), notes)


def _kermany_patient(stem: str) -> str:
    match = KERMANY_PATIENT.match(stem)
    return (match.group(1) or match.group(2)) if match else stem


# ----------------------------------------------------------------------------- NIH ChestX-ray14

CHEST14_LAYOUT = TASKS["chest14"].dataset.layout
NIH_HEADER_START = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID"]
NIH_LABEL_ALIASES = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv spells it this way


@reads("chest14")
def read_chest14(root: Path, val_fraction: float = 0.1, seed: int = 0) -> DatasetIndex:
    labels = TASKS["chest14"].labels
    base = find_layout_root(Path(root), ("train_val_list.txt", "test_list.txt"), CHEST14_LAYOUT)
    entries = sorted(base.glob("Data_Entry_2017*.csv"))
    if not entries:
        raise DatasetLayoutError(f"{base} has no Data_Entry_2017*.csv; expected {CHEST14_LAYOUT}")
    images = {}
    for folder in [base / "images", *sorted(base.glob("images_*/images")), *sorted(base.glob("images_*"))]:
        if folder.is_dir():
            for path in list_images(folder):
                images.setdefault(path.name, path)
    records, missing = {}, 0
    with entries[0].open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header[:4] != NIH_HEADER_START:
            raise DatasetLayoutError(f"{entries[0]}: header should start with {','.join(NIH_HEADER_START)}, "
                                     f"found {','.join(header[:4])}")
        for row in reader:
            if not row:
                continue
            if len(row) < 11:  # 11 value columns: the header's brackets hold commas
                raise DatasetLayoutError(f"{entries[0]}: row {row} has {len(row)} columns, expected 11")
            name, findings, patient = row[0], row[1], str(int(row[3]))
            if name not in images:
                missing += 1
                continue
            records[name] = Sample(images[name], _multi_hot(findings, labels, entries[0]), patient)
    splits_official = {}
    for split, list_file in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        names = (base / list_file).read_text().split()
        splits_official[split] = [records[n] for n in names if n in records]
    train, val = carve_by_patient(splits_official["train_val"], val_fraction, seed)
    notes = [f"validation carved from train_val_list.txt by patient ({val_fraction:.0%})"]
    if missing:
        notes.append(f"{missing} images in {entries[0].name} have no file under images/ and were skipped")
    splits = {"train": train, "val": val, "test": splits_official["test"]}
    _require_images(splits, base, CHEST14_LAYOUT)
    return DatasetIndex("chest14", base, labels, splits, _read_nih_boxes(base, images, labels), notes)


def _multi_hot(findings: str, labels: tuple[str, ...], source: Path) -> tuple[int, ...]:
    names = {NIH_LABEL_ALIASES.get(f, f) for f in findings.split("|")} - {"No Finding"}
    unknown = names - set(labels)
    if unknown:
        raise DatasetLayoutError(f"{source}: unknown finding(s) {sorted(unknown)}; known: {', '.join(labels)}")
    return tuple(int(label in names) for label in labels)


def _read_nih_boxes(base: Path, images: dict[str, Path], labels: tuple[str, ...]) -> list[Box]:
    path = base / "BBox_List_2017.csv"
    if not path.exists():
        return []
    boxes = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # "Image Index,Finding Label,Bbox [x,y,w,h],,,"
        for row in reader:
            if not row:
                continue
            label = NIH_LABEL_ALIASES.get(row[1], row[1])
            if label not in labels:
                raise DatasetLayoutError(f"{path}: unknown finding {row[1]!r}")
            if row[0] in images:
                boxes.append(Box(images[row[0]], label, *(float(v) for v in row[2:6])))
    return boxes


# ----------------------------------------------------------------------------- command line

def read_dataset(task: str, root: Path, val_fraction: float = 0.1, seed: int = 0) -> DatasetIndex:
    get_task(task)  # an unknown task is refused with the list of known ones
    if task not in READERS:
        raise ValueError(f"no dataset reader is registered for {task!r} (a reader registers itself with @reads)")
    return READERS[task](Path(root), val_fraction=val_fraction, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.datasets", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (real or phantom)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="patients carved for validation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        index = read_dataset(args.task, args.data, args.val_fraction, args.seed)
    except ValueError as error:  # DatasetLayoutError, bad --val-fraction
        parser.exit(2, f"error: {error}\n")
    print(json.dumps(index.summary(), indent=2))


if __name__ == "__main__":
    main()
