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
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from radiograph.registry import CHEST14_FINDINGS, KL_GRADES, MURA_PARTS, TASKS

# ============================================================================ drawing primitives
# Canvases are float32 attenuation maps; structures add, as they do along an X-ray path.


def _pt(p) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def ellipse(canvas, center, axes, value, angle=0.0):
    cv2.ellipse(canvas, _pt(center), (max(1, int(axes[0])), max(1, int(axes[1]))), angle, 0, 360, value, -1)


def polygon(canvas, points, value):
    cv2.fillPoly(canvas, [np.round(np.asarray(points)).astype(np.int32)], value)


def line(canvas, p0, p1, value, width):
    cv2.line(canvas, _pt(p0), _pt(p1), value, max(1, int(round(width))))


def soft(canvas, sigma):
    """Gaussian blur; wide blurs run on a reduced copy (same look, a fraction of the time)."""
    if sigma < 6:
        return cv2.GaussianBlur(canvas, (0, 0), max(sigma, 0.3))
    factor = int(sigma // 3)
    h, w = canvas.shape
    small = cv2.resize(canvas, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def smooth_noise(rng, shape, scale, amplitude=1.0):
    """Low-frequency noise (tissue inhomogeneity, trabecular and mottled texture)."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale)), max(2, int(w / scale)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * amplitude


def add_layer(mu, layer, sigma):
    mu += soft(layer, sigma)


def with_cortex(bones, width):
    """Brighten bone margins: the X-ray path through a cortical shell is longest at its edges."""
    rim = np.clip(bones - soft(bones, width), 0, None)
    return bones + 1.5 * rim


def long_bone(canvas, p0, p1, width, density, rng, end0=1.5, end1=1.5, medulla=0.5):
    """A tubular bone seen in projection: bright cortex, darker medulla, wider ends (epiphyses)."""
    bone = np.zeros_like(canvas)
    line(bone, p0, p1, density, width)
    for end, scale in ((p0, end0), (p1, end1)):
        if scale > 0:
            ellipse(bone, end, (width * scale / 2, width * scale / 2.6), density * 0.9,
                    math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0])))
    direction = np.subtract(p1, p0)
    inner0, inner1 = np.add(p0, direction * 0.18), np.subtract(p1, direction * 0.18)
    line(bone, inner0, inner1, density * 0.55, width * medulla)  # overwrite: medulla is less dense
    bone *= 1 + smooth_noise(rng, bone.shape, max(3, width / 3), 0.12)
    np.maximum(canvas, bone, out=canvas)


@dataclass
class Finding:
    label: str  # one of the task's labels (the class the box is evidence for)
    finding: str  # what was drawn
    box: tuple[float, float, float, float]  # x, y, w, h in canvas pixels


# ============================================================================ exposure and nuisance

def _rotate_box(box, matrix):
    x, y, w, h = box
    corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], np.float32) @ matrix.T
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _on_film(findings, field):
    """Each box cut to the exposed field (x0, y0, x1, y1): the film's part that shows anything. A finding drawn
    wholly off it (off the canvas, or under a collimator shutter) has no box: there is nothing there to point at."""
    kept = []
    for f in findings:
        x, y, w, h = f.box
        x0, y0, x1, y1 = max(x, field[0]), max(y, field[1]), min(x + w, field[2]), min(y + h, field[3])
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            kept.append(Finding(f.label, f.finding, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
    return kept


def expose(mu, findings, rng, out_size, max_rotation=15.0, marker=True, collimate=0.5):
    """Turn an attenuation map into an 8-bit radiograph with per-image nuisance; boxes follow the geometry."""
    h, w = mu.shape
    angle = rng.uniform(-max_rotation, max_rotation)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, rng.uniform(0.95, 1.05))
    matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
    mu = cv2.warpAffine(mu, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    findings = [Finding(f.label, f.finding, _rotate_box(f.box, matrix)) for f in findings]
    field = (0, 0, w, h)

    signal = 1.0 - np.exp(-mu * rng.uniform(0.8, 1.2))
    signal = np.power(np.clip(signal, 0, 1), rng.uniform(0.75, 1.35))
    low, high = np.percentile(signal[::4, ::4], (rng.uniform(0.5, 8), rng.uniform(97, 99.9)))  # auto-window
    image = np.clip((signal - low) / max(high - low, 1e-3), 0, 1.2) ** rng.uniform(0.7, 1.4)  # display curve
    image = (image * rng.uniform(0.6, 1.0) + rng.uniform(-0.05, 0.15)).astype(np.float32)

    if rng.random() < collimate:  # collimator shutters: unexposed film edges
        edge = np.ones_like(image, bool)
        x0, x1 = (rng.uniform(0, 0.08, 2) * w).astype(int)
        y0, y1 = (rng.uniform(0, 0.08, 2) * h).astype(int)
        edge[y0:h - y1, x0:w - x1] = False
        image[edge] = rng.choice([rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.08)])
        field = (x0, y0, w - x1, h - y1)
    findings = _on_film(findings, field)
    out_w, out_h = out_size
    scale = out_w / w
    sigma = rng.uniform(0.0, 1.2) / scale  # blur and detector noise at the canvas resolution
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * rng.uniform(0.005, 0.03) * np.sqrt(np.clip(image, 0.05, 1.0))
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if (out_w, out_h) != (w, h):
        image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = out_w / w, out_h / h
        findings = [Finding(f.label, f.finding, (f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy))
                    for f in findings]
    if marker:
        _burn_marker(image, rng)
    return image, findings


def _burn_marker(image, rng):
    """A burnt-in side marker ("L" or "R") in a corner; chosen independently of any label."""
    h, w = image.shape
    scale = rng.uniform(0.6, 1.6) * min(h, w) / 400
    text = str(rng.choice(["L", "R", "L", "R", "PA", "AP"]))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(2 * scale)))
    margin = int(0.04 * min(h, w))
    x = margin if rng.random() < 0.5 else max(0, w - tw - margin)
    y = th + margin if rng.random() < 0.5 else h - margin
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, int(rng.integers(200, 256)),
                max(1, int(2 * scale)), cv2.LINE_AA)


# ============================================================================ knee (AP, KL grade)

# Joint-space width (fraction of normal) per KL grade: adjacent grades overlap, as graders disagree.
KNEE_JSW = ((1.0, 0.08), (0.88, 0.09), (0.70, 0.10), (0.45, 0.10), (0.18, 0.08))


def knee(rng, h: int, w: int, grade: int, side: str):
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


# ============================================================================ MURA (7 parts)

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


def mura(rng, h: int, w: int, part: str, abnormal: bool, finding: str, where: float, along: float):
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


# ============================================================================ chest (pediatric and adult PA)

@dataclass
class Chest:
    """Geometry of one chest film in canvas pixels; findings are placed relative to it."""

    h: int
    w: int
    cx: float
    top: float  # lung apices
    base: float  # costophrenic angles
    half_width: float  # thorax half width at the bases
    heart_width: float
    right_dome: float  # hemidiaphragm tops (patient's right = image left)
    left_dome: float
    heart_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h of the drawn heart shadow

    def lung(self, side: int):
        """Polygon of one lung (side -1 = image left = patient's right)."""
        cx, w2 = self.cx, self.half_width
        inner = cx + side * 0.1 * w2
        outer = cx + side * w2
        dome = self.right_dome if side < 0 else self.left_dome
        return np.array([(inner, self.top + 0.05 * (self.base - self.top)), (cx + side * 0.55 * w2, self.top),
                         (cx + side * 0.85 * w2, self.top + 0.2 * (self.base - self.top)), (outer, self.base),
                         (cx + side * 0.6 * w2, dome), (inner, dome - 0.05 * (self.base - self.top))])

    def lung_box(self, side: int):
        points = self.lung(side)
        x0, y0 = points.min(0)
        x1, y1 = points.max(0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)

    def point_in_lung(self, rng, side: int, zone=(0.2, 0.9), lateral=(0.3, 0.85)):
        y = self.top + rng.uniform(*zone) * (self.base - self.top)
        x = self.cx + side * rng.uniform(*lateral) * self.half_width
        return np.array([x, y])


def _ellipse_box(center, axes, angle_degrees):
    """Bounding box (x, y, w, h) of an ellipse with semi-axes `axes` rotated by `angle_degrees`."""
    a, b = axes
    t = math.radians(angle_degrees)
    half_w, half_h = math.hypot(a * math.cos(t), b * math.sin(t)), math.hypot(a * math.sin(t), b * math.cos(t))
    return float(center[0] - half_w), float(center[1] - half_h), float(2 * half_w), float(2 * half_h)


def chest_anatomy(rng, h, w, pediatric, cardiomegaly=False, emphysema=False, hernia=False):
    """Soft tissue, lungs (air), mediastinum and heart, diaphragm, ribs, clavicles, spine, lung markings."""
    cx = w / 2 + rng.normal(0, 0.02) * w
    half_width = w * rng.uniform(0.3, 0.36) * (0.92 if pediatric else 1.0)
    top = h * rng.uniform(0.1, 0.16)
    base = h * rng.uniform(0.68, 0.76) * (1.06 if emphysema else 1.0)
    ctr = rng.uniform(0.56, 0.68) if cardiomegaly else rng.uniform(0.38, 0.48) + (0.05 if pediatric else 0)
    chest = Chest(h, w, cx, top, min(base, 0.86 * h), half_width, ctr * 2 * half_width,
                  base - rng.uniform(0.07, 0.11) * h * (0.5 if emphysema else 1),
                  base - rng.uniform(0.05, 0.09) * h * (0.5 if emphysema else 1))
    mu = np.zeros((h, w), np.float32)
    body = np.zeros_like(mu)
    ellipse(body, (cx, h * 0.55), (half_width * 1.35, h * 0.6), 1.0)
    ellipse(body, (cx - half_width * 1.35, h * 0.1), (half_width * 0.35, h * 0.15), 0.8)  # shoulders
    ellipse(body, (cx + half_width * 1.35, h * 0.1), (half_width * 0.35, h * 0.15), 0.8)
    add_layer(mu, body * (1 + smooth_noise(rng, mu.shape, 40, 0.05)), w * 0.03)
    air = np.zeros_like(mu)
    for side in (-1, 1):
        polygon(air, chest.lung(side), 0.75 * (1.25 if emphysema else 1.0))
    mu -= soft(air, w * 0.008)
    mediastinum = np.zeros_like(mu)
    polygon(mediastinum, [(cx - 0.1 * half_width, top - 0.1 * h), (cx + 0.1 * half_width, top - 0.1 * h),
                          (cx + 0.14 * half_width, chest.base - 0.35 * (base - top)),
                          (cx - 0.14 * half_width, chest.base - 0.35 * (base - top))], 0.5)
    heart_right = chest.heart_width * rng.uniform(0.3, 0.4)  # most of the heart lies to the patient's left
    center = (cx + (chest.heart_width / 2 - heart_right), chest.base - 0.2 * (base - top))
    axes, angle = (chest.heart_width / 2, 0.22 * (base - top)), rng.uniform(-15, 5)
    ellipse(mediastinum, center, axes, 0.75, angle)
    chest.heart_box = _ellipse_box(center, axes, angle)
    for side, dome in ((-1, chest.right_dome), (1, chest.left_dome)):  # hemidiaphragms and abdomen
        ellipse(mediastinum, (cx + side * 0.5 * half_width, dome + 0.22 * h), (0.62 * half_width, 0.22 * h), 0.45)
    polygon(mediastinum, [(cx - 1.2 * half_width, chest.base + 0.12 * h), (cx + 1.2 * half_width, chest.base + 0.12 * h),
                          (cx + 1.2 * half_width, h * 1.1), (cx - 1.2 * half_width, h * 1.1)], 0.45)
    if hernia:  # hiatal hernia: retrocardiac round density (returned as a finding by the caller)
        ellipse(mediastinum, (cx + 0.08 * half_width, chest.base - 0.1 * (base - top)),
                (0.18 * half_width, 0.13 * half_width), 0.35)
    add_layer(mu, mediastinum, w * 0.01)
    bones = np.zeros_like(mu)
    for i in range(int(h * 0.95 / (0.045 * h))):  # vertebral bodies, faint behind the mediastinum
        ellipse(bones, (cx, (i + 0.5) * 0.045 * h), (0.04 * w, 0.018 * h), 0.15)
    rib_height = rng.uniform(0.05, 0.08) * h
    for i in range(10):  # posterior ribs: arcs from the spine curving down to the lateral chest wall
        y = top + (i - 0.3) * (base - top) / 9
        for side, start in ((-1, 180), (1, 270)):
            cv2.ellipse(bones, _pt((cx, y + rib_height)), (int(1.02 * half_width), int(rib_height)), 0,
                        start, start + 90, 0.3, max(1, int(0.012 * h)))
    for side in (-1, 1):  # clavicles
        line(bones, (cx + side * 0.08 * half_width, top + 0.02 * h), (cx + side * 1.1 * half_width, top - 0.06 * h),
             0.5, 0.018 * h)
    add_layer(mu, bones, w * 0.003)
    return mu, chest


def lung_markings(rng, chest: Chest, amount=1.0, exclude=None):
    """Vessels branching from the hila; `exclude` (a mask) removes them where the lung has collapsed."""
    markings = np.zeros((chest.h, chest.w), np.float32)
    for side in (-1, 1):
        hilum = np.array([chest.cx + side * 0.2 * chest.half_width, chest.top + 0.45 * (chest.base - chest.top)])
        for _ in range(int(10 * amount)):
            point, width = hilum.copy(), 0.008 * chest.w
            angle = math.radians(rng.uniform(-80, 80)) + (0 if side > 0 else math.pi)
            for _ in range(5):
                step = np.array([math.cos(angle), math.sin(angle)]) * chest.half_width * 0.14
                line(markings, point, point + step, 0.12, width)
                point, width, angle = point + step, width * 0.72, angle + rng.normal(0, 0.3)
    lungs = np.zeros_like(markings)
    for side in (-1, 1):
        polygon(lungs, chest.lung(side), 1.0)
    markings *= lungs
    if exclude is not None:
        markings *= 1 - exclude
    return soft(markings, chest.w * 0.002)


def opacity(mu, rng, center, radii, density, softness, lobulated=0.0):
    """A round opacity, with lobules around it; returns the bounding box of what was drawn."""
    layer = np.zeros_like(mu)
    ellipse(layer, center, radii, density, rng.uniform(0, 180))
    for _ in range(int(lobulated * 6)):
        offset = rng.normal(0, 0.5, 2) * radii
        ellipse(layer, center + offset, np.multiply(radii, rng.uniform(0.4, 0.8)), density, rng.uniform(0, 180))
    add_layer(mu, layer, softness)
    return _drawn_box(layer)


def _drawn_box(layer):
    """(x, y, w, h) of a layer's non-zero pixels."""
    ys, xs = np.nonzero(layer)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


def _union(a, b):
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    return x0, y0, max(a[0] + a[2], b[0] + b[2]) - x0, max(a[1] + a[3], b[1] + b[3]) - y0


def _box_of(center, radii, pad=1.2):
    rx, ry = radii[0] * pad, radii[1] * pad
    return (float(center[0] - rx), float(center[1] - ry), float(2 * rx), float(2 * ry))


def patchy_consolidation(mu, rng, chest: Chest, side: int, label: str, finding: str, density=0.35,
                         extent=(0.12, 0.22), zone=(0.35, 0.8)):
    """Clusters of ill-defined blobs in one lung zone (pneumonia, infiltration); extent: fraction of the half chest,
    zone: the vertical band of the lung (apex 0, base 1) that holds the cluster's centre."""
    center = chest.point_in_lung(rng, side, zone=zone, lateral=(0.35, 0.75))
    spread = chest.half_width * rng.uniform(*extent)
    layer = np.zeros_like(mu)
    points = center + rng.normal(0, 1, (int(rng.integers(5, 10)), 2)) * spread * 0.5
    for p in points:
        ellipse(layer, p, np.full(2, spread * rng.uniform(0.25, 0.5)), density * rng.uniform(0.6, 1.0),
                rng.uniform(0, 180))
    layer *= 1 + smooth_noise(rng, mu.shape, chest.w / 60, 0.35)
    lungs = np.zeros_like(layer)
    polygon(lungs, chest.lung(side), 1.0)
    add_layer(mu, layer * soft(lungs, 2), chest.w * 0.012)
    x0, y0 = points.min(0) - spread * 0.5
    x1, y1 = points.max(0) + spread * 0.5
    return Finding(label, finding, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)))


def pneumonia(rng, h: int, w: int, positive: bool):
    mu, chest = chest_anatomy(rng, h, w, pediatric=True)
    mu += lung_markings(rng, chest, amount=0.8)
    findings = []
    if positive:
        sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.5 else [-1, 1]
        for side in sides:  # pediatric pneumonia: dense lobar or bilateral patchy consolidation, within the lung
            findings.append(patchy_consolidation(mu, rng, chest, side, "PNEUMONIA", "consolidation",
                                                 density=rng.uniform(0.8, 1.1), extent=(0.2, 0.3), zone=(0.3, 0.7)))
    return mu, findings


def chest14(rng, h: int, w: int, labels: frozenset[str]):
    mu, chest = chest_anatomy(rng, h, w, pediatric=False, cardiomegaly="Cardiomegaly" in labels,
                              emphysema="Emphysema" in labels, hernia="Hernia" in labels)
    findings: list[Finding] = []
    collapsed = np.zeros((h, w), np.float32)
    lung_height = chest.base - chest.top

    def add(label, box):
        findings.append(Finding(label, label, box))

    if "Cardiomegaly" in labels:
        add("Cardiomegaly", chest.heart_box)
    if "Emphysema" in labels:
        x0, y0, _, _ = chest.lung_box(-1)
        x1, y1, w1, h1 = chest.lung_box(1)
        add("Emphysema", (x0, min(y0, y1), x1 + w1 - x0, h1))
    if "Hernia" in labels:
        radius = 0.2 * chest.half_width
        add("Hernia", _box_of((chest.cx + 0.08 * chest.half_width, chest.base - 0.1 * lung_height), (radius, radius)))
    if "Pneumothorax" in labels:  # pleural line, lucent rim without markings
        side = int(rng.choice([-1, 1]))
        lung = chest.lung(side)
        shrink = rng.uniform(0.12, 0.25)
        centroid = lung.mean(0)
        collapsed_lung = centroid + (lung - centroid) * (1 - shrink)
        rim = np.zeros((h, w), np.float32)
        polygon(rim, lung, 1.0)
        polygon(rim, collapsed_lung, 0.0)
        collapsed += rim
        mu -= soft(rim, 1.5) * 0.3
        pleura = np.zeros((h, w), np.float32)
        cv2.polylines(pleura, [np.round(collapsed_lung[1:5]).astype(np.int32)], False, 0.4, max(2, int(0.006 * w)))
        add_layer(mu, pleura, 0.6)
        x0, y0, bw, bh = chest.lung_box(side)
        add("Pneumothorax", (x0, y0, bw, bh * 0.75))
    mu += lung_markings(rng, chest, amount=0.5 if "Emphysema" in labels else 1.0, exclude=collapsed)
    if "Effusion" in labels:  # dependent density with a meniscus, blunting the costophrenic angle
        side = int(rng.choice([-1, 1]))
        level = chest.base - rng.uniform(0.1, 0.3) * lung_height
        layer = np.zeros((h, w), np.float32)
        inner, outer = chest.cx + side * 0.15 * chest.half_width, chest.cx + side * 1.05 * chest.half_width
        meniscus = [(inner, level + 0.06 * lung_height), (chest.cx + side * 0.6 * chest.half_width, level + 0.03 * lung_height),
                    (outer, level - 0.05 * lung_height), (outer, chest.base + 0.1 * lung_height), (inner, chest.base + 0.1 * lung_height)]
        polygon(layer, meniscus, 0.6)
        add_layer(mu, layer, 0.01 * w)
        xs, ys = [p[0] for p in meniscus], [p[1] for p in meniscus]
        add("Effusion", (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)))  # the fluid as drawn
    if "Atelectasis" in labels:  # plate-like band at a base
        side = int(rng.choice([-1, 1]))
        center = chest.point_in_lung(rng, side, zone=(0.65, 0.82), lateral=(0.3, 0.6))
        layer = np.zeros((h, w), np.float32)
        length = chest.half_width * rng.uniform(0.3, 0.5)
        line(layer, center - (length / 2, -0.02 * h), center + (length / 2, 0.02 * h), 0.55, 0.022 * h)
        add_layer(mu, layer, 0.004 * w)
        add("Atelectasis", (center[0] - length / 2 - 0.02 * w, center[1] - 0.04 * h, length + 0.04 * w, 0.08 * h))
    if "Infiltration" in labels:
        findings.append(patchy_consolidation(mu, rng, chest, int(rng.choice([-1, 1])), "Infiltration", "Infiltration",
                                             density=rng.uniform(0.25, 0.35)))
    if "Pneumonia" in labels:
        findings.append(patchy_consolidation(mu, rng, chest, int(rng.choice([-1, 1])), "Pneumonia", "Pneumonia",
                                             density=rng.uniform(0.35, 0.5)))
    if "Consolidation" in labels:  # dense, homogeneous, lobar
        side = int(rng.choice([-1, 1]))
        center = chest.point_in_lung(rng, side, zone=(0.3, 0.7), lateral=(0.4, 0.7))
        radii = chest.half_width * rng.uniform(0.16, 0.24) * np.array([1.0, 1.3])
        drawn = opacity(mu, rng, center, radii, 0.55, 0.01 * w, lobulated=0.3)
        add("Consolidation", _union(_box_of(center, radii, 1.4), drawn))  # a lobule may reach past the padding
    if "Mass" in labels:  # large round opacity, well defined
        center = chest.point_in_lung(rng, int(rng.choice([-1, 1])), zone=(0.2, 0.75))
        radius = chest.half_width * rng.uniform(0.1, 0.16)
        drawn = opacity(mu, rng, center, (radius, radius * rng.uniform(0.8, 1.0)), 0.6, 0.003 * w, lobulated=0.2)
        add("Mass", _union(_box_of(center, (radius, radius), 1.5), drawn))
    if "Nodule" in labels:  # small round opacity
        center = chest.point_in_lung(rng, int(rng.choice([-1, 1])), zone=(0.15, 0.8))
        radius = chest.half_width * rng.uniform(0.055, 0.08)
        drawn = opacity(mu, rng, center, (radius, radius), 0.75, 0.002 * w)
        add("Nodule", _union(_box_of(center, (radius, radius), 2.0), drawn))
    if "Edema" in labels:  # bilateral perihilar haze (bat wing) with septal lines
        layer = np.zeros((h, w), np.float32)
        for side in (-1, 1):
            ellipse(layer, (chest.cx + side * 0.35 * chest.half_width, chest.top + 0.5 * lung_height),
                    (0.3 * chest.half_width, 0.25 * lung_height), 0.35)
            for k in range(5):  # Kerley B lines at the lateral bases
                y = chest.base - (0.05 + 0.04 * k) * lung_height
                x = chest.cx + side * 0.95 * chest.half_width
                line(layer, (x, y), (x - side * 0.08 * chest.half_width, y), 0.3, max(1, 0.002 * w))
        add_layer(mu, layer * (1 + smooth_noise(rng, (h, w), w / 40, 0.3)), 0.02 * w)
        add("Edema", (chest.cx - 0.96 * chest.half_width, chest.top + 0.2 * lung_height,  # haze and Kerley lines
                      1.92 * chest.half_width, 0.75 * lung_height))
    if "Fibrosis" in labels:  # reticular net in the lower, peripheral zones
        side = int(rng.choice([-1, 1]))
        x0 = chest.cx + side * (0.45 if side > 0 else 0.95) * chest.half_width
        y0 = chest.top + 0.5 * lung_height
        bw, bh = 0.5 * chest.half_width, 0.4 * lung_height
        layer = np.zeros((h, w), np.float32)
        for _ in range(18):
            a = (x0 + rng.uniform(0, bw), y0 + rng.uniform(0, bh))
            line(layer, a, (a[0] + rng.normal(0, 0.05) * w, a[1] + rng.normal(0, 0.05) * h), 0.35, max(2, 0.004 * w))
        layer[:, :max(0, int(x0))] = 0  # keep the net inside its zone, sideways; strands may run past its ends
        layer[:, int(x0 + bw):] = 0
        add_layer(mu, layer, 0.002 * w)
        add("Fibrosis", _union((x0, y0, bw, bh), _drawn_box(layer)))
    if "Pleural_Thickening" in labels:  # band along the lateral chest wall or apex
        side = int(rng.choice([-1, 1]))
        lung = chest.lung(side)
        layer = np.zeros((h, w), np.float32)
        cv2.polylines(layer, [np.round(lung[1:4]).astype(np.int32)], False, 0.5, max(2, int(0.012 * w)))
        add_layer(mu, layer, 0.004 * w)
        x0, y0 = lung[1:4].min(0) - 0.015 * w
        x1, y1 = lung[1:4].max(0) + 0.015 * w
        add("Pleural_Thickening", (float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return mu, findings


# ============================================================================ dataset layouts

RENDERERS = {"knee": knee, "mura": mura, "pneumonia": pneumonia, "chest14": chest14}
KL_SHARE = (2286, 1046, 1516, 757, 173)  # Chen 2018 train images per grade
KERMANY_PNEUMONIA_SHARE = 4273 / (4273 + 1583)
NIH_COUNTS = {"Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559, "Nodule": 6331, "Mass": 5782,
              "Pneumothorax": 5302, "Consolidation": 4667, "Pleural_Thickening": 3385, "Cardiomegaly": 2776,
              "Emphysema": 2516, "Edema": 2303, "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227}
NIH_IMAGES = 112_120
PREVALENCE_FLOOR = 0.04
PROVENANCE_FILE = "PHANTOM.json"  # marks a folder as synthetic; training copies it into the model card  # so rare findings (Hernia: 0.2% in NIH) still occur in small phantom sets


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes, what it shows, its model-space and file sizes."""

    index: int
    path: str  # relative to the task folder
    params: tuple  # sorted (name, value) pairs for the renderer
    render: tuple[int, int]  # (width, height) of the attenuation canvas
    size: tuple[int, int]  # (width, height) written


def _shares(counts, floor):
    p = np.asarray(counts, float) / np.sum(counts)
    p = np.maximum(p, floor)
    return p / p.sum()


def _split_patients(rng, patients, fractions: dict[str, float]):
    order = rng.permutation(len(patients))
    bounds = np.cumsum([0] + [round(f * len(patients)) for f in fractions.values()])
    bounds[-1] = len(patients)
    return {patients[i]: name for (name, lo, hi) in zip(fractions, bounds, bounds[1:]) for i in order[lo:hi]}


def _unique_ids(rng, count, low, high):
    return [int(v) for v in rng.choice(np.arange(low, high), size=count, replace=False)]


def plan_knee(count, rng):
    patients = _unique_ids(rng, count, 9_000_000, 9_999_999)
    split_of = _split_patients(rng, patients, {"train": 0.7, "val": 0.1, "test": 0.2})
    grades = _shares(KL_SHARE, 0.06)
    jobs = []
    for patient in patients:
        for side in (("L", "R") if rng.random() < 0.5 else (str(rng.choice(["L", "R"])),)):
            if len(jobs) == count:
                return jobs
            grade = int(rng.choice(5, p=grades))
            jobs.append(Job(len(jobs), f"{split_of[patient]}/{grade}/{patient}{side}.png",
                            (("grade", grade), ("side", side)), (224, 224), (224, 224)))
    return jobs


def plan_mura(count, rng):
    parts = list(MURA_SHARE)
    share = _shares([MURA_SHARE[p] for p in parts], 0.08)
    patients = list(range(1, count + 1))
    split_of = _split_patients(rng, patients, {"train": 0.8, "valid": 0.2})
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


def plan_pneumonia(count, rng):
    patients = _unique_ids(rng, count, 1, max(10_000, 4 * count))
    split_of = _split_patients(rng, patients, {"train": 0.87, "val": 0.02, "test": 0.11})
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


def plan_chest14(count, rng):
    p = {label: max(NIH_COUNTS[label] / NIH_IMAGES, PREVALENCE_FLOOR) for label in CHEST14_FINDINGS}
    jobs = []
    patient = 0
    while len(jobs) < count:
        patient += 1
        for follow_up in range(int(rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.12, 0.08]))):
            if len(jobs) == count:
                break
            labels = frozenset(label for label in CHEST14_FINDINGS if rng.random() < p[label])
            jobs.append(Job(len(jobs), f"images/{patient:08d}_{follow_up:03d}.png",
                            (("labels", labels),), (512, 512), (1024, 1024)))
    return jobs


PLANS = {"knee": plan_knee, "mura": plan_mura, "pneumonia": plan_pneumonia, "chest14": plan_chest14}


def render(task: str, job: Job, seed: int) -> tuple[np.ndarray, list[Finding]]:
    """The image and its boxes (in written pixels); depends only on (task, job, seed)."""
    rng = np.random.default_rng([seed, list(TASKS).index(task), job.index])
    width, height = job.render
    mu, findings = RENDERERS[task](rng, height, width, **dict(job.params))
    return expose(mu, findings, rng, job.size, marker=task != "knee")


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


def generate(task: str, out: Path, count: int, seed: int = 0, workers: int | None = None) -> Path:
    """Write `count` phantom images of `task` under out/<task> in the real layout; returns that folder."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    root = Path(out) / task
    jobs = PLANS[task](count, np.random.default_rng([seed, list(TASKS).index(task), 10**9]))
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 8:
        # spawn, not fork: a caller with threads (a running app, TensorFlow, ONNX Runtime) can deadlock forked children
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            findings = list(pool.map(_render_and_write, [task] * len(jobs), jobs, [seed] * len(jobs),
                                     [str(root)] * len(jobs), chunksize=8))
    else:
        findings = [_render_and_write(task, job, seed, str(root)) for job in jobs]
    WRITERS[task](root, jobs, findings, np.random.default_rng([seed, 99]))
    (root / PROVENANCE_FILE).write_text(json.dumps({
        "generator": "train.phantoms", "task": task, "count": count, "seed": seed,
        "command": f"python -m train.phantoms {task} --out {out} --count {count} --seed {seed}"}, indent=2))
    return root


def provenance(data: Path, root: Path) -> dict:
    """Where the images came from: a phantom set (its generator record) or a real dataset folder."""
    for folder in (data, *data.parents[:2], root):
        record = folder / PROVENANCE_FILE
        if record.is_file():
            return {"kind": "synthetic phantoms", **json.loads(record.read_text())}
    return {"kind": "real dataset", "folder": str(data.resolve())}


def _write_boxes(folder: Path, prefix: str, jobs, findings):
    with (folder / "boxes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "finding", "x", "y", "w", "h"))
        for job, boxes in zip(jobs, findings):
            for f in boxes:
                writer.writerow((job.path.removeprefix(prefix), f.label, f.finding, *(f"{v:.1f}" for v in f.box)))


def _class_folders(root: Path, splits, classes):
    """The real layouts have every class folder in every split, even where a small phantom set has no image."""
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)


def write_knee(root, jobs, findings, rng):
    _class_folders(root, ("train", "val", "test"), [str(grade) for grade in range(len(KL_GRADES))])
    _write_boxes(root, "", jobs, findings)


def write_pneumonia(root, jobs, findings, rng):
    _class_folders(root / "chest_xray", ("train", "val", "test"), TASKS["pneumonia"].labels)
    _write_boxes(root / "chest_xray", "chest_xray/", jobs, findings)


def write_mura(root, jobs, findings, rng):
    mura_root = root / "MURA-v1.1"
    for split in ("train", "valid"):
        rows = [job.path for job in jobs if job.path.split("/")[1] == split]
        (mura_root / f"{split}_image_paths.csv").write_text("".join(f"{row}\n" for row in rows))
        studies = dict.fromkeys(row.rsplit("/", 1)[0] + "/" for row in rows)
        (mura_root / f"{split}_labeled_studies.csv").write_text(
            "".join(f"{study},{int(study.rstrip('/').endswith('_positive'))}\n" for study in studies))
    _write_boxes(mura_root, "MURA-v1.1/", jobs, findings)


def write_chest14(root, jobs, findings, rng):
    rows, patients = [], {}
    for job in jobs:
        name = job.path.split("/")[-1]
        patient = int(name.split("_")[0])
        age, gender = patients.setdefault(patient, (int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))))
        labels = [label for label in CHEST14_FINDINGS if label in dict(job.params)["labels"]]
        width, height = int(rng.integers(2000, 3000)), int(rng.integers(2000, 3000))
        rows.append(f"{name},{'|'.join(labels) or 'No Finding'},{int(name[9:12])},{patient},{age},{gender},"
                    f"{rng.choice(['PA', 'AP'])},{width},{height},0.143,0.143,\n")
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n" + "".join(rows))
    names_by_patient: dict[int, list[str]] = {}
    for job in jobs:
        name = job.path.split("/")[-1]
        names_by_patient.setdefault(int(name.split("_")[0]), []).append(name)
    split_of = _split_patients(rng, sorted(names_by_patient), {"train_val": 0.78, "test": 0.22})
    for split in ("train_val", "test"):
        names = [n for p, ns in names_by_patient.items() if split_of[p] == split for n in ns]
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    with (root / "BBox_List_2017.csv").open("w", newline="") as handle:
        handle.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        for job, boxes in zip(jobs, findings):
            for f in boxes:
                label = "Infiltrate" if f.label == "Infiltration" else f.label  # NIH's spelling in this file
                handle.write(f"{job.path.split('/')[-1]},{label},{','.join(f'{v:.6f}' for v in f.box)},,,\n")


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, **tags) -> bytes:
    """A minimal computed-radiography DICOM file (explicit VR little endian) holding `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    ds.Modality = "CR"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


WRITERS = {"knee": write_knee, "mura": write_mura, "pneumonia": write_pneumonia, "chest14": write_chest14}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.phantoms", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=[*TASKS, "all"])
    parser.add_argument("--out", type=Path, required=True, help="folder; each task goes to OUT/<task>")
    parser.add_argument("--count", type=int, default=2000, help="images per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    for task in TASKS if args.task == "all" else [args.task]:
        start = time.perf_counter()
        root = generate(task, args.out, args.count, args.seed, args.workers)
        print(f"{task}: {args.count} images in {time.perf_counter() - start:.1f} s -> {root}")
        print(f"  next: python -m train.datasets {task} --data {root}")


if __name__ == "__main__":
    main()
