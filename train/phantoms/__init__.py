"""Phantom radiographs: synthetic datasets written in exactly the real layouts.

    python -m train.phantoms all --out phantoms --count 2000 --seed 0
    python -m train.phantoms chest14 --out phantoms --count 500 --seed 1
    python -m train.datasets chest14 --data phantoms/chest14        # read back like the real set

Real datasets and pretrained weights cannot be downloaded where this project
is built, so phantoms train the shipped demo models, feed the tests, examples
and benchmarks, and carry ground-truth boxes for measuring Grad-CAM.

How an image is made: anatomy is drawn as attenuation (bone high, soft tissue
middling, air none), the finding is added where it sits in real films, the
attenuation is rotated (up to 15 degrees) and exposed (1 - exp(-mu)), then
each image gets its own gamma, auto-window, contrast, collimation border,
blur, noise, burnt-in side marker and size. Every nuisance is drawn from the
image's own random stream *independently of the label*, and file names carry
no label (Kermany-style names are used for both classes), so only the finding
tells the classes apart; tests/test_phantoms.py checks that a classifier on
global statistics and size stays near chance.

Outputs per task (DIR = --out/<task>):
  knee       DIR/{train,val,test}/{0..4}/<OAI-like id><L|R>.png, 224x224
  mura       DIR/MURA-v1.1/{train,valid}/XR_<PART>/patientN/studyK_<label>/imageN.png (+ the 4 CSVs), max side 512
  pneumonia  DIR/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/IM-<patient>-<image>.jpeg, varied landscape sizes
  chest14    DIR/images/<patient>_<follow-up>.png 1024x1024, Data_Entry_2017.csv, train_val_list.txt, test_list.txt,
             BBox_List_2017.csv (every finding boxed; "Infiltrate" spelling as NIH)
  boxes: knee, mura and pneumonia write DIR/boxes.csv (path,label,finding,x,y,w,h; see train.datasets).
Knee boxes mark the joint space that carries the grade (every image); MURA and
pneumonia boxes mark each abnormality; chest14 boxes mark each finding.

Modules: drawing (primitives), film (exposure and nuisance), chest (anatomy
shared by pneumonia and chest14), recipes (`Recipe`, the registry of recipes,
and layout helpers), dicom (`dicom_bytes`), and one module per task (knee,
mura, pneumonia, chest14) that plans, draws and lays out its set and
registers its recipe, random stream number included, with `recipe(...)`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import pkgutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from radiograph.registry import TASKS
from train.phantoms.dicom import dicom_bytes
from train.phantoms.drawing import Finding
from train.phantoms.film import expose
from train.phantoms.recipes import RECIPES, Job, Recipe, get_recipe, recipe
# Every module of this package is imported once, so each task module registers its recipe: a new task's
# module needs no line here.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "__main__":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PROVENANCE_FILE", "RECIPES", "Finding", "Job", "Recipe", "dicom_bytes", "generate", "get_recipe", "main",
           "provenance", "recipe", "render"]

PROVENANCE_FILE = "PHANTOM.json"  # marks a folder as synthetic; training copies it into the model card


def render(task: str, job: Job, seed: int) -> tuple[np.ndarray, list[Finding]]:
    """The image and its boxes (in written pixels); depends only on (task, job, seed)."""
    made = get_recipe(task)
    rng = np.random.default_rng([seed, made.stream, job.index])
    width, height = job.render
    mu, findings = made.draw(rng, height, width, **dict(job.params))
    return expose(mu, findings, rng, job.size, marker=made.marker)


def _render_and_write(task: str, job: Job, seed: int, root: str) -> list[Finding]:
    cv2.setNumThreads(1)
    image, findings = render(task, job, seed)
    path = Path(root) / job.path
    path.parent.mkdir(parents=True, exist_ok=True)
    quality = int(np.random.default_rng([seed, job.index, 7]).integers(85, 96))  # independent of the label
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpeg" else [
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
        cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]  # fast: noise defeats stronger compression anyway
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")
    return findings


def generate(task: str, out: Path, count: int, seed: int = 0, workers: int | None = None,
             options: dict | None = None) -> Path:
    """Write `count` phantom images of `task` under out/<task> in the real layout; returns that folder.
    `options`: keyword options of the task's planner (`Recipe.options`, e.g. chest14's side and prevalence_floor)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    made = get_recipe(task)
    options = dict(options or {})
    unknown = sorted(set(options) - set(made.options))
    if unknown:
        raise ValueError(f"the {task} phantoms take no option {', '.join(unknown)}; they take "
                         f"{', '.join(made.options) or 'none'}")
    root = Path(out) / task
    jobs = made.plan(count, np.random.default_rng([seed, made.stream, 10**9]), **options)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 8:
        # spawn, not fork: a caller with threads (a running app, TensorFlow, ONNX Runtime) can deadlock forked children
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            findings = list(pool.map(_render_and_write, [task] * len(jobs), jobs, [seed] * len(jobs),
                                     [str(root)] * len(jobs), chunksize=8))
    else:
        findings = [_render_and_write(task, job, seed, str(root)) for job in jobs]
    made.write(root, jobs, findings, np.random.default_rng([seed, 99]))
    flags = "".join(f" --{name.replace('_', '-')} {value}" for name, value in options.items())
    (root / PROVENANCE_FILE).write_text(json.dumps({
        "generator": "train.phantoms", "task": task, "count": count, "seed": seed, **({"options": options} if options else {}),
        "command": f"python -m train.phantoms {task} --out {out} --count {count} --seed {seed}{flags}"}, indent=2))
    return root


def provenance(data: Path, root: Path) -> dict:
    """Where the images came from: a phantom set (its generator record) or a real dataset folder."""
    for folder in (data, *data.parents[:2], root):
        record = folder / PROVENANCE_FILE
        if record.is_file():
            return {"kind": "synthetic phantoms", **json.loads(record.read_text())}
    return {"kind": "real dataset", "folder": str(data.resolve())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.phantoms", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=[*TASKS, "all"])
    parser.add_argument("--out", type=Path, required=True, help="folder; each task goes to OUT/<task>")
    parser.add_argument("--count", type=int, default=2000, help="images per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--side", type=int, help="chest14: the films' side in pixels (default NIH's 1024)")
    parser.add_argument("--prevalence-floor", type=float,
                        help="chest14: lowest label prevalence (default 0.04 so small sets hold rare findings; 0 keeps "
                             "NIH's prevalences)")
    args = parser.parse_args(argv)
    options = {name: value for name, value in (("side", args.side), ("prevalence_floor", args.prevalence_floor))
               if value is not None}
    for task in TASKS if args.task == "all" else [args.task]:
        start = time.perf_counter()
        try:
            root = generate(task, args.out, args.count, args.seed, args.workers, options)
        except ValueError as error:
            parser.error(str(error))
        print(f"{task}: {args.count} images in {time.perf_counter() - start:.1f} s -> {root}")
        print(f"  next: python -m train.datasets {task} --data {root}")
