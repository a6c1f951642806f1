"""Class-activation-map settings of a trained model, chosen on boxes it never trained on.

    python -m train.phantoms chest14 --out phantoms/maps --count 1000 --seed 1   # fresh phantoms, never trained on
    python -m train.maps chest14 --data phantoms/chest14 --choose-on phantoms/maps/chest14 --stitch
    python -m export chest14 --fp16 --data phantoms/chest14                      # the graph changed: export again
    python -m train.evaluate chest14 --data phantoms/chest14 --localisation      # and measure the maps on test
    python -m train.maps mura --data /data/mura                 # real data: chosen on its validation split

Two settings change the map in a model's `features` output; neither adds a weight, so they are set on a
trained model:

  mirror offset  (mirror-averaged models) which columns of the two views' maps MirrorAverage pairs
                 (radiograph.layers). The logits are the same whatever the offset, so only the maps move.
  --stitch       also try shift-and-stitch: the network also sees the image moved by a quarter of its stride
                 each way, and the four maps interleave into one of half the stride (four times the compute).
                 The logits become the mean of the four views', so the temperature and thresholds change.

Every candidate (each offset in --offsets, without and, with --stitch, with stitching) is scored on boxes the
model never trained on: the validation split of --data, or with --choose-on every boxed image of another
dataset folder (a fresh phantom set: a validation split's few hundred findings leave the candidates within
noise of each other). The figure is the one `python -m train --select-by pointing_game` keeps epochs by
(the pointing game; for multi-label heads its mean over classes). The best candidate (ties: no stitching,
then the smaller offset) replaces the model's settings as they were (offset 0 and no stitching for a model
fresh from training) only where it beats them by more than their figure's standard error; otherwise only
the card changes, recording the candidates.

A new setting rebuilds the model with the trained weights; its temperature is taken out, fitted again on
validation and folded back in, and thresholds and test metrics are measured again (for an offset alone
they come out as they were). model.keras, the card (cam_grid, thresholds, temperature, metrics,
calibration, and `maps`: the settings, every candidate's figure, the data chosen on and this command) and
the report are rewritten. The previous ONNX files no longer match the model and are removed with their card
entries and the card's localisation figures: export again, then measure. Test boxes are never read.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from radiograph.geometry import feature_grid  # noqa: E402
from radiograph.cards import ModelCard  # noqa: E402
from radiograph.inference import VARIANTS  # noqa: E402
from radiograph.layers import load_model  # noqa: E402
from radiograph.registry import TASKS, get_task  # noqa: E402
from train.backbones import build_model, save_model  # noqa: E402
from train.datasets import read_dataset  # noqa: E402
from train.evaluate import (calibrate_and_evaluate, fold_temperature, predict_logits,  # noqa: E402
                            temperature_record, write_report)
from train.phantoms import provenance  # noqa: E402
from train.selection import ValidationPointingGame  # noqa: E402

DEFAULT_OFFSETS = (0, 1, 2, 3, 4, 5, 6)


def with_maps(spec, card: ModelCard, model, mirror_offset: int = 0, stitch_shift: int = 0):
    """`model` rebuilt with these map settings (a model of the card's backbone and input; same weights)."""
    variant = build_model(spec, card.backbone, card.size, None,
                          dropout_rate=model.get_layer("dropout").rate, mirror=card.mirror_average,
                          mirror_offset=mirror_offset, stitch_shift=stitch_shift)
    variant.set_weights(model.get_weights())
    return variant


def stitch_shift_of(spec, card: ModelCard, model) -> int:
    """A quarter of the network's own stride (the map's stride without stitching), in input pixels."""
    stride = feature_grid(with_maps(spec, card, model).get_config()).stride
    if stride[0] != stride[1] or stride[0] % 4:
        raise ValueError(f"shift-and-stitch needs a square stride divisible by 4; this model's is {stride}")
    return int(stride[0]) // 4


def choose(spec, card: ModelCard, model, offsets, shifts, judge: ValidationPointingGame, current: tuple[int, int]):
    """(offset, stitch shift, [candidate records]): every candidate's figure; the best replaces the `current`
    settings only where it beats them by more than their figure's standard error (ties: the cheaper)."""
    candidates = []
    for shift in shifts:
        for offset in offsets:
            summary = judge.summary(with_maps(spec, card, model, offset, shift))
            figure, error = judge.figure(summary), judge.standard_error(summary)
            candidates.append({"mirror_offset": offset, "stitch_shift": shift, "pointing_game": figure,
                               "standard_error": error})
            print(f"  mirror offset {offset}, stitch shift {shift}: pointing game {figure:.3f} (+-{error:.3f})",
                  flush=True)
    best = max(candidates, key=lambda c: (c["pointing_game"], -c["stitch_shift"], -c["mirror_offset"]))
    if len(offsets) > 1 and best["mirror_offset"] == max(offsets):
        print(f"  note: the best offset is the largest tried ({best['mirror_offset']}); a larger one may be better "
              "still (--offsets)", flush=True)
    (now,) = [c for c in candidates if (c["mirror_offset"], c["stitch_shift"]) == current]
    if best["pointing_game"] <= now["pointing_game"] + now["standard_error"]:
        print(f"  no candidate beats the current settings (offset {current[0]}, stitch shift {current[1]}) by more "
              "than their standard error: kept as they are", flush=True)
        best = now
    return best["mirror_offset"], best["stitch_shift"], candidates


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m train.maps", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--data", required=True, type=Path,
                        help="the dataset the model was trained on (without --choose-on its validation boxes "
                             "choose; its test split measures)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="models root: the model is MODELS/<task>")
    parser.add_argument("--offsets", type=int, nargs="+", help="mirror offsets to try (mirror-averaged models; "
                                                               f"default {' '.join(map(str, DEFAULT_OFFSETS))})")
    parser.add_argument("--stitch", action="store_true", help="also try shift-and-stitch (a map of half the "
                                                              "stride, four times the compute)")
    parser.add_argument("--choose-on", type=Path, help="choose on every boxed image of this dataset folder (one the "
                                                       "model never trained on), not --data's validation split")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (each is 2-8 network views)")
    parser.add_argument("--report", type=Path, help="report folder (default reports/<task>)")
    return parser, parser.parse_args(argv)


def validated(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """(task, model folder, card, offsets to try) once the folder, the card and the flags are checked."""
    spec = get_task(args.task)
    folder = args.models / spec.id
    if not (folder / "model.keras").is_file() or not (folder / "card.json").is_file():
        parser.error(f"{folder} has no model.keras and card.json; train first: python -m train {spec.id} --data DIR")
    card = ModelCard.load(folder)
    if card.ensemble:
        parser.error(f"{folder} holds no single-backbone model (an ensemble): map settings apply to one network")
    offsets = args.offsets or (DEFAULT_OFFSETS if card.mirror_average else (0,))
    if not card.mirror_average and any(offsets):
        parser.error("--offsets applies to mirror-averaged models (python -m train --mirror-average); this one is not")
    if min(offsets) < 0:
        parser.error(f"--offsets must be 0 or more, got {offsets}")
    if args.choose_on and args.choose_on.resolve() == args.data.resolve():
        parser.error("--choose-on must be a dataset the model never trained on, not --data itself (whose "
                     "validation split is used without --choose-on)")
    return spec, folder, card, offsets


def prepare(parser: argparse.ArgumentParser, args: argparse.Namespace, spec, folder: Path, card: ModelCard):
    """(model with raw logits, dataset index, the judge of the candidates, stitch shifts to try, the dataset
    chosen on (None: --data's validation split), where that is in words)."""
    model = load_model(folder / "model.keras")
    fold_temperature(model, 1.0 / np.asarray(card.temperature["values"], np.float32))  # back to raw logits
    index = read_dataset(spec.id, args.data, card.training["val_fraction"], card.training["seed"])
    chooser = read_dataset(spec.id, args.choose_on) if args.choose_on else None
    chosen_on = [s for split in chooser.splits.values() for s in split] if chooser else index.splits["val"]
    try:
        judge = ValidationPointingGame(spec, chooser.boxes if chooser else index.boxes, chosen_on, card.size,
                                       args.batch_size)
        shifts = (0, stitch_shift_of(spec, card, model)) if args.stitch else (0,)
    except ValueError as error:
        parser.error(str(error).replace("--select-by pointing_game", "python -m train.maps"))
    where = f"every boxed image of {args.choose_on}" if chooser else f"the validation split of {args.data}"
    return model, index, judge, shifts, chooser, where


def settings_record(spec, card: ModelCard, argv: list[str], args, judge: ValidationPointingGame, chooser, where: str,
                    offset: int, shift: int, candidates: list[dict]) -> dict:
    """The card's `maps` section: the settings, how they were chosen, every candidate's figure and the command."""
    return {"mirror_offset": offset if card.mirror_average else None, "stitch_shift": shift,
            "chosen_on": f"{len(judge.findings)} boxed findings, {where}: pointing game"
                         + (" (mean over classes)" if spec.multi_label else ""),
            "rule": "the best candidate, where it beats the settings before by more than their standard error "
                    "(ties: no stitching, then the smaller offset)",
            **({"chosen_on_data": provenance(args.choose_on, chooser.root)} if chooser else {}),
            "candidates": candidates, "command": "python -m train.maps " + shlex.join(argv)}


def rewrite(spec, card: ModelCard, folder: Path, chosen, index, args, record: dict) -> ModelCard:
    """Calibrate and measure the rebuilt model again, save it, rewrite the report and the card; the ONNX files of
    the previous graph are removed."""
    val, test, size = index.splits["val"], index.splits["test"], card.size
    result = calibrate_and_evaluate(spec, predict_logits(chosen, val, size, args.batch_size), val,
                                    predict_logits(chosen, test, size, args.batch_size), test)
    fold_temperature(chosen, np.asarray(result["temperature"], np.float32))
    save_model(chosen, folder / "model.keras")
    report = write_report(spec, args.report or Path("reports") / spec.id, result, test, folder / "history.csv",
                          card.training.get("kept", {}).get("kept_epoch"))
    card = card.updated(
        model_version=f"{spec.id}-{card.backbone}-{datetime.now(timezone.utc):%Y%m%d}",
        cam_grid=feature_grid(chosen.get_config()).as_card(), maps=record, thresholds=result["thresholds"],
        temperature=temperature_record(spec, result),
        metrics={"split": "test", **result["metrics"]}, calibration=result["expected_calibration_error"],
        training={**card.training, "thresholds": result["threshold_rule"]},
        reports=[str(p) for p in report], export={}, localisation=None)
    for stale in VARIANTS.values():  # exported from the previous graph: export again
        (folder / stale).unlink(missing_ok=True)
        card.files.pop(stale, None)
    card.record_file(folder, "model.keras")
    card.save(folder)
    return card


def main(argv: list[str] | None = None) -> None:
    import train.objectives  # noqa: F401 - registers the custom loss for loading

    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse(argv)
    spec, folder, card, offsets = validated(parser, args)
    model, index, judge, shifts, chooser, where = prepare(parser, args, spec, folder, card)
    print(f"{spec.id}: choosing on {len(judge.findings)} boxed findings, {where}", flush=True)
    previous = card.maps or {}
    current = (previous.get("mirror_offset") or 0, previous.get("stitch_shift", 0))
    offset, shift, candidates = choose(spec, card, model, sorted({*offsets, current[0]}),
                                       sorted({*shifts, current[1]}), judge, current)
    record = settings_record(spec, card, argv, args, judge, chooser, where, offset, shift, candidates)
    if (offset, shift) == current:  # nothing to rebuild: the card records the choice, the files stay
        card.maps = record
        card.save(folder)
        print(f"{spec.id}: map settings kept (offset {offset}, stitch shift {shift}); {folder / 'card.json'} records "
              "why")
        return
    card = rewrite(spec, card, folder, with_maps(spec, card, model, offset, shift), index, args, record)
    print(json.dumps({"mirror_offset": offset, "stitch_shift": shift, **card.metrics}, indent=2))
    print(f"wrote {folder / 'model.keras'}; next: python -m export {spec.id} --fp16 --data {args.data}, then "
          f"python -m train.evaluate {spec.id} --data {args.data} --localisation")


if __name__ == "__main__":
    main()
