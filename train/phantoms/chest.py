"""Chest anatomy shared by the pediatric (pneumonia) and adult (chest14) PA films, and the findings both draw."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from train.phantoms.drawing import (Finding, _pt, add_layer, drawn_box, ellipse, ellipse_box, line, polygon, smooth_noise,
                                    soft)


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
    chest.heart_box = ellipse_box(center, axes, angle)
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
    return drawn_box(layer)


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
