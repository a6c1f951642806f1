"""The app's examples: a few phantom radiographs per task, with their ground truth.

    python -m train.examples all --out examples --seed 7
    python -m train.examples knee
    python -m train.examples all --thumbnails     # only the thumbnails of the examples already there

Images come from a phantom set generated with a seed the demo models never
trained on (they trained on seed 0), picked by a fixed rule (the first images
in name order of each wanted class), never by whether the model gets them
right. What each task ships is its registry entry's `examples`
(radiograph.registry.ExamplePicks). A study task's views lie one folder per
study, as in the real dataset (study_file_name). Each task folder holds the images and
examples.json: [{"files": [...], "truth": [labels], "caption": "...", "thumbnail": ".thumbnails/NAME.png"}]
(the thumbnail: the first file as the app shows it, THUMBNAIL_SIDE pixels on its longer side, in a hidden
folder that batch prediction of the folder skips; `--thumbnails` makes them again for the examples already
there). A task
with `deeper` adds one example in another container (16-bit PNG, DICOM) made
from a phantom above, so the app's decoders can be tried from the examples too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from radiograph.imaging import decode, display_copy
from radiograph.registry import TASKS, TaskSpec, get_task
from train.datasets import read_dataset
from train.phantoms import generate
from train.phantoms.dicom import study_bytes


def truth(index, sample) -> list[str]:
    return [label for label, on in zip(index.labels, sample.target) if on]


def pick(index, spec: TaskSpec) -> list[list]:
    """Groups of samples, one group per entry of `spec.examples.truths` (a study task: the views of one study of
    at least `min_views` views; otherwise one image), the first in path order not picked already."""
    picks = spec.examples
    samples = sorted((s for split in index.splits.values() for s in split), key=lambda s: str(s.path))
    if spec.study:
        studies: dict[str, list] = {}
        for sample in samples:
            studies.setdefault(sample.study, []).append(sample)
        candidates = [views for views in studies.values() if len(views) >= picks.min_views]
    else:
        candidates = [[sample] for sample in samples]
    groups: list[list] = []
    for wanted in picks.truths:
        groups.append(next(group for group in candidates
                           if tuple(truth(index, group[0])) == tuple(wanted) and group not in groups))
    return groups


def caption(spec: TaskSpec, labels: list[str], views: int = 1) -> str:
    """`spec.examples.caption` filled in (see radiograph.registry.ExamplePicks)."""
    fields = {"labels": ", ".join(labels) or spec.examples.no_label, "views": views}
    if labels:
        fields["index"] = spec.labels.index(labels[0])
    if labels and spec.decision.kind == "grouped":
        group, member = next((g, m) for g in spec.decision.groups for m in spec.decision.members
                             if f"{g}_{m}" == labels[0])
        fields.update(group=group, member_title=member.capitalize())
    return spec.examples.caption.format(**fields)


def study_file_name(study: str, view: int, suffix: str) -> str:
    """Where a study's view goes: one folder per study, as in MURA (<area>/<patient>/<study>/, the study folder
    without its label suffix: the path carries no label), the file named by those three folders,
    <area>_<patient>_<study>_view<N><suffix>, so a view taken out of its folder (an upload) still says which study
    it is: .../XR_WRIST/patient00008/study1_positive -> XR_WRIST/patient00008/study1/wrist_patient00008_study1_view1.png.
    Batch prediction forms a study from a folder (radiograph.predict); the app warns when uploaded views' names
    are of several studies (radiograph.gate.names_of_several_studies)."""
    area, patient, name = Path(study).parts[-3:]
    study_name = name.split("_")[0]
    return f"{area}/{patient}/{study_name}/{area.split('_')[-1].lower()}_{patient}_{study_name}_view{view}{suffix}"


def _sixteen_bit_png(path: Path, pixels: np.ndarray, spec: TaskSpec) -> None:
    cv2.imwrite(str(path), pixels * 200 + 3000)  # 3000..54000 of 65535: a 16-bit range


def _dicom(path: Path, pixels: np.ndarray, spec: TaskSpec) -> None:
    """A one-image study as a PACS would hold it (study, series and patient modules, the task's body part), so the
    example's DICOM results (a Secondary Capture and a report referencing it) can be written and stored."""
    part = spec.body_parts[0] if spec.body_parts else ""
    path.write_bytes(study_bytes([pixels], part, patient_id="PHANTOM-EXAMPLE", WindowCenter=2048, WindowWidth=4096)[0])


# Deeper containers an example may be copied into (ExamplePicks.deeper): the copy's name ending and its writer,
# which takes the 8-bit pixels as uint16 and the task.
CONTAINERS = {"16-bit PNG": ("_16bit.png", _sixteen_bit_png), "DICOM": (".dcm", _dicom)}


THUMBNAIL_SIDE = 160  # pixels on a thumbnail's longer side (the app shows them about 120 px tall)
THUMBNAILS = ".thumbnails"  # the folder of an example folder that holds them


def write_thumbnails(folder: Path, entries: list[dict]) -> list[dict]:
    """Each entry's thumbnail, `.thumbnails/<first file's stem>_<suffix>.png` (hidden: `python -m radiograph predict`
    on the folder skips it): its first file decoded as the app decodes it (DICOM windowing, 16-bit range), the
    whole image, longer side THUMBNAIL_SIDE; returns the entries with it."""
    (folder / THUMBNAILS).mkdir(exist_ok=True)
    listed = []
    for entry in entries:
        first = Path(entry["files"][0])
        name = f"{THUMBNAILS}/{first.stem}_{first.suffix.lstrip('.')}.png"
        cv2.imwrite(str(folder / name), display_copy(decode(folder / first).image, THUMBNAIL_SIDE))
        listed.append({**entry, "thumbnail": name})
    return listed


def write_examples(task: str, out: Path, seed: int) -> list[dict]:
    spec = get_task(task)
    folder = out / task
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        index = read_dataset(task, generate(task, Path(scratch), spec.examples.count, seed), 0.1, seed)
        entries = []
        for group in pick(index, spec):
            labels = truth(index, group[0])
            files = []
            for number, sample in enumerate(group, 1):
                name = study_file_name(sample.study, number, sample.path.suffix) if spec.study else sample.path.name
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sample.path, folder / name)
                files.append(name)
            entries.append({"files": files, "truth": labels, "caption": f"Truth: {caption(spec, labels, len(files))}"})
        if spec.examples.deeper:  # one example again, in a deeper container
            container, which = spec.examples.deeper
            ending, write = CONTAINERS[container]
            source = entries[which]
            pixels = cv2.imread(str(folder / source["files"][0]), cv2.IMREAD_GRAYSCALE).astype(np.uint16)
            name = str(Path(source["files"][0]).with_name(Path(source["files"][0]).stem + ending))
            write(folder / name, pixels, spec)
            entries.append({"files": [name], "truth": source["truth"], "caption": f"{source['caption']} ({container})"})
    entries = write_thumbnails(folder, entries)
    (folder / "examples.json").write_text(json.dumps(entries, indent=2))
    return entries


def rewrite_thumbnails(task: str, out: Path) -> list[dict]:
    """The thumbnails of the examples already in out/<task>, and examples.json listing them."""
    folder = out / task
    entries = write_thumbnails(folder, json.loads((folder / "examples.json").read_text()))
    (folder / "examples.json").write_text(json.dumps(entries, indent=2))
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.examples", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--thumbnails", action="store_true",
                        help="only make the thumbnails of the examples already there (and list them)")
    parser.add_argument("task", nargs="?", choices=[*TASKS, "all"], default="all")
    args = parser.parse_args(argv)
    for task in TASKS if args.task == "all" else [args.task]:
        entries = rewrite_thumbnails(task, args.out) if args.thumbnails else write_examples(task, args.out, args.seed)
        print(f"{task}: {len(entries)} examples{' (thumbnails)' if args.thumbnails else ''} -> {args.out / task}")


if __name__ == "__main__":
    main()
