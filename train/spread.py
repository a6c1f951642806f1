"""Run-to-run spread of a demo model: its card's training command run again with other seeds, and the mean +- sd
of every test figure over the runs, written into the shipped card (card.spread).

    python -m train.spread knee --data phantoms/knee                      # trains runs/spread/seed<k>/knee
    python -m train.spread knee --summarise                               # card.spread from the finished runs
    python -m train.spread knee --left-out                                # the retrain band against unseen runs

Each run is the card's `training.command` with its `--seed` replaced, its `--data` pointed at --data, and its
output in runs/spread/seed<k>/<task>; a run whose folder already holds a card, or whose seed the card's spread
already records (with the maps step, below, where the card has one), is not trained again, so a spread that
outlives one sitting resumes where it stopped (the card keeps every finished run's figures; the run folders need
not survive). A run folder holding an unfinished run's
checkpoint (train.checkpoint) is resumed with --resume; --pause-after-minutes M pauses a run before a sitting ends:

    python -m train.spread chest14 --data phantoms/chest14 --seeds 0 1 2 --pause-after-minutes 140   # exits 75

A card with map settings (train.maps: its `maps` section) shipped the figures its maps command measured, so
each run is given that command too, on its own folder (--models ROOT/seed<k>), with the set the settings were
chosen on regenerated once from the card's record (ROOT/maps-data): a run's figures count in the spread only
after that step, as the retrain test's do (tests/test_slow.py). A finished run without it gets just that step:

    python -m train.spread chest14 --data phantoms/chest14 --seeds 0 1 2         # the maps step on seeds 0-2

The seeds default to the first three that are not the card's own: the slow retrain test retrains the card's
seed, and on the CPU type a spread run was made on, a run of that seed would be the same model bit for bit, so
the band would already hold the retrain it is meant to test. (Chest14's spread, seeds 0-2, includes its card's
seed 1; the slow test leaves such a run out of its band: without_the_retrains_twin.)

The test split is the dataset's own (it does not depend on the seed, which only carves validation and orders
training), so every run is scored on the same images.

These are slow runs (a demo model takes 17-60 minutes on a 2-core CPU): outside CI, `pytest -m slow` holds the
retrain band that comes from them (tests/test_slow.py). Results are bit-reproducible for one CPU type and seed,
not across CPU types: the card records each run's CPU flags.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from radiograph.cards import ModelCard, ModelFileError, by_dotted_name, dotted, sha256_of
from radiograph.registry import TASKS
from train.checkpoint import PAUSED_EXIT, Checkpoint, cpu_flags, recipe, without_options
from train.phantoms import PROVENANCE_FILE

SPREAD_ROOT = Path("runs/spread")
# The rule that chose each shipped run, as the project's history (git log) shows it: never "the best of several
# seeds"; but recipes were revised between runs and some revisions were reported with their test figures
SHIPPED_RULE = ("the run the card's command made, shipped as it came: one run per recipe, no seed chosen among "
                "several. The recipe itself (backbone, size, epochs, weights, selection rule) was revised over the "
                "project's history and some revisions were reported with test figures (git log), so the shipped "
                "figures may sit high in the spread; the fresh-set figures are the check")


def check_starting_weights(card: ModelCard, root: Path = Path(".")) -> None:
    """Refuse to run a card's command whose starting weights (--weights, a file of another model: the card's
    training.weights_sha256) are no longer the file the card records: the command would make another model."""
    expected, weights = card.training.get("weights_sha256"), card.training.get("weights")
    if not expected:
        return
    path = root / weights
    actual = sha256_of(path) if path.is_file() else None
    if actual != expected:
        now = f"its sha256 is now {actual}" if actual else "it is missing"
        raise SystemExit(f"error: {card.task}'s card was trained from {weights} (sha256 {expected}) and {now}, so "
                         f"the card's command would not make this model; restore the file the card names "
                         f"(git log -- {weights}) or retrain {card.task} from the new one")


def run_command(card: ModelCard, data: Path, seed: int, out: Path, pause_after_minutes: float | None = None) \
        -> list[str]:
    """The card's training command with this seed, data and output folder; --resume where the folder holds an
    unfinished run's checkpoint (train.checkpoint), else --overwrite. Refused where the card's starting weights
    changed (check_starting_weights)."""
    words = shlex.split(card.training["command"])
    if words[:3] != ["python", "-m", "train"]:
        raise SystemExit(f"error: the card's training command is not `python -m train ...`: {card.training['command']}")
    check_starting_weights(card)
    result = [sys.executable, "-m", "train", *without_options(words[3:], {"--seed": 1, "--data": 1, "--out": 1,
                                                                         "--report": 1})]
    sitting = ["--resume"] if Checkpoint(out).exists() else ["--overwrite"]
    if pause_after_minutes is not None:
        sitting += ["--pause-after-minutes", f"{pause_after_minutes:g}"]
    return result + ["--data", str(data), "--seed", str(seed), "--out", str(out), "--report", str(out / "report"),
                     *sitting]


def maps_command(card: ModelCard, data: Path, out: Path, choose_on: Path | None) -> list[str]:
    """The card's maps command (train.maps) on the run in `out` (ROOT/seed<k>/<task>), with this data, its report
    in the run folder and, where the settings were chosen on another set, that set regenerated (`choose_on`)."""
    words = shlex.split(card.maps["command"])
    if words[:3] != ["python", "-m", "train.maps"]:
        raise SystemExit(f"error: the card's maps command is not `python -m train.maps ...`: {card.maps['command']}")
    chooses_on_another_set = "--choose-on" in words
    if chooses_on_another_set and choose_on is None:
        raise SystemExit("error: the card's maps command chooses on another set (--choose-on) but its record "
                         "(maps.chosen_on_data.command) is missing")
    rest = without_options(words[3:], {"--data": 1, "--choose-on": 1, "--models": 1, "--report": 1})
    return [sys.executable, "-m", "train.maps", *rest, "--data", str(data),
            *(["--choose-on", str(choose_on)] if chooses_on_another_set else []),
            "--models", str(out.parent), "--report", str(out / "report")]


def chooser_set(card: ModelCard, root: Path) -> tuple[list[str] | None, Path | None]:
    """(the command that regenerates the set the card's map settings were chosen on, into ROOT/maps-data, or None
    where that folder already holds it; the set's folder), or (None, None) where the card chose on validation."""
    record = (card.maps or {}).get("chosen_on_data") or {}
    if "--choose-on" not in shlex.split((card.maps or {}).get("command", "")) or "command" not in record:
        return None, None
    words = shlex.split(record["command"])
    if words[:3] != ["python", "-m", "train.phantoms"]:
        raise SystemExit(f"error: the set the map settings were chosen on was not made by train.phantoms: "
                         f"{record['command']}")
    arguments = without_options(words[3:], {"--out": 1})
    folder = root / "maps-data" / arguments[0]
    made = folder / PROVENANCE_FILE
    same = made.is_file() and all(json.loads(made.read_text()).get(key) == record.get(key)
                                  for key in ("task", "count", "seed", "options"))
    return (None if same else [sys.executable, "-m", "train.phantoms", *arguments, "--out", str(root / "maps-data")],
            folder)


def run_is_finished(card: ModelCard, out: Path, recorded: dict | None) -> bool:
    """A run counts once it is trained and, for a card with map settings, given the card's maps step: its folder's
    card has a `maps` section, or the shipped card's spread records the run with its maps."""
    if (out / "card.json").exists():
        return card.maps is None or ModelCard.load(out).maps is not None
    return recorded is not None and (card.maps is None or "maps" in recorded)


def recorded_command(command: list[str]) -> str:
    """A run's command as its record gives it: `python -m train ...` without the sitting options (train.checkpoint
    .recipe), not this interpreter's path."""
    return shlex.join(["python", *recipe(command[1:])])


def figures_of(card: ModelCard) -> dict:
    """Every figure of the card's metrics, nested ones named with dots (per_class_auc.Healthy), as the slow retrain
    test names them (radiograph.cards.dotted); tables (confusion matrices) are not figures."""
    return dotted(card.metrics)


def summarise(task: str, models: Path, root: Path) -> dict:
    """card.spread of the shipped model from every finished run under root/seed*/<task> and the runs its card
    records; where the card has map settings, runs without the maps step are left out (and named)."""
    shipped = ModelCard.load(models / task)
    recorded = {run["seed"]: run for run in (shipped.spread or {}).get("runs", [])}  # earlier sittings' runs
    runs = []
    for folder in sorted(root.glob(f"seed*/{task}"), key=lambda p: int(p.parent.name[4:])):
        if not (folder / "card.json").exists():
            continue
        card = ModelCard.load(folder)
        extra = json.loads((folder / "spread-run.json").read_text()) if (folder / "spread-run.json").exists() else {}
        runs.append({"seed": card.training.get("seed"), "folder": str(folder), "figures": figures_of(card),
                     "epochs_run": card.training.get("epochs_run"),
                     "kept_epoch": (card.training.get("kept") or {}).get("kept_epoch"),
                     "training_seconds": card.training.get("training_seconds"),
                     **({"maps": {key: card.maps.get(key) for key in ("mirror_offset", "stitch_shift")}}
                        if card.maps else {}), **extra})
    found = {run["seed"] for run in runs}
    runs = sorted(runs + [run for seed, run in recorded.items() if seed not in found], key=lambda run: run["seed"])
    before_maps = [run["seed"] for run in runs if shipped.maps is not None and "maps" not in run]
    runs = [run for run in runs if run["seed"] not in before_maps]
    if before_maps:  # the shipped figures come after the maps step; so must every run's
        print(f"{task}: seeds {before_maps} left out: their figures come before the card's maps step "
              f"(python -m train.spread {task} --data ... --seeds {' '.join(map(str, before_maps))})", file=sys.stderr)
    if not runs:
        raise SystemExit(f"error: no finished run of {task} under {root} or in its card")
    summary, position = {}, {}  # with one run, the card keeps it (a later sitting adds the others) and no spread
    for name, value in figures_of(shipped).items() if len(runs) >= 2 else ():
        values = [run["figures"][name] for run in runs if name in run["figures"]]
        if len(values) < 2:
            continue
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        summary[name] = {"mean": mean, "sd": sd, "n": len(values), "min": min(values), "max": max(values)}
        position[name] = {"shipped": value, "sd_from_mean": (value - mean) / sd if sd > 0 else 0.0,
                          "runs_below": sum(v < value for v in values)}
    return {"runs_count": len(runs), "runs": runs, "summary": summary, "shipped": position,
            "shipped_rule": SHIPPED_RULE, "shipped_seed": shipped.training.get("seed"),
            "command": f"python -m train.spread {task} --summarise", "measured_on": cpu_flags()}


def default_seeds(card: ModelCard, count: int = 3) -> list[int]:
    """The first `count` seeds that are not the card's: runs the slow retrain test's retrain does not repeat."""
    return [seed for seed in range(count + 1) if seed != card.training.get("seed")][:count]


def without_the_retrains_twin(card: dict, cpu: str) -> dict:
    """The card with its spread's runs at the card's own seed on this CPU type (`cpu`, train.checkpoint.cpu_flags)
    left out: the slow retrain test on this CPU repeats such a run bit for bit, so a band that counts it has
    already seen the retrain. Runs at other seeds, or on another CPU type (another model), stay."""
    spread = card.get("spread") or {}
    seed = (card.get("training") or {}).get("seed")
    runs = [run for run in spread.get("runs", []) if not (run.get("seed") == seed and run.get("cpu") == cpu)]
    return {**card, "spread": {**spread, "runs": runs}} if card.get("spread") else card


RETRAIN_LEVEL = 0.95  # the chance that an unseen run of the recipe puts every headline figure inside its band


def retrain_band(card: dict, name: str, family: int = 1, level: float = RETRAIN_LEVEL) \
        -> tuple[float, float] | None:
    """Where a run of the card's command that the card has not seen should put the figure `name`: a Student-t
    prediction interval over the n runs the card records (its spread's runs and the shipped run, one more run of
    the same recipe), mean +- t(n-1, 1 - (1 - level) / 2 / family) * sd * sqrt(1 + 1/n), widened to the figure's
    95% test interval where that is wider; the interval alone where the card records no rerun; None when it has
    neither (a confusion count). `family` is the number of figures checked together: each band's level is
    Bonferroni-corrected so that all of them hold an unseen run with chance `level` (retrain_bands).

    The test interval stays as a floor because a figure every run got alike (a share all of them got perfect,
    sd 0) would otherwise give a band of one point. Under the model behind the t interval (a figure normal over
    runs), the band holds the next run with the stated chance; the measured runs themselves are always inside,
    since none of n values lies more than (n-1)/sqrt(n) sd from their mean (1.5 for four)."""
    figure = dotted(card["metrics"]).get(name)
    interval = by_dotted_name((card.get("intervals") or {}).get("intervals"), name)
    runs = [run["figures"][name] for run in (card.get("spread") or {}).get("runs", [])
            if math.isfinite(run["figures"].get(name, math.nan))]  # an AUC of a class a split lacks is NaN
    if figure is None or not (runs or interval):
        return None
    low, high = (interval or (figure, figure))
    if runs:  # one rerun and the shipped run already make an sd
        from scipy.stats import t

        values = [*runs, figure]
        n, mean, sd = len(values), statistics.fmean(values), statistics.stdev(values)
        half = float(t.ppf(1 - (1 - level) / 2 / family, n - 1)) * sd * math.sqrt(1 + 1 / n)
        low, high = min(low, mean - half), max(high, mean + half)
    return low, high


def retrain_bands(card: dict) -> dict[str, tuple[float, float]]:
    """The bands the slow retrain test holds: the task's headline figures (radiograph.registry: `headline`),
    corrected for their number, so that an unseen run of the recipe misses one with chance 1 - RETRAIN_LEVEL.
    Every other figure gets its own band at that level (figure_bands) and is reported, not asserted: chest14
    has 29 figures, 14 of them F1s at thresholds chosen on about 230 validation films, and 29 bands at 95%
    each fail an unseen run more often than not (docs/figures.md)."""
    names = TASKS[card["task"]].headline
    return {name: band for name in names if (band := retrain_band(card, name, family=len(names))) is not None}


def figure_bands(card: dict) -> dict[str, tuple[float, float]]:
    """Every figure's band at RETRAIN_LEVEL on its own, the headline figures included (uncorrected)."""
    return {name: band for name in dotted(card["metrics"]) if (band := retrain_band(card, name)) is not None}


def reported_bands(card: dict) -> dict[str, tuple[float, float]]:
    """The figures the slow retrain test reports and does not assert: every one but the headline figures, each
    with its own band (figure_bands)."""
    headline = TASKS[card["task"]].headline
    return {name: band for name, band in figure_bands(card).items() if name not in headline}


def outside(bands: dict[str, tuple[float, float]], figures: dict) -> list[str]:
    """The figures outside their bands, each as `name value outside low-high`; a figure that is missing or not
    a number (NaN) is outside too: a retrained headline figure that cannot be computed is a failure."""
    return [f"{name} {figures.get(name, math.nan):.4f} outside {low:.4f}-{high:.4f}"
            for name, (low, high) in bands.items() if not low <= figures.get(name, math.nan) <= high]


def left_out_misses(card: dict) -> list[tuple[dict, list[str], list[str]]]:
    """The band rule checked against runs it has not seen: each spread run in turn left out of the card and held
    to the bands of the rest (the shipped run included). (run, the headline figures it misses, the other figures
    outside their own bands) per run: how often the slow retrain test would fail a run it had not seen, and how
    often a figure it only reports would lie outside."""
    runs, checked = (card.get("spread") or {}).get("runs", []), []
    for index, run in enumerate(runs):
        rest = {**card, "spread": {**card["spread"], "runs": runs[:index] + runs[index + 1:]}}
        headline = retrain_bands(rest)
        others = {name: band for name, band in reported_bands(rest).items()
                  if math.isfinite(run["figures"].get(name, math.nan))}
        checked.append((run, outside(headline, run["figures"]), outside(others, run["figures"])))
    return checked


def run_step(command: list[str], what: str) -> None:
    print("running: " + shlex.join(command), file=sys.stderr, flush=True)
    code = subprocess.run(command).returncode
    if code:
        raise SystemExit(f"error: {what} failed (exit {code}): {shlex.join(command)}")


def apply_maps(card: ModelCard, data: Path, out: Path, root: Path) -> None:
    """The card's maps step on the trained run in `out`; its time goes into the run's spread-run.json."""
    chooser, choose_on = chooser_set(card, root)
    if chooser:
        run_step(chooser, f"{out}'s maps step")
    command = maps_command(card, data, out, choose_on)
    start = time.time()
    run_step(command, f"{out}'s maps step")
    record = out / "spread-run.json"
    extra = json.loads(record.read_text()) if record.exists() else {}
    record.write_text(json.dumps({**extra, "maps_seconds": time.time() - start,
                                  "maps_command": recorded_command(command)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.spread", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--data", type=Path, help="the card's dataset (its data.command makes the phantoms)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the first three that are not the card's")
    parser.add_argument("--models", type=Path, default=Path("models"), help="the shipped model: MODELS/<task>")
    parser.add_argument("--root", type=Path, default=SPREAD_ROOT, help=f"runs go to ROOT/seed<k>/<task> "
                        f"(default {SPREAD_ROOT})")
    parser.add_argument("--summarise", action="store_true", help="write card.spread from the finished runs")
    parser.add_argument("--left-out", action="store_true",
                        help="hold each recorded run to the retrain bands of the others (left_out_misses) and print "
                             "the figures outside them; trains nothing, writes nothing")
    parser.add_argument("--pause-after-minutes", type=float, metavar="M",
                        help="pause each run before its training passes M minutes in this sitting (its checkpoint "
                             f"kept); the same command later resumes it. Exits {PAUSED_EXIT} when paused")
    args = parser.parse_args(argv)
    try:
        card = ModelCard.load(args.models / args.task)
    except ModelFileError as error:
        parser.error(f"{error} (--models names the folder that holds <task>/card.json, default models)")
    if args.left_out:
        checked = left_out_misses(card.to_dict())
        for run, misses, others in checked:
            print(f"seed {run['seed']}: {len(misses)} headline figure(s) outside the others' bands"
                  + "".join(f"\n  {miss}" for miss in misses)
                  + (f"\n  reported only, {len(others)} other figure(s) outside their own 95% bands:"
                     + "".join(f"\n    {other}" for other in others) if others else ""))
        failing = sum(bool(misses) for _, misses, _ in checked)
        print(f"{args.task}: {failing} of {len(checked)} runs would fail the slow retrain test had it not seen them "
              f"(it holds {', '.join(TASKS[args.task].headline)} at {RETRAIN_LEVEL:.0%} together)")
        return 0
    args.seeds = args.seeds or default_seeds(card)
    if not args.summarise:
        if not args.data:
            parser.error("--data is needed to train (or give --summarise)")
        recorded = {run["seed"]: run for run in (card.spread or {}).get("runs", [])}
        for seed in args.seeds:
            out = args.root / f"seed{seed}" / args.task
            if run_is_finished(card, out, recorded.get(seed)):
                print(f"seed {seed}: done already ({out} or the card's spread)", file=sys.stderr)
                continue
            if (out / "card.json").exists():  # trained, without the maps step yet
                apply_maps(card, args.data, out, args.root)
                continue
            command = run_command(card, args.data, seed, out, args.pause_after_minutes)
            print("running: " + shlex.join(command), file=sys.stderr, flush=True)
            start = time.time()
            code = subprocess.run(command).returncode
            if code == PAUSED_EXIT:
                print(f"seed {seed}: paused, its checkpoint in {Checkpoint(out).folder}; run this command again "
                      f"to resume it", file=sys.stderr)
                return PAUSED_EXIT
            if code:
                raise SystemExit(f"error: seed {seed}'s training failed (exit {code}): {shlex.join(command)}")
            sittings = ModelCard.load(out).training.get("sittings") or [{"cpu": cpu_flags()}]
            (out / "spread-run.json").write_text(json.dumps({  # the wall time of a run in one sitting only
                "cpu": ", ".join(sorted({sitting["cpu"] for sitting in sittings})), "sittings": len(sittings),
                **({"wall_seconds": time.time() - start} if len(sittings) == 1 else {}),
                "command": recorded_command(command)}))
            if card.maps is not None:
                apply_maps(card, args.data, out, args.root)
    spread = summarise(args.task, args.models, args.root)
    card.spread = spread
    card.save(args.models / args.task)
    print(json.dumps({name: f"{v['mean']:.4f} +- {v['sd']:.4f} (n={v['n']})" for name, v in
                      spread["summary"].items()}, indent=2) if spread["summary"] else
          f"{spread['runs_count']} run recorded in the card; a spread needs at least 2 (3 to report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
