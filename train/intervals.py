"""Figures with their noise: bootstrap intervals on a shipped model's test split, and its figures on a fresh
phantom set (a seed never used for training, model selection, thresholds or temperature), into its card.

    python -m train.phantoms knee --out phantoms --count 3000 --seed 0            # the card's data command
    python -m train.intervals knee --data phantoms/knee                           # test split: card.intervals
    python -m train.phantoms knee --out fresh --count 600 --seed 31415
    python -m train.intervals knee --fresh fresh/knee --fresh-seed 31415 \\
        --fresh-command "python -m train.phantoms knee --out fresh --count 600 --seed 31415"   # card.fresh
    python -m train.intervals knee --data phantoms/knee --against-variant fp16   # paired: fp32 against fp16
    python -m train.intervals --table                                             # every shipped card, markdown

The model is scored as it is served: its ONNX file (the temperature folded in) through the shared loader, decided
with the card's thresholds. Intervals are 95% percentile bootstrap intervals over REPLICATES resamples of the
patients (MURA: a patient's studies go together; ChestX-ray14 and knee: a patient's images), so images of one
patient never sit on both sides of a resample. A share of images or studies that is 0 or 1 (every study right)
would get a point, as no resample can miss; it gets its exact binomial (Clopper-Pearson) interval instead, named
in the card's `exact_binomial`. A replicate in which a figure is undefined (an AUC of a class
with no positive drawn) is left out of that figure's interval, and the card says how many were.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from radiograph.cards import ModelCard, leaves
from radiograph.registry import TASKS, get_task
from train.evaluate import METRICS, TRIALS, targets_of

REPLICATES = 1000
LEVEL = 0.95
SEED = 0
SKIPPED_METRICS = ("confusion_matrix",)  # a table, not a figure with an interval
REPRODUCED = 0.005  # the ONNX file's test figures must equal the card's (Keras, at training) within this


def score(folder: Path, samples: list, batch_size: int = 16, variant: str = "fp32") -> np.ndarray:
    """Probabilities [N, C] of `samples` from the model folder's ONNX file, as the app serves them."""
    from radiograph.imaging import load_for_model
    from radiograph.inference import OnnxModel

    model = OnnxModel(folder, device="cpu", variant=variant)
    rows = []
    for start in range(0, len(samples), batch_size):
        batch = np.stack([load_for_model(sample.path, model.size).tensor for sample in samples[start:start + batch_size]])
        rows.append(model.run(batch, features=False).probabilities)
    return np.concatenate(rows).astype(np.float64)


def figures(spec, targets, probabilities, samples, thresholds) -> dict:
    """The task's figures (its metrics, less tables); a figure undefined on this set is None."""
    result = {}
    for name in spec.metrics:
        if name in SKIPPED_METRICS:
            continue
        try:
            result[name] = METRICS[name](targets, probabilities, labels=spec.labels, samples=samples,
                                         thresholds=thresholds, spec=spec)
        except ValueError:  # e.g. an AUC on a draw with one class only
            result[name] = None
    return result


def _nested(flat: dict) -> dict:
    result: dict = {}
    for path, value in flat.items():
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return result


def bootstrap(spec, targets, probabilities, samples, thresholds, replicates: int = REPLICATES, seed: int = SEED,
              level: float = LEVEL, measure=None) -> dict:
    """Percentile bootstrap intervals of every figure, resampling patients: {"figures": point figures,
    "intervals": the same shape with [low, high], "undefined": per figure, replicates where it was undefined}.
    `measure` (default `figures`) computes the figures of one set of rows."""
    measure = measure or figures
    targets, probabilities = np.asarray(targets, np.float64), np.asarray(probabilities, np.float64)
    point = measure(spec, targets, probabilities, samples, thresholds)
    patients: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        patients.setdefault(sample.patient or str(sample.path), []).append(index)
    units = list(patients.values())
    rng = np.random.default_rng(seed)
    draws: dict[tuple, list[float]] = {path: [] for path, value in leaves(point).items() if value is not None}
    undefined = dict.fromkeys(draws, 0)
    for _ in range(replicates):
        indices, drawn = [], []
        for copy, unit in enumerate(rng.integers(0, len(units), len(units))):
            for index in units[unit]:  # each drawn copy of a patient is its own patient, its studies its own studies
                sample = samples[index]
                indices.append(index)
                drawn.append(dataclasses.replace(sample, path=Path(f"{sample.path}#{copy}"),
                                                 study=f"{sample.study}#{copy}" if sample.study else None))
        values = leaves(measure(spec, targets[indices], probabilities[indices], drawn, thresholds))
        for path in draws:
            value = values.get(path)
            if value is None:
                undefined[path] += 1
            else:
                draws[path].append(float(value))
    tail = 100 * (1 - level) / 2
    intervals = {path: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
                 for path, values in draws.items() if values}
    return {"figures": point, "intervals": _nested(intervals),
            "undefined": {"/".join(path): count for path, count in undefined.items() if count}}


def exact_at_bounds(spec, targets, samples, result: dict, level: float = LEVEL) -> dict:
    """A share of trials (evaluate.TRIALS: accuracy, sensitivity, a part's study accuracy) of 0 or 1 has a point
    for its bootstrap interval: no resample can miss. Such a figure gets its exact binomial (Clopper-Pearson)
    interval over its trials instead, each image or study taken as independent. `result` (from `bootstrap`) has
    those intervals replaced in place; returns {dotted name: {"successes": k, "trials": n}} of each one replaced."""
    from scipy.stats import beta

    trials = {}
    for name in spec.metrics:
        if name in TRIALS:
            trials.update(leaves({name: TRIALS[name](np.asarray(targets), samples=samples, spec=spec)}))
    intervals, exact, tail = leaves(result["intervals"]), {}, (1 - level) / 2
    for path, value in leaves(result["figures"]).items():
        count = trials.get(path)
        if count and value in (0.0, 1.0):
            k = round(value * count)
            intervals[path] = [float(beta.ppf(tail, k, count - k + 1)) if k else 0.0,
                               float(beta.ppf(1 - tail, k + 1, count - k)) if k < count else 1.0]
            exact[".".join(map(str, path))] = {"successes": k, "trials": count}
    result["intervals"] = _nested(intervals)
    return exact


def paired(spec, targets, first, second, samples, thresholds, replicates: int = REPLICATES, seed: int = SEED,
           level: float = LEVEL) -> dict:
    """Two models (or settings) on the same images: each figure's difference (first - second) with its paired
    percentile bootstrap interval (both scored on the same resampled patients), and a verdict per figure: "tie"
    when the interval holds 0, else which is higher."""
    targets = np.asarray(targets, np.float64)
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    both = np.concatenate([first, second], axis=1)
    width = first.shape[1]

    def difference(spec_, t, p, drawn, thresholds_):
        a, b = leaves(figures(spec_, t, p[:, :width], drawn, thresholds_)), \
            leaves(figures(spec_, t, p[:, width:], drawn, thresholds_))
        return _nested({path: (a[path] - b[path]) if a.get(path) is not None and b.get(path) is not None else None
                        for path in a})

    result = bootstrap(spec, targets, both, samples, thresholds, replicates, seed, level, measure=difference)
    verdicts = {"/".join(path): ("tie" if low <= 0 <= high else "first higher" if low > 0 else "second higher")
                for path, (low, high) in leaves(result["intervals"]).items()}
    return {"differences": result["figures"], "intervals": result["intervals"], "verdicts": verdicts,
            "undefined": result["undefined"]}


def method(samples, replicates: int = REPLICATES, seed: int = SEED, level: float = LEVEL) -> dict:
    studies = len({s.study for s in samples if s.study})
    return {"method": "percentile bootstrap", "level": level, "replicates": replicates, "seed": seed,
            "unit": "patient", "patients": len({s.patient or str(s.path) for s in samples}), "images": len(samples),
            **({"studies": studies} if studies else {})}


def table(models: Path) -> str:
    """Markdown: each shipped model's scalar figures on its test split and on its fresh set, with 95% intervals,
    and the run-to-run mean +- sd where measured (docs/figures.md, the README's demo-model table)."""
    def cell(value, pair=None) -> str:
        if value is None:
            return ""
        return f"{value:.3f}" + (f" ({pair[0]:.3f}-{pair[1]:.3f})" if pair else "")

    lines = ["| task | figure | test split (95% interval) | fresh set (95% interval) | runs: mean +- sd (n) |",
             "|---|---|---|---|---|"]
    for task in TASKS:
        if not (models / task / "card.json").exists():
            continue
        card = ModelCard.load(models / task)
        test, fresh = card.intervals or {}, card.fresh or {}
        spread = (card.spread or {}).get("summary") or {}
        for name, value in card.metrics.items():
            if not isinstance(value, float):
                continue
            runs = spread.get(name)
            lines.append(f"| {task} | {name} | {cell(value, (test.get('intervals') or {}).get(name))} | "
                         f"{cell((fresh.get('figures') or {}).get(name), (fresh.get('intervals') or {}).get(name))} | "
                         + (f"{runs['mean']:.3f} +- {runs['sd']:.3f} ({runs['n']})" if runs else
                            f"{len(card.spread['runs'])} run so far" if (card.spread or {}).get("runs") else
                            "not measured")
                         + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from train.datasets import read_dataset


    parser = argparse.ArgumentParser(prog="python -m train.intervals", description=__doc__.split("\n")[0])
    parser.add_argument("task", nargs="?", choices=list(TASKS))
    parser.add_argument("--models", type=Path, default=Path("models"), help="models root: the model is MODELS/<task>")
    parser.add_argument("--table", action="store_true", help="print every card's figures with intervals (markdown)")
    parser.add_argument("--data", type=Path, help="the card's dataset: intervals on its test split (card.intervals)")
    parser.add_argument("--fresh", type=Path, help="a fresh phantom set (every split of it): card.fresh")
    parser.add_argument("--fresh-seed", type=int, help="the seed the fresh set was generated with")
    parser.add_argument("--fresh-command", help="the command that generated the fresh set, recorded in the card")
    parser.add_argument("--replicates", type=int, default=REPLICATES)
    parser.add_argument("--against", type=Path, help="compare with another model folder of the task on --data's test "
                        "split (paired bootstrap of each figure's difference; printed, not written to a card)")
    parser.add_argument("--variant", default="fp32", help="the ONNX variant scored (fp32, fp16, int8)")
    parser.add_argument("--against-variant", help="with --against (default: the same folder), its variant")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.models))
        return 0
    if args.task is None:
        parser.error("give a task (or --table)")
    if args.against or args.against_variant:
        return compare(parser, args)
    if not args.data and not args.fresh:
        parser.error("give --data (the test split) or --fresh (a fresh phantom set), or both")
    if args.fresh and (args.fresh_seed is None or not args.fresh_command):
        parser.error("--fresh needs --fresh-seed and --fresh-command: the card records how the set was made")
    spec, folder = get_task(args.task), args.models / args.task
    card = ModelCard.load(folder)
    thresholds = [card.thresholds[label] for label in spec.labels]
    command = "python -m train.intervals " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.data:
        index = read_dataset(spec.id, args.data, card.training["val_fraction"], card.training["seed"])
        samples = index.splits["test"]
        result = bootstrap(spec, targets_of(samples), score(folder, samples), samples, thresholds, args.replicates)
        exact = exact_at_bounds(spec, targets_of(samples), samples, result)
        differ = {name: (value, result["figures"].get(name)) for name, value in card.metrics.items()
                  if isinstance(value, float) and abs(value - (result["figures"].get(name) or 0.0)) > REPRODUCED}
        if differ:  # not the split the card was measured on, or not the model
            parser.exit(2, f"error: the test split scored here does not reproduce the card's figures (card, here): "
                           f"{differ}; is --data the card's dataset ({card.data.get('command')})?\n")
        card.intervals = {**method(samples, args.replicates), "split": "test", "figures": result["figures"],
                          "intervals": result["intervals"], "exact_binomial": exact,
                          "undefined_replicates": result["undefined"], "command": command}
        print(json.dumps({"test": card.intervals}, indent=2))
    if args.fresh:
        if args.fresh_seed in (card.data.get("seed"), card.training.get("seed")):
            parser.error(f"--fresh-seed {args.fresh_seed} is a seed of the card's own data or training")
        index = read_dataset(spec.id, args.fresh, card.training["val_fraction"], card.training["seed"])
        samples = [sample for split in ("train", "val", "test") for sample in index.splits.get(split, [])]
        result = bootstrap(spec, targets_of(samples), score(folder, samples), samples, thresholds, args.replicates)
        exact = exact_at_bounds(spec, targets_of(samples), samples, result)
        card.fresh = {**method(samples, args.replicates), "seed": args.fresh_seed, "generated_by": args.fresh_command,
                      "figures": result["figures"], "intervals": result["intervals"], "exact_binomial": exact,
                      "undefined_replicates": result["undefined"], "command": command}
        print(json.dumps({"fresh": card.fresh}, indent=2))
    card.save(folder)
    return 0


def compare(parser, args) -> int:
    """Two models or variants on the test split: each figure's difference with its paired interval and verdict."""
    from train.datasets import read_dataset

    if not args.data:
        parser.error("a comparison needs --data (the test split both are scored on)")
    spec, folder = get_task(args.task), args.models / args.task
    other = args.against or folder
    card = ModelCard.load(folder)
    index = read_dataset(spec.id, args.data, card.training["val_fraction"], card.training["seed"])
    samples = index.splits["test"]
    thresholds = [card.thresholds[label] for label in spec.labels]  # the first model's operating points for both
    first = score(folder, samples, variant=args.variant)
    second = score(other, samples, variant=args.against_variant or args.variant)
    result = paired(spec, targets_of(samples), first, second, samples, thresholds, args.replicates)
    print(json.dumps({"first": f"{folder} ({args.variant})", "second": f"{other} ({args.against_variant or args.variant})",
                      **method(samples, args.replicates), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
