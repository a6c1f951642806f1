"""Measure the input gate on held-out data: routing, what passes, what is flagged, what is refused, its cost,
and whether the uncertainty means something.

    python -m train.measure_gate --models models --work /tmp/gate --out reports/gate.json --cards

Held-out data, never used to train a model, fit a distance or choose a threshold:
  * phantoms of every task at seed HELDOUT_SEED (2026), --count per task (all splits of that set);
  * generated non-radiographs and other films of the router's EVALUATION families only (train.negatives), which
    the router never trained on, at seed NEGATIVES_SEED;
  * degraded copies of held-out phantoms: heavy noise, inverted, over- and under-exposed, turned by 90 degrees.
Every image goes through `radiograph.service.Service` (ONNX CAM path), the code the app serves with.

Figures (targets from the issue that asked for the gate):
  routing_accuracy           the router's task (turned upright where needed) is the image's task     >= 99%
  passed_ok                  a task's own held-out phantoms pass its gate as "ok"                    >= 97%
  other_task_flagged         another task's phantoms sent to a task get "warn" or "refuse"           >= 99%
  non_radiographs_refused    evaluation-family non-radiographs (screenshots, textures, noise) sent to a task
                             (or to auto) are refused                                               >= 99%
  other_films_flagged        films of anatomies no task takes (evaluation family unseen_films) get "warn" or
                             "refuse" (reported, no target: they are radiographs, not non-radiographs)
  degraded_flagged           degraded phantoms get "warn" or "refuse", per kind of degradation
  gate_cost                  the gate's share of the server time of one analysis (median over images), <= 10%
  uncertainty                error rate among the 10% most uncertain predictions / among the rest    >= 3x
                             (a multi-label task also per finding: each label's call against its threshold)
Each rate comes with its count and a 95% Wilson interval; the uncertainty ratio with a bootstrap interval.
With --cards the task's figures go into its card (`gate` section) and the router's into models/router/card.json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from radiograph.cards import ModelCard
from radiograph.decision import decide, label_uncertainties, uncertainty
from radiograph.registry import TASKS
from radiograph.service import Service
from train import negatives
from train.datasets import read_dataset
from train.phantoms import generate

HELDOUT_SEED = 2026  # phantoms: never used for training, model selection, thresholds or temperature
NEGATIVES_SEED = 2027  # evaluation families only: the router never saw any image of them
DEGRADATIONS = ("heavy_noise", "inverted", "over_exposed", "under_exposed", "rotated_90")


def wilson(hits: int, total: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a proportion."""
    if total == 0:
        return [math.nan, math.nan]
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def rate(hits: int, total: int) -> dict:
    return {"rate": round(hits / total, 4) if total else None, "hits": hits, "of": total,
            "interval_95": wilson(hits, total)}


def degrade(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of a uint8 film."""
    film = image.astype(np.float32)
    if kind == "heavy_noise":
        film = film + rng.normal(0, 70, film.shape)
    elif kind == "inverted":
        film = 255 - film
    elif kind == "over_exposed":
        film = film * 4 + 60
    elif kind == "under_exposed":
        film = film * 0.12
    elif kind == "rotated_90":
        film = np.rot90(film)
    return np.clip(film, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    return data.tobytes()


def held_out(tasks: list[str], work: Path, count: int) -> dict[str, list]:
    """Every sample (all splits) of a fresh phantom set per task at HELDOUT_SEED."""
    sets = {}
    for task in tasks:
        folder = work / "phantoms" / task
        if not folder.exists():
            generate(task, work / "phantoms", count, HELDOUT_SEED)
        index = read_dataset(task, folder)
        sets[task] = [s for samples in index.splits.values() for s in samples]
    return sets


def is_error(card: ModelCard, probabilities: np.ndarray, target) -> bool:
    """Whether the decision is wrong: the top class (top_class), the positive call (grouped), or any label's call
    (each_above_threshold)."""
    target = np.asarray(target)
    decision = card.decision
    if decision.kind == "each_above_threshold":
        called = {label for label in decide(card, probabilities)["positive"]}
        return called != {label for label, t in zip(card.labels, target) if t}
    if decision.kind == "grouped":
        truth = card.labels[int(np.argmax(target))].endswith(f"_{decision.positive}")
        return bool(decide(card, probabilities)[decision.positive]) != truth
    return int(np.argmax(probabilities)) != int(np.argmax(target))


def uncertainty_ratio(values: list[float], errors: list[bool], rng: np.random.Generator, rounds: int = 1000) -> dict:
    """Error rate among the 10% most uncertain / among the rest, with a bootstrap interval over images."""
    values, errors = np.asarray(values), np.asarray(errors, np.float64)

    def ratio(v, e):
        order = np.argsort(-v, kind="stable")
        top = max(1, int(round(0.1 * len(v))))
        high, rest = e[order[:top]].mean(), e[order[top:]].mean()
        return high, rest, (high / rest if rest > 0 else math.inf)

    high, rest, point = ratio(values, errors)
    draws = [ratio(values[i], errors[i])[2] for i in (rng.integers(0, len(values), len(values)) for _ in range(rounds))]
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    return {"images": int(len(values)), "errors": int(errors.sum()), "error_rate_top_10pct": round(float(high), 4),
            "error_rate_rest": round(float(rest), 4), "ratio": round(point, 2) if np.isfinite(point) else None,
            "ratio_interval_95": [round(float(q), 2) for q in np.percentile(finite, [2.5, 97.5])] if len(finite) else None,
            "bootstrap_rounds_with_no_error_in_rest": int(rounds - len(finite))}


def measure(service: Service, sets: dict[str, list], negative_files: dict[str, list[Path]], degrade_count: int) -> dict:
    tasks = list(service.models)
    rng = np.random.default_rng(HELDOUT_SEED)
    report: dict = {"tasks": {}, "router": {}}
    verdicts: dict[tuple[str, str], list[str]] = {}  # (endpoint task, source task or family) -> verdicts
    routed_right, routed_total, auto_refused, auto_total = 0, 0, 0, 0
    gate_share: dict[str, list[float]] = {t: [] for t in tasks}
    for task in tasks:
        card = service.models[task].card
        values, errors, label_values, label_errors = [], [], [], []
        for sample in sets[task]:
            analysis = service.analyse(task, sample.path)
            verdicts.setdefault((task, task), []).append(analysis.gate.verdict)
            timings = analysis.timings_ms
            gate_share[task].append(timings["gate"] / max(timings["total"] - timings["gate"], 1e-9))
            if not analysis.refused:
                values.append(uncertainty(card, analysis.probabilities))
                errors.append(is_error(card, analysis.probabilities, sample.target))
                if card.decision.kind == "each_above_threshold":
                    thresholds = np.array([card.thresholds[label] for label in card.labels])
                    label_values += label_uncertainties(card, analysis.probabilities).tolist()
                    label_errors += ((analysis.probabilities >= thresholds) != np.asarray(sample.target, bool)).tolist()
            if service.router is not None:  # the gate's routed task: the router's choice, turned upright if need be
                routed_total += 1
                routed_right += analysis.gate.routed_task == task
        for other in tasks:
            if other != task:
                for sample in sets[other]:
                    verdicts.setdefault((task, other), []).append(service.analyse(task, sample.path).gate.verdict)
        for family, files in negative_files.items():
            for path in files:
                verdicts.setdefault((task, family), []).append(service.analyse(task, path).gate.verdict)
        degraded = {}
        for kind in DEGRADATIONS:
            if kind == "rotated_90" and not TASKS[task].upright:
                continue  # MURA's films come in any orientation
            flagged = 0
            for sample in sets[task][:degrade_count]:
                image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
                analysis = service.analyse(task, png_bytes(degrade(image, kind, rng)), sample.path.name)
                flagged += analysis.gate.verdict != "ok"
            degraded[kind] = rate(flagged, min(degrade_count, len(sets[task])))
        own = verdicts[(task, task)]
        others = [v for other in tasks if other != task for v in verdicts[(task, other)]]
        negatives_seen = [v for family in negative_files if family not in negatives.FILM_FAMILIES
                          for v in verdicts[(task, family)]]
        films_seen = [v for family in negative_files if family in negatives.FILM_FAMILIES
                      for v in verdicts[(task, family)]]
        report["tasks"][task] = {
            "held_out": {"seed": HELDOUT_SEED, "images": len(sets[task])},
            "passed_ok": rate(own.count("ok"), len(own)),
            "own_verdicts": {v: own.count(v) for v in ("ok", "warn", "refuse")},
            "other_task_flagged": rate(sum(v != "ok" for v in others), len(others)),
            "other_task_flagged_by_source": {other: rate(sum(v != "ok" for v in verdicts[(task, other)]),
                                                         len(verdicts[(task, other)])) for other in tasks if other != task},
            "non_radiographs_refused": rate(negatives_seen.count("refuse"), len(negatives_seen)),
            "non_radiographs_refused_by_family": {f: rate(verdicts[(task, f)].count("refuse"), len(verdicts[(task, f)]))
                                                  for f in negative_files},
            "other_films_flagged": rate(sum(v != "ok" for v in films_seen), len(films_seen)),
            "degraded_flagged": degraded,
            "gate_cost": {"median_share_of_server_time": round(float(np.median(gate_share[task])), 4),
                          "p90_share": round(float(np.percentile(gate_share[task], 90)), 4)},
            "uncertainty": uncertainty_ratio(values, errors, rng),
        }
        if label_values:
            report["tasks"][task]["uncertainty_per_finding"] = uncertainty_ratio(label_values, label_errors, rng)
    if service.router is not None:
        for family, files in negative_files.items():
            for path in files:
                if family not in negatives.FILM_FAMILIES:
                    auto_total += 1
                    auto_refused += service.analyse_auto(path).refused
        report["router"] = {"routing_accuracy": rate(routed_right, routed_total),
                            "auto_non_radiographs_refused": rate(auto_refused, auto_total),
                            "negatives": {"seed": NEGATIVES_SEED, "families": list(negative_files),
                                          "per_family": len(next(iter(negative_files.values()), []))}}
    return report


def cost(service: Service, sets: dict[str, list], repeats: int = 30) -> dict:
    """The gate's server time against the rest of one analysis, on the path the app serves (Keras Grad-CAM when
    TensorFlow is installed, else the ONNX CAM): medians over `repeats` images of each task, in one run."""
    result = {}
    for task in service.models:
        gate, rest = [], []
        for sample in sets[task][:repeats]:
            timings = service.analyse(task, sample.path).timings_ms
            gate.append(timings["gate"])
            rest.append(timings["total"] - timings["gate"])
        result[task] = {"cam_path": service.explainers[task].path, "gate_ms_median": round(float(np.median(gate)), 2),
                        "rest_ms_median": round(float(np.median(rest)), 2),
                        "gate_share": round(float(np.median(gate) / np.median(rest)), 4)}
    return result


def write_cards(models: Path, report: dict, command: str) -> None:
    for task, figures in report["tasks"].items():
        folder = models / task
        card = ModelCard.load(folder)
        card.updated(gate={**figures, "command": command, "measured": time.strftime("%Y-%m-%d")}).save(folder)
    router_card = models / "router" / "card.json"
    if report.get("router") and router_card.exists():
        values = json.loads(router_card.read_text())
        values["heldout"] = {**report["router"], "command": command}
        router_card.write_text(json.dumps(values, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.measure_gate", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--work", type=Path, required=True, help="where the held-out sets are generated (kept)")
    parser.add_argument("--count", type=int, default=300, help="held-out phantoms per task")
    parser.add_argument("--negatives", type=int, default=60, help="images per evaluation family")
    parser.add_argument("--degraded", type=int, default=60, help="phantoms per task and kind of degradation")
    parser.add_argument("--out", type=Path, default=Path("reports/gate.json"))
    parser.add_argument("--cards", action="store_true", help="write each task's figures into its card")
    args = parser.parse_args(argv)
    command = ("python -m train.measure_gate " + f"--models {args.models} --work {args.work} --count {args.count} "
               f"--negatives {args.negatives} --degraded {args.degraded} --out {args.out}"
               + (" --cards" if args.cards else ""))
    started = time.perf_counter()
    sets = held_out(list(TASKS), args.work, args.count)
    negative_root = args.work / "negatives"
    if not (negative_root / negatives.PROVENANCE).exists():
        negatives.generate(negative_root, args.negatives, NEGATIVES_SEED, "eval")
    negative_files = {family: negatives.list_family(negative_root, family)[:args.negatives]
                      for family in negatives.EVAL_FAMILIES}
    onnx = Service(args.models, cam_path="onnx")
    report = measure(onnx, {t: sets[t] for t in onnx.models}, negative_files, args.degraded)
    served = Service(args.models)  # the app's own path (Keras Grad-CAM where TensorFlow is installed)
    report["cost"] = {"served": cost(served, sets), "onnx_cam": cost(onnx, sets)}
    report.update(command=command, seconds=round(time.perf_counter() - started, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.cards:
        write_cards(args.models, report, command)
    for task, figures in report["tasks"].items():
        print(f"{task}: ok {figures['passed_ok']['rate']}, other tasks flagged {figures['other_task_flagged']['rate']}, "
              f"non-radiographs refused {figures['non_radiographs_refused']['rate']}, uncertainty ratio "
              f"{figures['uncertainty']['ratio']}, gate cost {report['cost']['served'][task]['gate_share']}")
    if report.get("router"):
        print(f"router: accuracy {report['router']['routing_accuracy']['rate']}, auto refused non-radiographs "
              f"{report['router']['auto_non_radiographs_refused']['rate']}")
    print(f"-> {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
