"""Drawing primitives: canvases are float32 attenuation maps; structures add, as they do along an X-ray path."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


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


def drawn_box(layer):
    """(x, y, w, h) of a layer's non-zero pixels."""
    ys, xs = np.nonzero(layer)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


def union(a, b):
    """The smallest box holding boxes `a` and `b`."""
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    return x0, y0, max(a[0] + a[2], b[0] + b[2]) - x0, max(a[1] + a[3], b[1] + b[3]) - y0


def box_of(center, radii, pad=1.2):
    """The box of an axis-aligned ellipse with semi-axes `radii`, each scaled by `pad`."""
    rx, ry = radii[0] * pad, radii[1] * pad
    return (float(center[0] - rx), float(center[1] - ry), float(2 * rx), float(2 * ry))


def ellipse_box(center, axes, angle_degrees):
    """Bounding box (x, y, w, h) of an ellipse with semi-axes `axes` rotated by `angle_degrees`."""
    a, b = axes
    t = math.radians(angle_degrees)
    half_w, half_h = math.hypot(a * math.cos(t), b * math.sin(t)), math.hypot(a * math.sin(t), b * math.cos(t))
    return float(center[0] - half_w), float(center[1] - half_h), float(2 * half_w), float(2 * half_h)
