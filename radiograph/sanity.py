"""The model-parameter randomisation test of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps") for Grad-CAM.

    python -m radiograph.sanity                      # every shipped model, its examples, cascade and full randomisation
    python -m radiograph.sanity --tasks knee --count 3 --no-cascade

A heatmap that explains the trained network must change when the network's weights are replaced by fresh random
ones; a method that keeps drawing the same map (an edge detector, say) fails. For each model the trained network
and copies with randomised weights compute Grad-CAM of the same class (the class serving shows first, from the
trained model's probabilities) on the same example images, decoded and letterboxed as serving does. Both maps
are placed on the model input (the card's cell grid, as serving places them), scaled to [0, 1], and compared by
the absolute Spearman rank correlation and by SSIM (Wang et al. 2004, an 11-pixel Gaussian window of sigma 1.5).

Randomisation cascades from the top as in the paper (the logits layer, then each stage of the backbone by the
size of its feature map, deepest first, each step keeping the ones before it randomised) and ends with every
layer randomised. Fresh weights are the layers' own initialisers (keras.models.clone_model, a fixed seed); batch
normalisation starts again at mean 0, variance 1.

The bound (RANK_BOUND, SSIM_BOUND) and why it sits where it does: docs/gradcam.md, "Sanity check".
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr

from radiograph.cam import normalise, score_matrix
from radiograph.decision import heatmap_classes
from radiograph.geometry import FeatureGrid
from radiograph.imaging import decode, model_input
from radiograph.inference import OnnxModel
from radiograph.registry import TASKS

RANK_BOUND = 0.5  # a fully randomised network's maps: mean |Spearman rho| with the trained maps below this
SSIM_BOUND = 0.6  # and mean SSIM below this
FULL = "all layers"


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """|Spearman rho| of two maps over their pixels; 0 where either is constant (a flat map ranks nothing)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(abs(spearmanr(a, b).statistic))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity of two maps (Wang et al. 2004: Gaussian window 11 px, sigma 1.5, K1 0.01,
    K2 0.03), over the pixels whose whole window lies inside the image."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    covariance = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(index[5:-5, 5:-5].mean())


def example_images(task: str, examples: Path, size: int, count: int) -> tuple[np.ndarray, list[str]]:
    """Up to `count` of a task's example images (each example's first file, then their second ones, ...), decoded
    and letterboxed as serving does: [N, size, size, 1], 0-255. A file that is another one's film again (the
    same picture as 16-bit PNG or DICOM: model inputs correlated above 0.99) is left out, so that no two images
    compared are one."""
    entries = json.loads((Path(examples) / task / "examples.json").read_text())
    names = []
    for depth in range(max(len(entry["files"]) for entry in entries)):
        names += [entry["files"][depth] for entry in entries if depth < len(entry["files"])]
    images, kept = [], []
    for name in dict.fromkeys(names):
        image = model_input(decode(Path(examples) / task / name, name), size)[0].astype(np.float32)
        if all(np.corrcoef(image.ravel(), other.ravel())[0, 1] < 0.99 for other in images):
            images.append(image)
            kept.append(name)
        if len(images) == count:
            break
    return np.stack(images), kept


def weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def cascade(model) -> list[tuple[str, list[str]]]:
    """Blocks of weighted layers, top first: the logits layer, then the backbone's stages by the spatial size of
    their output (deepest first), each named by that size. A layer without a spatial map of its own (a
    squeeze-and-excitation's 1x1 convolutions, a dense layer) joins the stage it sits in."""
    blocks: list[tuple[str, list[str]]] = []
    for layer in reversed(weighted_layers(model)):
        output = layer.output[0] if isinstance(layer.output, (list, tuple)) else layer.output
        spatial = len(output.shape) == 4 and (output.shape[1], output.shape[2]) != (1, 1)
        if layer.name == "logits":
            name = "logits"
        elif spatial:
            name = f"stage {output.shape[1]}x{output.shape[2]}"
        else:
            name = blocks[-1][0] if blocks and blocks[-1][0] != "logits" else "head"
        if blocks and blocks[-1][0] == name:
            blocks[-1][1].append(layer.name)
        else:
            blocks.append((name, [layer.name]))
    return blocks


def randomised(model, fresh, layers: set[str]):
    """A copy of `model` whose `layers` have `fresh`'s weights (the same architecture, freshly initialised)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in layers:
        copy.get_layer(name).set_weights(fresh.get_layer(name).get_weights())
    return copy


def maps_on_input(model, images: np.ndarray, classes: np.ndarray, scores: np.ndarray, grid: FeatureGrid | None,
                  size: int) -> tuple[np.ndarray, list[bool]]:
    """Grad-CAM of each image's class, placed on the model input and scaled to [0, 1]: [N, size, size], flat."""
    from radiograph.gradcam import GradCam

    maps = GradCam(model, "gradcam", scores)(images, classes)
    placed, flat = [], []
    for heatmap in maps:
        if heatmap.shape[0] != size:  # a single network's cell map; an ensemble's is already at input size
            cells = grid or FeatureGrid.nominal(heatmap.shape, size)
            heatmap = cells.onto_input(heatmap, size)
        scaled, is_flat = normalise(heatmap)
        placed.append(scaled)
        flat.append(is_flat)
    return np.stack(placed), flat


@dataclass(frozen=True)
class Row:
    """One randomisation of one model, compared with the trained model's maps on the same images."""

    task: str
    randomised: str  # "logits", "stage 24x24", ..., the last one every layer
    layers: int  # weighted layers randomised so far
    rank: list[float]  # |Spearman rho| per image
    ssim: list[float]
    flat: int  # randomised maps with no positive evidence (rank correlation 0)

    @property
    def mean_rank(self) -> float:
        return float(np.mean(self.rank))

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssim))

    @property
    def passes(self) -> bool:
        return self.mean_rank < RANK_BOUND and self.mean_ssim < SSIM_BOUND


@dataclass(frozen=True)
class Measurement:
    task: str
    images: list[str]
    classes: list[str]
    between_images_rank: list[float]  # the trained maps of different images, |rho| of every pair: unrelated maps
    between_images_ssim: list[float]
    rows: list[Row]
    seconds: float

    @property
    def full(self) -> Row:
        """Every weighted layer randomised (the cascade's last step)."""
        return self.rows[-1]


def measure(task: str, models: Path = Path("models"), examples: Path = Path("examples"), count: int = 3,
            cascading: bool = True, seed: int = 0) -> Measurement:
    """The randomisation test of one shipped model on `count` of its examples."""
    import keras

    from radiograph.layers import load_model

    start = time.perf_counter()
    onnx = OnnxModel(Path(models) / task, device="cpu")
    card, size = onnx.card, onnx.size
    model = load_model(card.verify(onnx.folder, "model.keras"))
    images, names = example_images(task, examples, size, count)
    probabilities = onnx.run(images).probabilities
    classes = np.array([heatmap_classes(card, p)[0] for p in probabilities], np.int32)
    scores, grid = score_matrix(card.labels, card.heatmap_versus), FeatureGrid.from_card(card)
    trained, trained_flat = maps_on_input(model, images, classes, scores, grid, size)
    kept = [i for i, flat in enumerate(trained_flat) if not flat]  # a flat trained map has nothing to compare
    pairs = [(i, j) for i in kept for j in kept if i < j]
    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(model)  # every layer freshly initialised from its own initialiser
    every = {layer.name for layer in weighted_layers(model)}
    steps = cascade(model) if cascading else [(FULL, sorted(every))]
    rows, randomised_so_far = [], set()
    for name, layers in steps:
        randomised_so_far |= set(layers)
        if randomised_so_far == every and name != FULL:
            name = f"{name}, so {FULL}"
        copy = fresh if randomised_so_far == every else randomised(model, fresh, randomised_so_far)
        maps, flat = maps_on_input(copy, images, classes, scores, grid, size)
        rows.append(Row(task, name, len(randomised_so_far), [rank_correlation(trained[i], maps[i]) for i in kept],
                        [ssim(trained[i], maps[i]) for i in kept], sum(flat[i] for i in kept)))
    return Measurement(task, [names[i] for i in kept], [card.labels[classes[i]] for i in kept],
                       [rank_correlation(trained[i], trained[j]) for i, j in pairs],
                       [ssim(trained[i], trained[j]) for i, j in pairs], rows, time.perf_counter() - start)


def table(measurements: list[Measurement]) -> str:
    """Markdown: one row per model and randomised block, the between-images floor beside each model's rows."""
    lines = [f"Bound: mean |Spearman rho| < {RANK_BOUND} and mean SSIM < {SSIM_BOUND} with every layer randomised.",
             "", ("| task | randomised (cascading from the top) | layers | mean abs rho | max abs rho | mean SSIM "
                  "| max SSIM | flat maps | below the bound |"), "|---|---|---|---|---|---|---|---|---|"]
    for m in measurements:
        for row in m.rows:
            lines.append(f"| {m.task} | {row.randomised} | {row.layers} | {row.mean_rank:.3f} | {max(row.rank):.3f} "
                         f"| {row.mean_ssim:.3f} | {max(row.ssim):.3f} | {row.flat}/{len(row.rank)} "
                         f"| {'yes' if row.passes else 'no'} |")
        if m.between_images_rank:
            lines.append(f"| {m.task} | (none: trained maps of two different images) | 0 "
                         f"| {np.mean(m.between_images_rank):.3f} | {max(m.between_images_rank):.3f} "
                         f"| {np.mean(m.between_images_ssim):.3f} | {max(m.between_images_ssim):.3f} | | |")
    lines.append("")
    lines += [f"{m.task}: {len(m.images)} images ({', '.join(f'{n} as {c}' for n, c in zip(m.images, m.classes))}), "
              f"{m.seconds:.1f} s" for m in measurements]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiograph.sanity", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: every task with a model folder")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--examples", type=Path, default=Path("examples"))
    parser.add_argument("--count", type=int, default=6, help="example images per model (default 6)")
    parser.add_argument("--no-cascade", action="store_true", help="only the full randomisation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2 (the between-images floor compares pairs)")
    tasks = args.tasks or [task for task in TASKS if (args.models / task / "model.keras").exists()]
    measurements = [measure(task, args.models, args.examples, args.count, not args.no_cascade, args.seed)
                    for task in tasks]
    print(table(measurements))
    return 0 if all(m.full.passes for m in measurements) else 1


if __name__ == "__main__":
    raise SystemExit(main())
