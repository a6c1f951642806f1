"""ChestX-ray14 phantoms: adult PA chest films with any of 14 findings, each boxed (NIH layout and CSVs)."""
from __future__ import annotations

import cv2
import numpy as np

from radiograph.registry import CHEST14_FINDINGS
from train.phantoms.chest import Chest, chest_anatomy, lung_markings, opacity, patchy_consolidation
from train.phantoms.drawing import Finding, add_layer, box_of, drawn_box, ellipse, line, polygon, smooth_noise, soft, union
from train.phantoms.recipes import Job, recipe, split_patients

NIH_COUNTS = {"Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559, "Nodule": 6331, "Mass": 5782,
              "Pneumothorax": 5302, "Consolidation": 4667, "Pleural_Thickening": 3385, "Cardiomegaly": 2776,
              "Emphysema": 2516, "Edema": 2303, "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227}
NIH_IMAGES = 112_120
PREVALENCE_FLOOR = 0.04  # so rare findings (Hernia: 0.2% in NIH) still occur in small phantom sets


# Each finding is drawn by its own function `(mu, rng, chest, collapsed) -> box`, adding to the attenuation map
# `mu` in place. The order of these tables is the order findings are drawn, and so the order of the image's random
# draws: changing it changes every phantom.


def _cardiomegaly(mu, rng, chest: Chest, collapsed):  # drawn by chest_anatomy: an enlarged heart shadow
    return chest.heart_box


def _emphysema(mu, rng, chest: Chest, collapsed):  # drawn by chest_anatomy: hyperlucent, lower-reaching lungs
    x0, y0, _, _ = chest.lung_box(-1)
    x1, y1, w1, h1 = chest.lung_box(1)
    return (x0, min(y0, y1), x1 + w1 - x0, h1)


def _hernia(mu, rng, chest: Chest, collapsed):  # drawn by chest_anatomy: a retrocardiac round density
    radius = 0.2 * chest.half_width
    return box_of((chest.cx + 0.08 * chest.half_width, chest.base - 0.1 * (chest.base - chest.top)), (radius, radius))


def _pneumothorax(mu, rng, chest: Chest, collapsed):
    """Pleural line, lucent rim without markings: marks the rim in `collapsed` so no vessel is drawn there."""
    h, w = chest.h, chest.w
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
    return (x0, y0, bw, bh * 0.75)


def _effusion(mu, rng, chest: Chest, collapsed):
    """Dependent density with a meniscus, blunting the costophrenic angle; the box is the fluid as drawn."""
    h, w, lung_height = chest.h, chest.w, chest.base - chest.top
    side = int(rng.choice([-1, 1]))
    level = chest.base - rng.uniform(0.1, 0.3) * lung_height
    layer = np.zeros((h, w), np.float32)
    inner, outer = chest.cx + side * 0.15 * chest.half_width, chest.cx + side * 1.05 * chest.half_width
    meniscus = [(inner, level + 0.06 * lung_height), (chest.cx + side * 0.6 * chest.half_width, level + 0.03 * lung_height),
                (outer, level - 0.05 * lung_height), (outer, chest.base + 0.1 * lung_height), (inner, chest.base + 0.1 * lung_height)]
    polygon(layer, meniscus, 0.6)
    add_layer(mu, layer, 0.01 * w)
    xs, ys = [p[0] for p in meniscus], [p[1] for p in meniscus]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def _atelectasis(mu, rng, chest: Chest, collapsed):
    """Plate-like band at a base."""
    h, w = chest.h, chest.w
    side = int(rng.choice([-1, 1]))
    center = chest.point_in_lung(rng, side, zone=(0.65, 0.82), lateral=(0.3, 0.6))
    layer = np.zeros((h, w), np.float32)
    length = chest.half_width * rng.uniform(0.3, 0.5)
    line(layer, center - (length / 2, -0.02 * h), center + (length / 2, 0.02 * h), 0.55, 0.022 * h)
    add_layer(mu, layer, 0.004 * w)
    return (center[0] - length / 2 - 0.02 * w, center[1] - 0.04 * h, length + 0.04 * w, 0.08 * h)


def _infiltration(mu, rng, chest: Chest, collapsed):
    return patchy_consolidation(mu, rng, chest, int(rng.choice([-1, 1])), "Infiltration", "Infiltration",
                                density=rng.uniform(0.25, 0.35)).box


def _pneumonia(mu, rng, chest: Chest, collapsed):
    return patchy_consolidation(mu, rng, chest, int(rng.choice([-1, 1])), "Pneumonia", "Pneumonia",
                                density=rng.uniform(0.35, 0.5)).box


def _consolidation(mu, rng, chest: Chest, collapsed):
    """Dense, homogeneous, lobar."""
    side = int(rng.choice([-1, 1]))
    center = chest.point_in_lung(rng, side, zone=(0.3, 0.7), lateral=(0.4, 0.7))
    radii = chest.half_width * rng.uniform(0.16, 0.24) * np.array([1.0, 1.3])
    drawn = opacity(mu, rng, center, radii, 0.55, 0.01 * chest.w, lobulated=0.3)
    return union(box_of(center, radii, 1.4), drawn)  # a lobule may reach past the padding


def _mass(mu, rng, chest: Chest, collapsed):
    """Large round opacity, well defined."""
    center = chest.point_in_lung(rng, int(rng.choice([-1, 1])), zone=(0.2, 0.75))
    radius = chest.half_width * rng.uniform(0.1, 0.16)
    drawn = opacity(mu, rng, center, (radius, radius * rng.uniform(0.8, 1.0)), 0.6, 0.003 * chest.w, lobulated=0.2)
    return union(box_of(center, (radius, radius), 1.5), drawn)


def _nodule(mu, rng, chest: Chest, collapsed):
    """Small round opacity."""
    center = chest.point_in_lung(rng, int(rng.choice([-1, 1])), zone=(0.15, 0.8))
    radius = chest.half_width * rng.uniform(0.055, 0.08)
    drawn = opacity(mu, rng, center, (radius, radius), 0.75, 0.002 * chest.w)
    return union(box_of(center, (radius, radius), 2.0), drawn)


def _edema(mu, rng, chest: Chest, collapsed):
    """Bilateral perihilar haze (bat wing) with septal lines; the box holds the haze and the Kerley lines."""
    h, w, lung_height = chest.h, chest.w, chest.base - chest.top
    layer = np.zeros((h, w), np.float32)
    for side in (-1, 1):
        ellipse(layer, (chest.cx + side * 0.35 * chest.half_width, chest.top + 0.5 * lung_height),
                (0.3 * chest.half_width, 0.25 * lung_height), 0.35)
        for k in range(5):  # Kerley B lines at the lateral bases
            y = chest.base - (0.05 + 0.04 * k) * lung_height
            x = chest.cx + side * 0.95 * chest.half_width
            line(layer, (x, y), (x - side * 0.08 * chest.half_width, y), 0.3, max(1, 0.002 * w))
    add_layer(mu, layer * (1 + smooth_noise(rng, (h, w), w / 40, 0.3)), 0.02 * w)
    return (chest.cx - 0.96 * chest.half_width, chest.top + 0.2 * lung_height,
            1.92 * chest.half_width, 0.75 * lung_height)


def _fibrosis(mu, rng, chest: Chest, collapsed):
    """Reticular net in the lower, peripheral zones."""
    h, w, lung_height = chest.h, chest.w, chest.base - chest.top
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
    return union((x0, y0, bw, bh), drawn_box(layer))


def _pleural_thickening(mu, rng, chest: Chest, collapsed):
    """Band along the lateral chest wall or apex."""
    h, w = chest.h, chest.w
    side = int(rng.choice([-1, 1]))
    lung = chest.lung(side)
    layer = np.zeros((h, w), np.float32)
    cv2.polylines(layer, [np.round(lung[1:4]).astype(np.int32)], False, 0.5, max(2, int(0.012 * w)))
    add_layer(mu, layer, 0.004 * w)
    x0, y0 = lung[1:4].min(0) - 0.015 * w
    x1, y1 = lung[1:4].max(0) + 0.015 * w
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


# Findings that change the anatomy, handled before the lung markings are drawn (a pneumothorax removes them).
BEFORE_MARKINGS = (("Cardiomegaly", _cardiomegaly), ("Emphysema", _emphysema), ("Hernia", _hernia),
                   ("Pneumothorax", _pneumothorax))
# Findings drawn over the lung markings.
AFTER_MARKINGS = (("Effusion", _effusion), ("Atelectasis", _atelectasis), ("Infiltration", _infiltration),
                  ("Pneumonia", _pneumonia), ("Consolidation", _consolidation), ("Mass", _mass), ("Nodule", _nodule),
                  ("Edema", _edema), ("Fibrosis", _fibrosis), ("Pleural_Thickening", _pleural_thickening))


def _draw_findings(table, labels, mu, rng, chest: Chest, collapsed) -> list[Finding]:
    return [Finding(label, label, draw(mu, rng, chest, collapsed)) for label, draw in table if label in labels]


def draw_chest14(rng, h: int, w: int, labels: frozenset[str]):
    mu, chest = chest_anatomy(rng, h, w, pediatric=False, cardiomegaly="Cardiomegaly" in labels,
                              emphysema="Emphysema" in labels, hernia="Hernia" in labels)
    collapsed = np.zeros((h, w), np.float32)  # lung with no markings (a pneumothorax's rim)
    findings = _draw_findings(BEFORE_MARKINGS, labels, mu, rng, chest, collapsed)
    mu += lung_markings(rng, chest, amount=0.5 if "Emphysema" in labels else 1.0, exclude=collapsed)
    findings += _draw_findings(AFTER_MARKINGS, labels, mu, rng, chest, collapsed)
    return mu, findings


RENDER_SIDE = 512  # the attenuation canvas; files are written at `side` (NIH's 1024 by default)


def plan_chest14(count, rng, side: int = 1024, prevalence_floor: float = PREVALENCE_FLOOR):
    """`side`: the written films' side (a full-scale set at NIH's count is ~1 MB a file at 1024); `prevalence_floor`:
    0 keeps NIH's own label prevalences (NIH_COUNTS / NIH_IMAGES), as a set of NIH's size should."""
    if not 32 <= side <= 4096:
        raise ValueError(f"side must be 32..4096 pixels, got {side}")
    if not 0.0 <= prevalence_floor <= 1.0:
        raise ValueError(f"prevalence_floor must be 0..1, got {prevalence_floor}")
    p = {label: max(NIH_COUNTS[label] / NIH_IMAGES, prevalence_floor) for label in CHEST14_FINDINGS}
    render = min(RENDER_SIDE, side)
    jobs = []
    patient = 0
    while len(jobs) < count:
        patient += 1
        for follow_up in range(int(rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.12, 0.08]))):
            if len(jobs) == count:
                break
            labels = frozenset(label for label in CHEST14_FINDINGS if rng.random() < p[label])
            jobs.append(Job(len(jobs), f"images/{patient:08d}_{follow_up:03d}.png",
                            (("labels", labels),), (render, render), (side, side)))
    return jobs


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
    split_of = split_patients(rng, sorted(names_by_patient), {"train_val": 0.78, "test": 0.22})
    for split in ("train_val", "test"):
        names = [n for p, ns in names_by_patient.items() if split_of[p] == split for n in ns]
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    with (root / "BBox_List_2017.csv").open("w", newline="") as handle:
        handle.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        for job, boxes in zip(jobs, findings):
            for f in boxes:
                label = "Infiltrate" if f.label == "Infiltration" else f.label  # NIH's spelling in this file
                handle.write(f"{job.path.split('/')[-1]},{label},{','.join(f'{v:.6f}' for v in f.box)},,,\n")


RECIPE = recipe("chest14", stream=3, plan=plan_chest14, draw=draw_chest14, write=write_chest14,
                options=("side", "prevalence_floor"))
