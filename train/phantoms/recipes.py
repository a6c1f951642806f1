"""Phantom recipes: how each task's phantom set is planned, drawn and laid out, registered under the task id.

A task module (knee.py, mura.py, ...) registers its recipe once, below its planner, renderer and writer:

    RECIPE = recipe("knee", stream=0, plan=plan_knee, draw=draw_knee, write=write_knee, marker=False)

`stream` is the task's own random stream number: it goes into every seed the task draws from
(`[seed, stream, job index]` for an image, `[seed, stream, 10**9]` for the plan), so a phantom depends on
(task, job, seed) alone and never on where the task sits in `radiograph.registry.TASKS`. It is fixed once a
task ships: changing it changes every phantom of the task. Streams are unique across tasks.

Also here: `Job` (one image to render) and the layout helpers the recipes share.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes, what it shows, its model-space and file sizes."""

    index: int
    path: str  # relative to the task folder
    params: tuple  # sorted (name, value) pairs for the renderer
    render: tuple[int, int]  # (width, height) of the attenuation canvas
    size: tuple[int, int]  # (width, height) written


@dataclass(frozen=True)
class Recipe:
    """How one task's phantoms are made."""

    task: str
    stream: int  # the task's random stream number (see the module docstring); never reused, never renumbered
    plan: Callable  # plan(count, rng) -> list[Job]: paths, labels and sizes, in the real layout
    draw: Callable  # draw(rng, h, w, **job.params) -> (attenuation map, [Finding]) on the render canvas
    write: Callable  # write(root, jobs, findings, rng): the layout's label files, boxes and empty class folders
    marker: bool = True  # burn a side marker into the film (knee crops have none)
    options: tuple[str, ...] = ()  # keyword options `plan` accepts (e.g. chest14's side and prevalence_floor)


RECIPES: dict[str, Recipe] = {}


def recipe(task: str, *, stream: int, plan: Callable, draw: Callable, write: Callable, marker: bool = True,
           options: tuple[str, ...] = ()) -> Recipe:
    """Register `task`'s phantom recipe (see `Recipe`) and return it."""
    taken = {r.stream: r.task for r in RECIPES.values() if r.task != task}
    if stream in taken:
        raise ValueError(f"phantom stream {stream} of {task!r} is already {taken[stream]!r}'s")
    RECIPES[task] = Recipe(task, stream, plan, draw, write, marker, options)
    return RECIPES[task]


def get_recipe(task: str) -> Recipe:
    try:
        return RECIPES[task]
    except KeyError:
        raise ValueError(f"no phantom recipe is registered for {task!r} (a task module registers one by "
                         f"calling recipe(...)); known: {', '.join(RECIPES)}") from None


# ============================================================================ layout helpers shared by the recipes

def shares(counts, floor):
    p = np.asarray(counts, float) / np.sum(counts)
    p = np.maximum(p, floor)
    return p / p.sum()


def split_patients(rng, patients, fractions: dict[str, float]):
    order = rng.permutation(len(patients))
    bounds = np.cumsum([0] + [round(f * len(patients)) for f in fractions.values()])
    bounds[-1] = len(patients)
    return {patients[i]: name for (name, lo, hi) in zip(fractions, bounds, bounds[1:]) for i in order[lo:hi]}


def unique_ids(rng, count, low, high):
    return [int(v) for v in rng.choice(np.arange(low, high), size=count, replace=False)]


def write_boxes(folder: Path, prefix: str, jobs, findings):
    with (folder / "boxes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "finding", "x", "y", "w", "h"))
        for job, boxes in zip(jobs, findings):
            for f in boxes:
                writer.writerow((job.path.removeprefix(prefix), f.label, f.finding, *(f"{v:.1f}" for v in f.box)))


def class_folders(root: Path, splits, classes):
    """The real layouts have every class folder in every split, even where a small phantom set has no image."""
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
