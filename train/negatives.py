"""Generated images that no task takes: non-radiographs and radiographs of other anatomies (the router's "none").

    python -m train.negatives --out /work/data/negatives --count 600 --seed 0 --families train
    python -m train.negatives --out /work/data/negatives-eval --count 300 --seed 2027 --families eval

Writes DIR/<family>/<family>_<index>.png (some .jpg) and DIR/NEGATIVES.json (generator, command, seed, count per
family, families). Each image depends only on (seed, family, index), so a set is reproducible. Sizes run from 200
to 1200 pixels a side, at varied aspect ratios. Nothing is downloaded.

The families are split in two, and the split is the point: the router (train/router.py) trains on the TRAINING
families only, and its "none" figures are measured on the EVALUATION families, which it never saw, so they say
how it treats kinds of image it was not taught about.

  training   colour_scenes   coloured shapes, gradients, sky-and-ground layouts
             documents       lines of text (cv2.putText, Hershey fonts of varied size) on white or paper
             uniform_noise   uniform random pixels, grey or colour, fine or blocky
             other_films     radiograph-like phantoms of anatomies no task takes: pelvis AP, lateral chest,
                             lateral foot and ankle (train.phantoms.drawing + film.expose)
  evaluation screenshots     UI-like: title bars, panels, buttons, text on coloured bars
             textures        fractal noise, wood grain, woven fabric, gravel; grey or colour
             gaussian_noise  Gaussian noise around a random mean, sometimes slightly blurred
             salt_pepper     salt-and-pepper noise on a flat or graded background
             unseen_films    radiograph-like phantoms of yet other anatomies: lateral skull, lateral spine,
                             abdomen AP
"""
from __future__ import annotations

import argparse
import json
import math
import zlib
from pathlib import Path

import cv2
import numpy as np

from train.phantoms.drawing import add_layer, ellipse, line, long_bone, polygon, smooth_noise, with_cortex
from train.phantoms.film import expose

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
WORDS = ("the", "report", "patient", "invoice", "total", "settings", "file", "open", "save", "data", "model",
         "page", "section", "figure", "value", "result", "summary", "account", "order", "date", "name", "12", "2024")
PROVENANCE = "NEGATIVES.json"


def _size(rng) -> tuple[int, int]:
    """(height, width): 200-1200 pixels a side, aspect ratio 1:3 to 3:1 at most."""
    while True:
        h, w = (int(v) for v in rng.integers(200, 1201, 2))
        if 1 / 3 <= h / w <= 3:
            return h, w


def _colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _text(rng, words: int) -> str:
    return " ".join(str(rng.choice(WORDS)) for _ in range(words))


# ----------------------------------------------------------------------------- training families

def colour_scenes(rng, h, w):
    image = np.empty((h, w, 3), np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    image[:] = top * (1 - t) + bottom * t  # a vertical gradient
    if rng.random() < 0.5:  # sky and ground
        horizon = int(h * rng.uniform(0.3, 0.7))
        image[horizon:] = np.array(_colour(rng), np.float32) * (0.7 + 0.3 * t[horizon:] / t.max())
    for _ in range(int(rng.integers(0, 25))):
        c, s = (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(5, max(6, min(h, w) // 3)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(image, c, s, _colour(rng), -1)
        elif kind == 1:
            cv2.rectangle(image, c, (c[0] + s, c[1] + int(rng.integers(5, s + 6))), _colour(rng), -1)
        else:
            pts = (np.array(c) + rng.integers(-s, s + 1, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(image, [pts], _colour(rng))
    return np.clip(image, 0, 255).astype(np.uint8)


def documents(rng, h, w):
    paper = rng.uniform(225, 255, 3) if rng.random() < 0.5 else np.full(3, rng.uniform(235, 255))
    image = np.empty((h, w, 3), np.uint8)
    image[:] = paper.astype(np.uint8)
    scale = rng.uniform(0.4, 1.6) * min(h, w) / 600 + 0.3
    font = int(rng.choice(FONTS))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    step = int(35 * scale) + int(rng.integers(4, 20))
    margin = int(w * rng.uniform(0.03, 0.12))
    for y in range(int(step * rng.uniform(1, 3)), h - step // 2, step):
        if rng.random() < 0.12:
            continue  # a paragraph break
        cv2.putText(image, _text(rng, int(rng.integers(3, 14))), (margin, y), font, scale, ink,
                    max(1, int(round(scale * rng.uniform(0.8, 2.2)))), cv2.LINE_AA)
    if rng.random() < 0.3:  # a table rule or two
        for _ in range(int(rng.integers(1, 4))):
            y = int(rng.integers(0, h))
            cv2.line(image, (margin, y), (w - margin, y), ink, 1)
    return image


def uniform_noise(rng, h, w):
    block = int(rng.choice([1, 1, 2, 4, 8, 16]))
    shape = (max(1, h // block), max(1, w // block)) + ((3,) if rng.random() < 0.5 else ())
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_NEAREST)


def _film(rng, h, w, draw):
    """A radiograph-like film of `draw(rng, ch, cw) -> attenuation`, drawn on a canvas of at most 512 a side."""
    scale = min(1.0, 512 / max(h, w))
    ch, cw = max(32, round(h * scale)), max(32, round(w * scale))
    image, _ = expose(draw(rng, ch, cw), [], rng, (w, h), marker=rng.random() < 0.7)
    return image


def _tissue(rng, h, w, centre, axes, value=0.5):
    mu = np.zeros((h, w), np.float32)
    tissue = np.zeros_like(mu)
    ellipse(tissue, centre, axes, value)
    add_layer(mu, tissue * (1 + smooth_noise(rng, mu.shape, 25, 0.08)), min(h, w) * 0.03)
    return mu


def pelvis_ap(rng, h, w):
    u, cx, cy = min(h, w), w / 2 + rng.normal(0, 0.03) * w, h / 2 + rng.normal(0, 0.04) * h
    mu = _tissue(rng, h, w, (cx, cy), (0.6 * w, 0.6 * h))
    bones = np.zeros_like(mu)
    for side in (-1, 1):
        ellipse(bones, (cx + side * 0.24 * u, cy - 0.12 * u), (0.2 * u, 0.16 * u), 0.8, side * 25)  # iliac wing
        ellipse(bones, (cx + side * 0.15 * u, cy + 0.17 * u), (0.1 * u, 0.08 * u), 0.9)  # pubis and ischium
        ellipse(bones, (cx + side * 0.15 * u, cy + 0.17 * u), (0.055 * u, 0.045 * u), 0.1)  # obturator foramen
        head = (cx + side * 0.3 * u, cy + 0.08 * u)
        ellipse(bones, head, (0.07 * u, 0.07 * u), 1.0)  # femoral head
        long_bone(bones, head, (cx + side * 0.36 * u, cy + 0.7 * u), 0.1 * u, 1.0, rng, 0.8, 0)
    polygon(bones, [(cx - 0.1 * u, cy - 0.25 * u), (cx + 0.1 * u, cy - 0.25 * u), (cx, cy + 0.08 * u)], 0.9)  # sacrum
    for i in range(2):  # lowest lumbar vertebrae
        ellipse(bones, (cx, cy - (0.32 + 0.1 * i) * u), (0.08 * u, 0.04 * u), 0.9)
    add_layer(mu, with_cortex(bones, 0.01 * u), 0.8)
    return mu


def lateral_chest(rng, h, w):
    u, cx, cy = min(h, w), w / 2, h / 2
    mu = _tissue(rng, h, w, (cx, cy), (0.4 * w, 0.5 * h), 0.6)
    lungs = np.zeros_like(mu)
    ellipse(lungs, (cx - 0.02 * w, cy - 0.05 * h), (0.3 * w, 0.36 * h), 0.45)  # air: less attenuation
    add_layer(mu, -lungs, u * 0.03)
    heart = np.zeros_like(mu)
    ellipse(heart, (cx - 0.1 * w, cy + 0.15 * h), (0.17 * w, 0.18 * h), 0.35)
    bones = np.zeros_like(mu)
    spine_x = cx + 0.25 * w
    for i in range(12):  # vertebral bodies, posterior
        ellipse(bones, (spine_x + 0.01 * i * w, cy - 0.4 * h + i * 0.07 * h), (0.045 * w, 0.028 * h), 0.9)
    line(bones, (cx - 0.33 * w, cy - 0.35 * h), (cx - 0.36 * w, cy + 0.1 * h), 0.7, 0.03 * w)  # sternum, anterior
    for i in range(8):  # ribs, seen obliquely
        y = cy - 0.3 * h + i * 0.08 * h
        line(bones, (spine_x, y), (cx - 0.3 * w, y + 0.1 * h), 0.35, 0.012 * u)
    add_layer(mu, heart + with_cortex(bones, 0.008 * u), 0.8)
    return np.clip(mu, 0, None)


def foot_lateral(rng, h, w):
    u = min(h, w)
    mu = _tissue(rng, h, w, (0.5 * w, 0.62 * h), (0.45 * w, 0.25 * h))
    bones = np.zeros_like(mu)
    ankle = (0.35 * w, 0.5 * h)
    long_bone(bones, (0.33 * w, -0.05 * h), ankle, 0.12 * u, 1.0, rng, 0, 1.3)  # tibia
    long_bone(bones, (0.42 * w, -0.05 * h), (0.41 * w, 0.47 * h), 0.05 * u, 0.9, rng, 0, 1.2)  # fibula
    ellipse(bones, (0.36 * w, 0.58 * h), (0.09 * u, 0.06 * u), 0.9)  # talus
    ellipse(bones, (0.24 * w, 0.7 * h), (0.13 * u, 0.08 * u), 0.9, 15)  # calcaneus
    for i in range(5):  # metatarsals and toes, fanning forwards
        y = 0.66 * h + i * 0.015 * h
        long_bone(bones, (0.5 * w, y), (0.85 * w, y + 0.08 * h), 0.035 * u, 0.9, rng, 1.3, 1.3)
        long_bone(bones, (0.87 * w, y + 0.08 * h), (0.97 * w, y + 0.1 * h), 0.03 * u, 0.9, rng, 1.2, 1.2)
    add_layer(mu, with_cortex(bones, 0.008 * u), 0.8)
    return mu


def other_films(rng, h, w):
    return _film(rng, h, w, (pelvis_ap, lateral_chest, foot_lateral)[int(rng.integers(3))])


# ----------------------------------------------------------------------------- evaluation families

def screenshots(rng, h, w):
    image = np.empty((h, w, 3), np.uint8)
    image[:] = _colour(rng) if rng.random() < 0.4 else np.full(3, int(rng.integers(200, 256)))
    bar = int(rng.integers(20, 50))
    cv2.rectangle(image, (0, 0), (w, bar), _colour(rng), -1)  # title bar
    cv2.putText(image, _text(rng, 3), (10, int(bar * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, bar / 45, (255, 255, 255), 1,
                cv2.LINE_AA)
    if rng.random() < 0.6:  # side panel
        cv2.rectangle(image, (0, bar), (int(w * rng.uniform(0.15, 0.3)), h), _colour(rng), -1)
    for _ in range(int(rng.integers(2, 12))):  # panels, buttons, text on coloured bars
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(bar, h - 20))
        bw, bh = int(rng.integers(40, max(41, w // 2))), int(rng.integers(18, 60))
        cv2.rectangle(image, (x, y), (x + bw, y + bh), _colour(rng), -1)
        cv2.rectangle(image, (x, y), (x + bw, y + bh), (60, 60, 60), 1)
        cv2.putText(image, _text(rng, 2), (x + 5, y + int(bh * 0.65)), cv2.FONT_HERSHEY_SIMPLEX, bh / 60,
                    (20, 20, 20), 1, cv2.LINE_AA)
    return image


def _fractal(rng, h, w, octaves=5):
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        out += smooth_noise(rng, (h, w), max(2.0, min(h, w) / 4 / 2**o), 0.6**o)
    return out


def _to_255(field):
    low, high = np.percentile(field, (1, 99))
    return np.clip((field - low) / max(high - low, 1e-6) * 255, 0, 255)


def textures(rng, h, w):
    kind = int(rng.integers(4))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # fractal (Perlin-like) noise
        field = _fractal(rng, h, w)
    elif kind == 1:  # wood grain: rings distorted by low-frequency noise
        field = np.sin((x * rng.uniform(0.02, 0.1) + 8 * _fractal(rng, h, w, 2)) * 2)
    elif kind == 2:  # woven fabric
        period = rng.uniform(4, 14)
        field = np.sin(x / period * math.pi) * np.sign(np.sin(y / period / 2 * math.pi)) + 0.3 * _fractal(rng, h, w, 2)
    else:  # gravel: many small stones
        field = np.zeros((h, w), np.float32)
        for _ in range(int(h * w / rng.uniform(150, 600))):
            r = rng.uniform(2, 10)
            cv2.ellipse(field, (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(r), int(r * rng.uniform(0.5, 1))),
                        float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.2, 1)), -1)
    grey = _to_255(field).astype(np.uint8)
    if rng.random() < 0.5:
        return grey
    tint = np.array([_colour(rng), _colour(rng)], np.float32)
    t = grey[..., None].astype(np.float32) / 255
    return (tint[0] * (1 - t) + tint[1] * t).astype(np.uint8)


def gaussian_noise(rng, h, w):
    noise = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w)).astype(np.float32)
    if rng.random() < 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 2))
    return np.clip(noise, 0, 255).astype(np.uint8)


def salt_pepper(rng, h, w):
    image = np.full((h, w), rng.uniform(40, 220), np.float32)
    if rng.random() < 0.5:
        image += np.linspace(-40, 40, w, dtype=np.float32)[None, :]
    amount = rng.uniform(0.02, 0.3)
    spots = rng.random((h, w))
    image[spots < amount / 2] = 0
    image[spots > 1 - amount / 2] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


def skull_lateral(rng, h, w):
    u, cx, cy = min(h, w), w / 2 + rng.normal(0, 0.03) * w, h / 2
    mu = _tissue(rng, h, w, (cx, cy), (0.45 * u, 0.42 * u))
    bones = np.zeros_like(mu)
    ellipse(bones, (cx + 0.05 * u, cy - 0.05 * u), (0.38 * u, 0.33 * u), 1.0)  # calvarium
    ellipse(bones, (cx + 0.05 * u, cy - 0.05 * u), (0.35 * u, 0.3 * u), 0.25)  # brain case inside the shell
    polygon(bones, [(cx - 0.35 * u, cy + 0.05 * u), (cx - 0.1 * u, cy + 0.1 * u), (cx - 0.05 * u, cy + 0.4 * u),
                    (cx - 0.3 * u, cy + 0.42 * u)], 0.7)  # face
    line(bones, (cx - 0.32 * u, cy + 0.42 * u), (cx + 0.05 * u, cy + 0.38 * u), 0.9, 0.05 * u)  # mandible body
    line(bones, (cx + 0.05 * u, cy + 0.38 * u), (cx + 0.1 * u, cy + 0.15 * u), 0.9, 0.05 * u)  # ramus
    for i in range(10):  # teeth
        ellipse(bones, (cx - 0.3 * u + i * 0.025 * u, cy + 0.3 * u), (0.01 * u, 0.03 * u), 1.4)
    add_layer(mu, with_cortex(bones, 0.01 * u), 0.8)
    return mu


def spine_lateral(rng, h, w):
    u, cx = min(h, w), w / 2 + rng.normal(0, 0.04) * w
    mu = _tissue(rng, h, w, (cx, h / 2), (0.4 * w, 0.7 * h))
    bones = np.zeros_like(mu)
    curve = rng.uniform(0.03, 0.1) * w
    for i in range(7):
        y = (0.08 + i * 0.135) * h
        x = cx + curve * math.sin(math.pi * y / h)
        polygon(bones, [(x - 0.12 * u, y - 0.045 * h), (x + 0.1 * u, y - 0.05 * h), (x + 0.1 * u, y + 0.05 * h),
                        (x - 0.12 * u, y + 0.045 * h)], 0.9)  # vertebral body; the gap below is the disc
        line(bones, (x + 0.1 * u, y), (x + 0.28 * u, y + 0.03 * h), 0.6, 0.04 * u)  # posterior elements
    add_layer(mu, with_cortex(bones, 0.01 * u), 0.8)
    return mu


def abdomen_ap(rng, h, w):
    u, cx, cy = min(h, w), w / 2, h / 2
    mu = _tissue(rng, h, w, (cx, cy), (0.55 * w, 0.7 * h), 0.6)
    gas = np.zeros_like(mu)
    for _ in range(int(rng.integers(5, 15))):  # bowel gas
        ellipse(gas, (cx + rng.normal(0, 0.2) * w, cy + rng.normal(0, 0.15) * h),
                (rng.uniform(0.02, 0.08) * u, rng.uniform(0.02, 0.05) * u), 0.3, rng.uniform(0, 180))
    add_layer(mu, -gas, 0.01 * u)
    bones = np.zeros_like(mu)
    for i in range(5):  # lumbar spine
        ellipse(bones, (cx, cy - 0.3 * h + i * 0.12 * h), (0.07 * u, 0.045 * h), 0.9)
    for side in (-1, 1):
        ellipse(bones, (cx + side * 0.25 * u, cy + 0.38 * h), (0.2 * u, 0.12 * u), 0.7, side * 25)  # iliac crests
        for i in range(2):  # lowest ribs
            line(bones, (cx + side * 0.08 * u, cy - (0.42 - 0.06 * i) * h), (cx + side * 0.45 * w, cy - (0.25 - 0.05 * i) * h),
                 0.5, 0.02 * u)
    add_layer(mu, with_cortex(bones, 0.01 * u), 0.8)
    return np.clip(mu, 0, None)


def unseen_films(rng, h, w):
    return _film(rng, h, w, (skull_lateral, spine_lateral, abdomen_ap)[int(rng.integers(3))])


TRAIN_FAMILIES = {"colour_scenes": colour_scenes, "documents": documents, "uniform_noise": uniform_noise,
                  "other_films": other_films}
EVAL_FAMILIES = {"screenshots": screenshots, "textures": textures, "gaussian_noise": gaussian_noise,
                 "salt_pepper": salt_pepper, "unseen_films": unseen_films}
FAMILIES = {**TRAIN_FAMILIES, **EVAL_FAMILIES}
FILM_FAMILIES = ("other_films", "unseen_films")  # radiographs, of anatomies no task takes; the rest are not films
JPEG_SHARE = {"colour_scenes": 0.5, "documents": 0.3, "screenshots": 0.3, "textures": 0.5, "other_films": 0.2,
              "unseen_films": 0.2}  # the rest are PNG


def render(family: str, index: int, seed: int) -> np.ndarray:
    """One image (uint8, grey or BGR) of `family`; depends only on (family, index, seed)."""
    rng = np.random.default_rng([seed, zlib.crc32(family.encode()), index])
    h, w = _size(rng)
    return FAMILIES[family](rng, h, w)


def write(family: str, index: int, seed: int, out: Path) -> Path:
    image = render(family, index, seed)
    jpeg = np.random.default_rng([seed, zlib.crc32(family.encode()), index, 1]).random() < JPEG_SHARE.get(family, 0)
    path = out / family / f"{family}_{index:05d}.{'jpg' if jpeg else 'png'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")
    return path


def families_of(which: str) -> list[str]:
    return list({"train": TRAIN_FAMILIES, "eval": EVAL_FAMILIES, "all": FAMILIES}[which])


def generate(out: Path, count: int, seed: int, which: str = "all") -> dict:
    """Write `count` images of each family in `which` under out/<family>/; returns the provenance record."""
    out = Path(out)
    families = families_of(which)
    for family in families:
        for index in range(count):
            write(family, index, seed, out)
    record = {"generator": "train.negatives", "seed": seed, "count_per_family": count, "families": families,
              "training_families": [f for f in families if f in TRAIN_FAMILIES],
              "evaluation_families": [f for f in families if f in EVAL_FAMILIES],
              "command": f"python -m train.negatives --out {out} --count {count} --seed {seed} --families {which}"}
    (out / PROVENANCE).write_text(json.dumps(record, indent=2))
    return record


def list_family(root: Path, family: str) -> list[Path]:
    return sorted(p for p in (Path(root) / family).glob(f"{family}_*") if p.suffix in (".png", ".jpg"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.negatives", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder; each family goes to OUT/<family>/")
    parser.add_argument("--count", type=int, default=500, help="images per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", choices=["train", "eval", "all"], default="all")
    args = parser.parse_args(argv)
    import time
    start = time.perf_counter()
    record = generate(args.out, args.count, args.seed, args.families)
    print(f"{len(record['families'])} families x {args.count} images in {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
