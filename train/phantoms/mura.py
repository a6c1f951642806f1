"""MURA phantoms: upper-extremity studies of seven parts, normal or abnormal (MURA-v1.1 layout and CSVs)."""
from __future__ import annotations

import math

import numpy as np

from train.phantoms.drawing import (Finding, add_layer, ellipse, line, long_bone, polygon, smooth_noise, soft,
                                    with_cortex)
from train.phantoms.recipes import Job, recipe, shares, split_patients, write_boxes

# (width/height range) of real MURA films per part; max side 512.
MURA_ASPECT = {"elbow": (0.7, 1.0), "finger": (0.45, 0.7), "forearm": (0.45, 0.65), "hand": (0.7, 0.85),
               "humerus": (0.45, 0.65), "shoulder": (0.85, 1.25), "wrist": (0.65, 0.9)}
# Image share per part in MURA-v1.1 train (wrist 9752 ... humerus 1272).
MURA_SHARE = {"elbow": 4931, "finger": 5106, "forearm": 1825, "hand": 5543,
              "humerus": 1272, "shoulder": 8379, "wrist": 9752}
MURA_FINDINGS = ("fracture", "hardware", "lesion")


def _mura_anatomy(part, rng, h, w):
    """Bones of each part as (p0, p1, width) segments in pixels; returns the drawn bones and those segments."""
    u = min(h, w)
    cx = w / 2 + rng.normal(0, 0.04) * w
    segments = []
    if part in ("finger", "hand"):
        rays = [0] if part == "finger" else [-2, -1, 0, 1, 2]
        for ray in rays:
            x = cx + ray * 0.15 * w
            y = h * (0.95 if part == "finger" else 0.55)
            lengths = (0.3, 0.22, 0.16) if part == "finger" else (0.22, 0.13, 0.1, 0.08)
            width = (0.16 if part == "finger" else 0.055) * w
            tilt = ray * 0.08
            for i, length in enumerate(lengths):
                y1 = y - length * h
                segments.append(((x, y), (x + tilt * length * h, y1), width * (0.95 - 0.1 * i)))
                x, y = x + tilt * length * h, y1 - 0.015 * h
        if part == "hand":
            for i in range(8):  # carpals
                segments.append(((cx + (i % 4 - 1.5) * 0.1 * w, h * (0.68 + 0.07 * (i // 4))),) * 2 + (0.07 * w,))
    elif part in ("forearm", "wrist", "elbow"):
        top, bottom = (0.05, 0.95) if part == "forearm" else ((0.0, 0.75) if part == "wrist" else (0.45, 1.05))
        for dx, width in ((-0.13, 0.13), (0.13, 0.11)):  # radius, ulna
            segments.append(((cx + dx * w, top * h), (cx + dx * 0.8 * w, bottom * h), width * w))
        if part == "wrist":
            for i in range(8):
                segments.append(((cx + (i % 4 - 1.5) * 0.1 * w, h * (0.8 + 0.07 * (i // 4))),) * 2 + (0.08 * w,))
        if part == "elbow":
            segments.append(((cx, -0.05 * h), (cx, 0.42 * h), 0.2 * w))  # distal humerus
            segments.append(((cx - 0.15 * w, 0.42 * h), (cx + 0.15 * w, 0.42 * h), 0.14 * w))  # condyles
    elif part == "humerus":
        segments.append(((cx, 0.05 * h), (cx + rng.normal(0, 0.03) * w, 0.95 * h), 0.2 * w))
    else:  # shoulder: humeral head, proximal shaft, glenoid and scapula edge, clavicle
        segments.append(((cx + 0.05 * w, 0.45 * h), (cx + 0.12 * w, 1.1 * h), 0.2 * w))
        segments.append(((cx + 0.02 * w, 0.42 * h),) * 2 + (0.3 * u,))
        segments.append(((cx - 0.2 * w, 0.3 * h), (cx - 0.35 * w, 0.95 * h), 0.1 * w))
        segments.append(((0.0, 0.18 * h), (cx + 0.25 * w, 0.2 * h), 0.08 * w))
    bones = np.zeros((h, w), np.float32)
    for p0, p1, width in segments:
        if p0 == p1:
            ellipse(bones, p0, (width / 2, width / 2.3), 0.9, rng.uniform(0, 180))
        else:
            long_bone(bones, p0, p1, width, 1.0, rng, 1.4, 1.4)
    return bones, [s for s in segments if s[0] != s[1]]


def draw_mura(rng, h: int, w: int, part: str, abnormal: bool, finding: str, where: float, along: float):
    mu = np.zeros((h, w), np.float32)
    tissue = np.zeros_like(mu)
    polygon(tissue, [(w * 0.15, -5), (w * 0.85, -5), (w * 0.85, h + 5), (w * 0.15, h + 5)], 0.45)
    if part == "shoulder":
        ellipse(tissue, (w * 0.5, h * 0.7), (w * 0.55, h * 0.6), 0.5)
    add_layer(mu, tissue * (1 + smooth_noise(rng, mu.shape, 30, 0.08)), min(h, w) * 0.04)
    bones, segments = _mura_anatomy(part, rng, h, w)
    findings = []
    if abnormal:
        (p0, p1, width) = segments[int(where * len(segments)) % len(segments)]
        c = np.add(p0, np.subtract(p1, p0) * along)
        direction = np.subtract(p1, p0) / (np.linalg.norm(np.subtract(p1, p0)) + 1e-6)
        normal = np.array([-direction[1], direction[0]])
        width = max(width, 0.09 * min(h, w))  # findings on slender bones (phalanges) stay visible at model size
        if finding == "fracture":  # a lucent, jagged gap across the bone with soft-tissue swelling over it
            points = [c + normal * width * k + direction * rng.normal(0, 0.12) * width for k in np.linspace(-0.7, 0.7, 6)]
            gap = max(3.0, width * rng.uniform(0.12, 0.2))
            for a, b in zip(points, points[1:]):
                line(bones, a, b, 0.05, gap)
            swelling = np.zeros_like(mu)
            along, across = width * 1.5, width * 1.0  # semi-axes of the swelling, along and across the bone
            ellipse(swelling, c, (along, across), 0.4, math.degrees(math.atan2(direction[1], direction[0])))
            add_layer(mu, swelling, max(2.0, width * 0.3))
            half = np.hypot(along * direction, across * normal)  # the swelling's half extent in x and y
            findings.append(Finding(f"{part}_abnormal", finding, (c[0] - half[0], c[1] - half[1], 2 * half[0], 2 * half[1])))
        elif finding == "hardware":  # metal: a plate with screws, far denser than bone
            length = np.linalg.norm(np.subtract(p1, p0)) * rng.uniform(0.25, 0.45)
            a, b = c - direction * length / 2 + normal * width * 0.45, c + direction * length / 2 + normal * width * 0.45
            hardware = np.zeros_like(mu)
            line(hardware, a, b, 3.0, max(2, width * 0.18))
            for k in np.linspace(0.1, 0.9, 4):
                s = a + (b - a) * k
                line(hardware, s, s - normal * width * 0.9, 2.5, max(1.5, width * 0.08))
            mu += soft(hardware, 0.6)
            xs, ys = [a[0], b[0], a[0] - normal[0] * width, b[0] - normal[0] * width], [a[1], b[1], a[1] - normal[1] * width, b[1] - normal[1] * width]
            pad = width * 0.2
            findings.append(Finding(f"{part}_abnormal", finding, (min(xs) - pad, min(ys) - pad,
                                                                  max(xs) - min(xs) + 2 * pad, max(ys) - min(ys) + 2 * pad)))
        else:  # lesion: lytic focus with a sclerotic rim
            radius = max(4.0, width * rng.uniform(0.35, 0.5))
            ellipse(bones, c, (radius * 1.25, radius * 1.25), 1.25)
            ellipse(bones, c, (radius, radius * rng.uniform(0.7, 1.0)), 0.15, rng.uniform(0, 180))
            findings.append(Finding(f"{part}_abnormal", finding, (c[0] - radius * 1.5, c[1] - radius * 1.5,
                                                                  radius * 3, radius * 3)))
    add_layer(mu, with_cortex(bones, 0.01 * min(h, w)), 0.7)
    return mu, findings


def plan_mura(count, rng):
    parts = list(MURA_SHARE)
    share = shares([MURA_SHARE[p] for p in parts], 0.08)
    patients = list(range(1, count + 1))
    split_of = split_patients(rng, patients, {"train": 0.8, "valid": 0.2})
    jobs = []
    for patient in patients:
        studies_by_part: dict[str, int] = {}
        for _ in range(1 if rng.random() < 0.8 else 2):
            part = parts[int(rng.choice(len(parts), p=share))]
            studies_by_part[part] = studies_by_part.get(part, 0) + 1
            abnormal = bool(rng.random() < 0.4)
            study = f"study{studies_by_part[part]}_{'positive' if abnormal else 'negative'}"
            params = (("abnormal", abnormal), ("along", float(rng.uniform(0.3, 0.7))),
                      ("finding", str(rng.choice(MURA_FINDINGS))), ("part", part), ("where", float(rng.random())))
            for view in range(1, int(rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.5, 0.1])) + 1):
                if len(jobs) == count:
                    return jobs
                height = int(rng.uniform(380, 512))
                width = int(height * rng.uniform(*MURA_ASPECT[part]))
                path = f"MURA-v1.1/{split_of[patient]}/XR_{part.upper()}/patient{patient:05d}/{study}/image{view}.png"
                jobs.append(Job(len(jobs), path, params, (width, height), (width, height)))
    return jobs


def write_mura(root, jobs, findings, rng):
    mura_root = root / "MURA-v1.1"
    for split in ("train", "valid"):
        rows = [job.path for job in jobs if job.path.split("/")[1] == split]
        (mura_root / f"{split}_image_paths.csv").write_text("".join(f"{row}\n" for row in rows))
        studies = dict.fromkeys(row.rsplit("/", 1)[0] + "/" for row in rows)
        (mura_root / f"{split}_labeled_studies.csv").write_text(
            "".join(f"{study},{int(study.rstrip('/').endswith('_positive'))}\n" for study in studies))
    write_boxes(mura_root, "MURA-v1.1/", jobs, findings)


RECIPE = recipe("mura", stream=1, plan=plan_mura, draw=draw_mura, write=write_mura)
