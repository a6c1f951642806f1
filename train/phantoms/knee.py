"""Knee phantoms: AP crops of one knee, Kellgren-Lawrence grade 0-4 (Chen 2018 layout, 224x224 PNG)."""
from __future__ import annotations

import numpy as np

from radiograph.registry import KL_GRADES
from train.phantoms.drawing import Finding, add_layer, ellipse, line, polygon, smooth_noise, with_cortex
from train.phantoms.recipes import Job, class_folders, recipe, shares, split_patients, unique_ids, write_boxes

KL_SHARE = (2286, 1046, 1516, 757, 173)  # Chen 2018 train images per grade
# Joint-space width (fraction of normal) per KL grade: adjacent grades overlap, as graders disagree.
KNEE_JSW = ((1.0, 0.08), (0.88, 0.09), (0.70, 0.10), (0.45, 0.10), (0.18, 0.08))


def draw_knee(rng, h: int, w: int, grade: int, side: str):
    size = h
    s = size * rng.uniform(0.75, 1.4)  # anatomy scale: how much of the crop the bones fill
    cx, cy = size / 2 + rng.normal(0, 0.05) * size, size / 2 + rng.normal(0, 0.08) * size
    mu = np.zeros((size, size), np.float32)
    tissue = np.zeros_like(mu)
    ellipse(tissue, (cx, cy), (rng.uniform(0.38, 0.5) * s, 0.9 * s), rng.uniform(0.4, 0.7))
    add_layer(mu, tissue * (1 + smooth_noise(rng, mu.shape, 20, 0.08)), 6)

    jsw_normal = 0.055 * s
    medial_fraction = np.clip(rng.normal(*KNEE_JSW[grade]), 0.05, 1.15)
    lateral_fraction = np.clip(1 - (1 - medial_fraction) * rng.uniform(0.1, 0.45), 0.05, 1.15)
    half = 0.27 * s  # half width of the bone ends
    medial_gap, lateral_gap = jsw_normal * medial_fraction, jsw_normal * lateral_fraction
    medial_side = 1 if side == "R" else -1  # AP view: a right knee's medial side is on the image right
    bones = np.zeros_like(mu)
    # femur: shaft from the top, two condyles resting on the joint line
    line(bones, (cx, cy - 1.2 * s), (cx, cy - 0.3 * s), 1.0, 0.28 * s)
    polygon(bones, [(cx - 0.14 * s, cy - 0.42 * s), (cx + 0.14 * s, cy - 0.42 * s),
                    (cx + half, cy - 0.12 * s), (cx - half, cy - 0.12 * s)], 1.0)
    for side, gap in ((medial_side, medial_gap), (-medial_side, lateral_gap)):
        ellipse(bones, (cx + side * 0.14 * s, cy - gap / 2 - 0.09 * s), (0.13 * s, 0.09 * s), 1.0)
    # tibia: plateau under the joint line, shaft downwards; fibular head on the lateral side
    plateau_top = cy + min(medial_gap, lateral_gap) / 2
    tibia_tilt = (medial_gap - lateral_gap) / 2 * medial_side
    polygon(bones, [(cx - half, plateau_top + tibia_tilt), (cx + half, plateau_top - tibia_tilt),
                    (cx + 0.15 * s, cy + 0.35 * s), (cx - 0.15 * s, cy + 0.35 * s)], 1.0)
    line(bones, (cx, cy + 0.3 * s), (cx, cy + 1.2 * s), 1.0, 0.26 * s)
    ellipse(bones, (cx - medial_side * 0.27 * s, cy + 0.22 * s), (0.06 * s, 0.08 * s), 0.8)
    bones = with_cortex(bones, 0.02 * s) * (1 + smooth_noise(rng, mu.shape, 4, 0.1))  # cortex, trabeculae
    extra = np.zeros_like(mu)  # densities that add to the bone under them
    ellipse(extra, (cx + rng.normal(0, 0.03) * s, cy - 0.3 * s), (0.12 * s, 0.15 * s), 0.25)  # patella, faint

    medial_x = cx + medial_side * half
    if grade >= 1 and (grade >= 2 or rng.random() < 0.6):  # osteophytes: doubtful at 1, definite from 2
        length = 0.02 * s * (1 + 1.3 * grade) * rng.uniform(0.7, 1.3)
        for x_edge, sign in ((medial_x, medial_side), (cx - medial_side * half, -medial_side)):
            for y_edge, dy in ((cy - 0.12 * s, 1), (plateau_top + 0.02 * s, -1)):
                if grade >= 2 or rng.random() < 0.5:
                    polygon(extra, [(x_edge, y_edge - 0.05 * s), (x_edge, y_edge + 0.05 * s),
                                    (x_edge + sign * length, y_edge + dy * 0.02 * s)], 0.9)
    if grade >= 3:  # subchondral sclerosis under the narrowed compartment
        strength = 0.25 if grade == 3 else 0.55
        ellipse(extra, (cx + medial_side * 0.15 * s, plateau_top + 0.05 * s), (0.12 * s, 0.035 * s), strength)
        ellipse(extra, (cx + medial_side * 0.15 * s, cy - 0.07 * s), (0.12 * s, 0.03 * s), strength * 0.8)
    if grade == 4:  # deformity: flattened, irregular bone ends
        for _ in range(3):
            ellipse(extra, (cx + medial_side * rng.uniform(0.05, 0.25) * s, plateau_top + rng.uniform(0, 0.04) * s),
                    (rng.uniform(0.02, 0.05) * s, rng.uniform(0.01, 0.03) * s), rng.uniform(-0.3, 0.4))
    add_layer(mu, (bones + extra) * rng.uniform(1.0, 1.4), 0.8)
    box = (cx - half - 0.08 * s, cy - 0.2 * s, 2 * half + 0.16 * s, 0.35 * s)
    return mu, [Finding(KL_GRADES[grade], "joint space", box)]


def plan_knee(count, rng):
    patients = unique_ids(rng, count, 9_000_000, 9_999_999)
    split_of = split_patients(rng, patients, {"train": 0.7, "val": 0.1, "test": 0.2})
    grades = shares(KL_SHARE, 0.06)
    jobs = []
    for patient in patients:
        for side in (("L", "R") if rng.random() < 0.5 else (str(rng.choice(["L", "R"])),)):
            if len(jobs) == count:
                return jobs
            grade = int(rng.choice(5, p=grades))
            jobs.append(Job(len(jobs), f"{split_of[patient]}/{grade}/{patient}{side}.png",
                            (("grade", grade), ("side", side)), (224, 224), (224, 224)))
    return jobs


def write_knee(root, jobs, findings, rng):
    class_folders(root, ("train", "val", "test"), [str(grade) for grade in range(len(KL_GRADES))])
    write_boxes(root, "", jobs, findings)


RECIPE = recipe("knee", stream=0, plan=plan_knee, draw=draw_knee, write=write_knee, marker=False)
