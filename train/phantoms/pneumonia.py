"""Pneumonia phantoms: pediatric PA chest films, normal or with consolidation (Kermany 2018 layout, JPEG)."""
from __future__ import annotations

from radiograph.registry import get_task
from train.phantoms.chest import chest_anatomy, lung_markings, patchy_consolidation
from train.phantoms.recipes import Job, class_folders, recipe, split_patients, unique_ids, write_boxes

KERMANY_PNEUMONIA_SHARE = 4273 / (4273 + 1583)


def draw_pneumonia(rng, h: int, w: int, positive: bool):
    mu, chest = chest_anatomy(rng, h, w, pediatric=True)
    mu += lung_markings(rng, chest, amount=0.8)
    findings = []
    if positive:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.5 else [-1, 1]
        for side in sides:  # pediatric pneumonia: dense lobar or bilateral patchy consolidation, within the lung
            findings.append(patchy_consolidation(mu, rng, chest, side, "PNEUMONIA", "consolidation",
                                                 density=rng.uniform(0.8, 1.1), extent=(0.2, 0.3), zone=(0.3, 0.7)))
    return mu, findings


def plan_pneumonia(count, rng):
    patients = unique_ids(rng, count, 1, max(10_000, 4 * count))
    split_of = split_patients(rng, patients, {"train": 0.87, "val": 0.02, "test": 0.11})
    jobs = []
    for patient in patients:
        positive = bool(rng.random() < KERMANY_PNEUMONIA_SHARE)
        label = "PNEUMONIA" if positive else "NORMAL"
        for image in range(1, int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])) + 1):
            if len(jobs) == count:
                return jobs
            height = int(rng.uniform(640, 960))
            width = int(height * rng.uniform(1.1, 1.5))
            jobs.append(Job(len(jobs), f"chest_xray/{split_of[patient]}/{label}/IM-{patient:04d}-{image:04d}.jpeg",
                            (("positive", positive),), (width // 2, height // 2), (width, height)))
    return jobs


def write_pneumonia(root, jobs, findings, rng):
    class_folders(root / "chest_xray", ("train", "val", "test"), get_task("pneumonia").labels)
    write_boxes(root / "chest_xray", "chest_xray/", jobs, findings)


RECIPE = recipe("pneumonia", stream=2, plan=plan_pneumonia, draw=draw_pneumonia, write=write_pneumonia)
