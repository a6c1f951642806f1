"""The app's examples: a few phantom radiographs per task, with their ground truth.

    python -m train.examples --out examples --seed 7

Images come from a phantom set generated with a seed the demo models never
trained on (they trained on seed 0), picked by a fixed rule (the first images
in name order of each wanted class), never by whether the model gets them
right. Each task folder holds the images and examples.json:
[{"files": [...], "truth": [labels], "caption": "..."}]. Knee and chest14 add
one example in another container (16-bit PNG, DICOM) made from a phantom
above, so the app's decoders can be tried from the examples too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from radiograph.registry import TASKS
from train.datasets import read_dataset
from train.phantoms import dicom_bytes, generate

COUNTS = {"knee": 100, "mura": 160, "pneumonia": 60, "chest14": 120}
MURA_WANTED = ("wrist_abnormal", "humerus_abnormal", "hand_normal")  # studies of two views or more
CHEST14_WANTED = (("Cardiomegaly",), ("Effusion",), ("Pneumothorax",), ("Edema",), ())  # () = No Finding


def truth(index, sample) -> list[str]:
    return [label for label, on in zip(index.labels, sample.target) if on]


def pick(index) -> list[list]:
    """Groups of samples (one group = one example; MURA: the views of one study)."""
    samples = sorted((s for split in index.splits.values() for s in split), key=lambda s: str(s.path))
    if index.task == "knee":
        return [[next(s for s in samples if s.target[grade])] for grade in range(len(index.labels))]
    if index.task == "pneumonia":
        return [[s] for label in range(2) for s in [x for x in samples if x.target[label]][:2]]
    if index.task == "chest14":
        return [[next(s for s in samples if tuple(truth(index, s)) == wanted)] for wanted in CHEST14_WANTED]
    studies: dict[str, list] = {}
    for sample in samples:
        studies.setdefault(sample.study, []).append(sample)
    return [next(v for v in studies.values() if len(v) >= 2 and truth(index, v[0]) == [wanted])
            for wanted in MURA_WANTED]


def caption(task: str, labels: list[str], views: int = 1) -> str:
    if task == "knee":
        return f"{labels[0]} (KL {TASKS['knee'].labels.index(labels[0])})"
    if task == "mura":
        part, status = labels[0].split("_")
        return f"{status.capitalize()} {part} study, {views} views"
    return ", ".join(labels) or "No Finding"


def write_examples(task: str, out: Path, seed: int) -> list[dict]:
    folder = out / task
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        index = read_dataset(task, generate(task, Path(scratch), COUNTS[task], seed), 0.1, seed)
        entries = []
        for group in pick(index):
            labels = truth(index, group[0])
            files = []
            for number, sample in enumerate(group, 1):
                name = sample.path.name
                if task == "mura":  # XR_WRIST/patient00008/study1_positive/image1.png -> wrist_patient00008_study1_view1.png
                    study = Path(sample.study)
                    name = (f"{study.parent.parent.name[3:].lower()}_{study.parent.name}_{study.name.split('_')[0]}"
                            f"_view{number}{sample.path.suffix}")
                shutil.copyfile(sample.path, folder / name)
                files.append(name)
            entries.append({"files": files, "truth": labels, "caption": f"Truth: {caption(task, labels, len(files))}"})
        extra = {"knee": ("16-bit PNG", ".png"), "chest14": ("DICOM", ".dcm")}.get(task)
        if extra:  # the first example again, in a deeper container
            source = entries[-2 if task == "knee" else 0]
            pixels = cv2.imread(str(folder / source["files"][0]), cv2.IMREAD_GRAYSCALE).astype(np.uint16)
            name = Path(source["files"][0]).stem + ("_16bit.png" if task == "knee" else ".dcm")
            if task == "knee":
                cv2.imwrite(str(folder / name), pixels * 200 + 3000)  # 3000..54000 of 65535: a 16-bit range
            else:
                (folder / name).write_bytes(dicom_bytes(pixels * 16, bits_stored=12, window=(2048, 4096)))
            entries.append({"files": [name], "truth": source["truth"],
                            "caption": f"{source['caption']} ({extra[0]})"})
    (folder / "examples.json").write_text(json.dumps(entries, indent=2))
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.examples", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    args = parser.parse_args(argv)
    for task in args.tasks:
        entries = write_examples(task, args.out, args.seed)
        print(f"{task}: {len(entries)} examples -> {args.out / task}")


if __name__ == "__main__":
    main()
