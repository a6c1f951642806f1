"""Exposure and nuisance: an attenuation map becomes an 8-bit film, and its boxes follow the geometry."""
from __future__ import annotations

import cv2
import numpy as np

from train.phantoms.drawing import Finding


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
