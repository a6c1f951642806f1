"""Figures with their noise: bootstrap intervals by patient (train.intervals), the run-to-run spread's bookkeeping
(train.spread), and how a card shows both."""
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from radiograph.cards import ModelCard, card_markdown
from radiograph.registry import TASKS
from train.datasets import Sample
from train.intervals import bootstrap, exact_at_bounds
from train.spread import chooser_set, default_seeds, figure_bands, left_out_misses, maps_command, outside, \
    recorded_command, reported_bands, retrain_band, retrain_bands, run_command, run_is_finished, summarise, \
    without_the_retrains_twin


def knee_case(patients: int, accuracy: float, seed: int = 0):
    """Two knees per patient, same grade; predictions right with probability `accuracy`."""
    rng = np.random.default_rng(seed)
    spec = TASKS["knee"]
    grades = np.repeat(rng.integers(0, 5, patients), 2)
    right = rng.random(len(grades)) < accuracy
    predicted = np.where(right, grades, (grades + rng.integers(1, 5, len(grades))) % 5)
    targets, probabilities = np.eye(5)[grades], 0.1 + 0.5 * np.eye(5)[predicted]
    probabilities /= probabilities.sum(1, keepdims=True)
    samples = [Sample(Path(f"p{i // 2}_{i % 2}.png"), tuple(t.astype(int)), f"p{i // 2}") for i, t in enumerate(targets)]
    return spec, targets, probabilities, samples


def test_an_interval_holds_its_figure_and_narrows_with_more_patients():
    spec, *case = knee_case(60, 0.8)
    small = bootstrap(spec, *case, thresholds=[0.5] * 5, replicates=150)
    spec, *case = knee_case(600, 0.8)
    large = bootstrap(spec, *case, thresholds=[0.5] * 5, replicates=150)
    for result in (small, large):
        low, high = result["intervals"]["accuracy"]
        assert low <= result["figures"]["accuracy"] <= high
        assert low < 0.8 < high or abs(result["figures"]["accuracy"] - 0.8) > 0.05
    width = {name: r["intervals"]["accuracy"][1] - r["intervals"]["accuracy"][0] for name, r in
             (("small", small), ("large", large))}
    assert width["large"] < 0.6 * width["small"]  # about 1/sqrt(10) of it
    assert set(large["intervals"]["per_class_auc"]) == set(spec.labels)  # per class, too


def test_perfect_predictions_have_a_point_interval_and_the_seed_fixes_the_draws():
    spec, targets, _, samples = knee_case(40, 1.0)
    exact = bootstrap(spec, targets, targets * 0.9 + 0.02, samples, [0.5] * 5, replicates=100)
    assert exact["intervals"]["balanced_accuracy"] == [1.0, 1.0]
    spec, *case = knee_case(40, 0.7)
    assert bootstrap(spec, *case, [0.5] * 5, replicates=50, seed=4) == bootstrap(spec, *case, [0.5] * 5,
                                                                                   replicates=50, seed=4)


def mura_case(patients: int, rng):
    """Two studies per patient, three views per study, each study one of the 14 body part x normal/abnormal labels."""
    samples, targets = [], []
    for patient in range(patients):
        for study in range(2):
            label = rng.integers(0, 14)
            for view in range(3):
                samples.append(Sample(Path(f"p{patient}/s{study}/v{view}.png"), tuple(np.eye(14, dtype=int)[label]),
                                      f"p{patient}", f"p{patient}/s{study}"))
                targets.append(np.eye(14)[label])
    return TASKS["mura"], np.array(targets), samples


def test_patients_are_resampled_whole_and_each_drawn_copy_is_its_own_study():
    """MURA: a patient's studies go together, and a patient drawn twice counts as two patients' studies (merged,
    the study count and so the study figures would shrink)."""
    rng = np.random.default_rng(2)
    spec, targets, samples = mura_case(30, rng)
    probabilities = 0.7 * targets + 0.3 * rng.dirichlet(np.ones(14), len(targets))
    counted = []
    import train.intervals as intervals

    original = intervals.figures

    def counting(spec_, t, p, drawn, thresholds):
        counted.append((len({s.study for s in drawn}), len({s.patient for s in drawn}), len(drawn)))
        return original(spec_, t, p, drawn, thresholds)

    intervals.figures = counting
    try:
        result = bootstrap(spec, targets, probabilities, samples, [0.5] * 14, replicates=20)
    finally:
        intervals.figures = original
    assert all(studies == 60 and images == 180 for studies, _, images in counted[1:])  # 30 patients x 2 studies
    assert any(patients < 30 for _, patients, _ in counted[1:])  # some patient was drawn twice
    low, high = result["intervals"]["study_auc"]
    assert low <= result["figures"]["study_auc"] <= high


def test_a_share_of_0_or_1_gets_its_exact_binomial_interval_over_its_images_or_studies():
    """A perfect share's bootstrap interval is a point; its Clopper-Pearson interval is (0.025^(1/n), 1)."""
    spec, targets, _, samples = knee_case(40, 1.0)
    result = bootstrap(spec, targets, targets * 0.9 + 0.02, samples, [0.5] * 5, replicates=50)
    exact = exact_at_bounds(spec, targets, samples, result)
    assert exact == {"accuracy": {"successes": 80, "trials": 80}}  # images, not patients
    assert result["intervals"]["accuracy"] == pytest.approx([0.025 ** (1 / 80), 1.0])
    assert result["intervals"]["balanced_accuracy"] == [1.0, 1.0]  # not a share of trials: the bootstrap's point

    rng = np.random.default_rng(5)
    spec, targets, samples = mura_case(60, rng)
    probabilities = targets.copy()
    hand_abnormal = [i for i, s in enumerate(samples) if spec.labels[int(np.argmax(s.target))] == "hand_abnormal"]
    probabilities[hand_abnormal[:3]] = np.eye(14)[spec.labels.index("hand_normal")]  # one hand study called normal
    result = bootstrap(spec, targets, probabilities, samples, [0.5] * 14, replicates=50)
    exact = exact_at_bounds(spec, targets, samples, result)
    parts = result["intervals"]["body_part_accuracy"]["study_accuracy_per_part"]
    per_part_studies = {}
    for sample in samples[::3]:
        part = spec.labels[int(np.argmax(sample.target))].rsplit("_", 1)[0]
        per_part_studies[part] = per_part_studies.get(part, 0) + 1
    assert result["figures"]["body_part_accuracy"]["study_accuracy_per_part"]["hand"] < 1.0
    assert "body_part_accuracy.study_accuracy_per_part.hand" not in exact  # an error: the bootstrap's interval
    for part, studies in per_part_studies.items():
        if part != "hand":
            assert exact[f"body_part_accuracy.study_accuracy_per_part.{part}"] == {"successes": studies,
                                                                                   "trials": studies}
            assert parts[part] == pytest.approx([0.025 ** (1 / studies), 1.0])


def test_the_spread_runs_the_cards_command_with_its_seed_data_and_folder(tmp_path):
    card = ModelCard.load(Path(__file__).parent.parent / "models" / "mura")
    command = run_command(card, tmp_path / "phantoms", 2, tmp_path / "seed2" / "mura")
    text = " ".join(command)
    assert command[1:3] == ["-m", "train"] and text.count("--seed") == 1 and "--seed 2" in text
    assert f"--data {tmp_path / 'phantoms'}" in text and "--weights models/knee/model.keras" in text
    assert "--select-by pointing_game" in text and text.count("--data") == 1
    assert command[-1] == "--overwrite" and "--resume" not in command  # a fresh run
    (tmp_path / "seed2" / "mura" / "checkpoint").mkdir(parents=True)  # an unfinished run's checkpoint: go on with it
    (tmp_path / "seed2" / "mura" / "checkpoint" / "state.json").write_text("{}")
    command = run_command(card, tmp_path / "phantoms", 2, tmp_path / "seed2" / "mura", pause_after_minutes=140)
    assert command[-3:] == ["--resume", "--pause-after-minutes", "140"] and "--overwrite" not in command
    recorded = recorded_command(command)  # the run's record: the command a reader can type, its sittings left out
    assert recorded.startswith("python -m train mura ") and "--seed 2" in recorded
    assert "--resume" not in recorded and "--pause-after-minutes" not in recorded


def test_a_cards_command_is_refused_where_the_model_it_started_from_was_replaced(tmp_path):
    from train.spread import check_starting_weights

    root = Path(__file__).parent.parent
    card = ModelCard.load(root / "models" / "mura")  # --weights models/knee/model.keras, pinned by its sha256
    check_starting_weights(card, root)
    replaced = card.updated(training={**card.training, "weights_sha256": "0" * 64})
    with pytest.raises(SystemExit, match="mura's card was trained from models/knee/model.keras .* its sha256 is now"):
        check_starting_weights(replaced, root)
    with pytest.raises(SystemExit, match="and it is missing"):
        check_starting_weights(card, tmp_path)
    check_starting_weights(ModelCard.load(root / "models" / "knee"), tmp_path)  # from random weights: nothing to pin


def test_the_spread_leaves_out_the_cards_own_seed_so_the_retrain_test_sees_a_new_run():
    card = ModelCard.load(Path(__file__).parent.parent / "models" / "knee")
    assert default_seeds(card) == [1, 2, 3] and card.training["seed"] == 0
    assert default_seeds(card.updated(training={**card.training, "seed": 1})) == [0, 2, 3]
    assert default_seeds(card.updated(training={**card.training, "seed": 7})) == [0, 1, 2]


def test_the_spread_summary_gives_mean_sd_and_where_the_shipped_run_falls(tmp_path):
    shipped = ModelCard.load(Path(__file__).parent.parent / "models" / "knee")
    models = tmp_path / "models"
    shipped.save((models / "knee").mkdir(parents=True) or models / "knee")
    for seed, accuracy in ((0, 0.80), (1, 0.82), (2, 0.84)):
        folder = tmp_path / "runs" / f"seed{seed}" / "knee"
        folder.mkdir(parents=True)
        values = json.loads((models / "knee" / "card.json").read_text())
        values["metrics"] = {"split": "test", "accuracy": accuracy}
        values["training"] = {**values["training"], "seed": seed}
        (folder / "card.json").write_text(json.dumps(values))
    spread = summarise("knee", models, tmp_path / "runs")
    assert spread["runs_count"] == 3 and [run["seed"] for run in spread["runs"]] == [0, 1, 2]
    assert spread["summary"]["accuracy"]["mean"] == pytest.approx(0.82)
    assert spread["summary"]["accuracy"]["sd"] == pytest.approx(0.02)
    position = spread["shipped"]["accuracy"]
    assert position["shipped"] == pytest.approx(shipped.metrics["accuracy"])
    assert position["sd_from_mean"] == pytest.approx((shipped.metrics["accuracy"] - 0.82) / 0.02)
    assert "best test figure" not in spread["shipped_rule"] and "no seed chosen" in spread["shipped_rule"]


def test_a_run_of_a_card_with_map_settings_gets_its_maps_command_and_counts_only_after_it(tmp_path):
    """Chest14's shipped figures come after its maps step (train.maps: a new mirror offset and stitching move the
    probabilities, so the thresholds are chosen again); a run's figures before that step are not the same figure."""
    card = ModelCard.load(Path(__file__).parent.parent / "models" / "chest14")
    chooser, choose_on = chooser_set(card, tmp_path / "runs")
    assert chooser[1:3] == ["-m", "train.phantoms"] and chooser[-2:] == ["--out", str(tmp_path / "runs" / "maps-data")]
    assert "--seed 1" in " ".join(chooser) and "--count 1000" in " ".join(chooser)  # the card's record of the set
    assert choose_on == tmp_path / "runs" / "maps-data" / "chest14"
    choose_on.mkdir(parents=True)  # made already (its provenance matches the card's record): not made again
    (choose_on / "PHANTOM.json").write_text(json.dumps({**card.maps["chosen_on_data"], "kind": None}))
    assert chooser_set(card, tmp_path / "runs") == (None, choose_on)
    out = tmp_path / "runs" / "seed2" / "chest14"
    command = maps_command(card, tmp_path / "phantoms", out, choose_on)
    text = " ".join(command)
    assert command[1:4] == ["-m", "train.maps", "chest14"] and "--stitch" in command
    assert f"--data {tmp_path / 'phantoms'}" in text and f"--choose-on {choose_on}" in text
    assert f"--models {out.parent}" in text and f"--report {out / 'report'}" in text
    assert text.count("--data") == text.count("--choose-on") == 1
    on_validation = card.updated(maps={"command": "python -m train.maps chest14 --data phantoms/chest14 --stitch"})
    assert chooser_set(on_validation, tmp_path / "runs") == (None, None)  # chosen on validation: nothing to make
    assert "--choose-on" not in maps_command(on_validation, tmp_path / "phantoms", out, None)

    assert not run_is_finished(card, out, None)
    values = json.loads((Path(__file__).parent.parent / "models" / "chest14" / "card.json").read_text())
    out.mkdir(parents=True)
    (out / "card.json").write_text(json.dumps({**values, "maps": None}))  # trained, not yet given the maps step
    assert not run_is_finished(card, out, None)
    (out / "card.json").write_text(json.dumps(values))
    assert run_is_finished(card, out, None)
    recorded = {"seed": 0, "figures": {}}  # a run the card recorded before the maps step counted: run it again
    assert not run_is_finished(card, tmp_path / "gone", recorded)
    assert run_is_finished(card, tmp_path / "gone", {**recorded, "maps": {"mirror_offset": 4, "stitch_shift": 4}})
    assert run_is_finished(card.updated(maps=None), tmp_path / "gone", recorded)  # no maps step: done


def test_the_spread_leaves_out_runs_measured_before_the_cards_maps_step(tmp_path):
    values = json.loads((Path(__file__).parent.parent / "models" / "chest14" / "card.json").read_text())
    models = tmp_path / "models"
    (models / "chest14").mkdir(parents=True)
    before = {"seed": 5, "figures": {"mean_auc": 0.5}}  # recorded by an earlier sitting, before the maps step
    (models / "chest14" / "card.json").write_text(json.dumps({**values, "spread": {"runs": [before]}}))
    for seed, auc, maps in ((0, 0.97, None), (1, 0.98, values["maps"]), (2, 0.99, values["maps"])):
        folder = tmp_path / "runs" / f"seed{seed}" / "chest14"
        folder.mkdir(parents=True)
        run = {**values, "metrics": {"split": "test", "mean_auc": auc},
               "training": {**values["training"], "seed": seed}, "maps": maps}
        (folder / "card.json").write_text(json.dumps(run))
    spread = summarise("chest14", models, tmp_path / "runs")
    assert [run["seed"] for run in spread["runs"]] == [1, 2] and spread["runs_count"] == 2
    assert spread["runs"][0]["maps"] == {"mirror_offset": 4, "stitch_shift": 4}
    assert spread["summary"]["mean_auc"]["mean"] == pytest.approx(0.985)
    shown = card_markdown(ModelCard.load(models / "chest14").updated(spread=spread))
    assert "the training command, then its maps command, at seeds 1, 2 on" in shown


def test_the_retrain_band_is_a_t_prediction_interval_over_the_runs_floored_at_the_test_interval():
    """MURA's case: three reruns agree on a near-saturated figure (sd 0.00004 among them) and the shipped run sits
    0.001 below; the shipped run counts among the runs, and the test interval is the floor of the band."""
    card = {"task": "mura", "metrics": {"study_auc": 0.9794, "kappa": 0.861, "count": 7},
            "intervals": {"intervals": {"study_auc": [0.964, 0.991], "kappa": [0.84, 0.88]}},
            "spread": {"runs": [{"figures": {"study_auc": v, "kappa": k}} for v, k in
                                ((0.98046, 0.870), (0.98054, 0.896), (0.98046, 0.887))]}}
    assert retrain_band(card, "study_auc") == (0.964, 0.991)  # the test interval is wider than the t band here
    low, high = retrain_band(card, "kappa")  # mean 0.8785, sd 0.0152 of four; t(3, 0.975) = 3.182
    half = 3.1824463 * statistics.stdev([0.870, 0.896, 0.887, 0.861]) * math.sqrt(1 + 1 / 4)
    assert (low, high) == pytest.approx((0.8785 - half, 0.8785 + half))
    wider = retrain_band(card, "kappa", family=2)  # Bonferroni for two figures: t(3, 0.9875) = 4.177
    assert wider[1] - wider[0] == pytest.approx(2 * half * 4.1765 / 3.1824, rel=1e-3)
    assert retrain_band(card, "count") is None  # neither a spread nor an interval
    assert retrain_band({**card, "spread": None}, "kappa") == (0.84, 0.88)
    one = {**card, "spread": {"runs": [{"figures": {"kappa": 0.95}}]}}  # one rerun outside the interval
    assert retrain_band(one, "kappa")[1] > 0.95
    undefined = {**card, "spread": {"runs": [{"figures": {"kappa": float("nan")}}, {"figures": {}}]}}
    assert retrain_band(undefined, "kappa") == (0.84, 0.88)  # runs without a finite figure count for nothing


def test_the_slow_test_holds_the_headline_figures_together_and_reports_the_rest():
    """Knee has two headline figures: each band is corrected for two; the other figures get bands of their own,
    reported and not asserted; a headline figure that is missing or NaN is outside its band."""
    runs = ((0.877, 0.967, 0.72), (0.783, 0.906, 0.70), (0.874, 0.943, 0.74))
    card = {"task": "knee", "metrics": {"balanced_accuracy": 0.882, "quadratic_weighted_kappa": 0.958,
                                        "accuracy": 0.866},
            "spread": {"runs": [{"figures": {"balanced_accuracy": b, "quadratic_weighted_kappa": k, "accuracy": a}}
                                for b, k, a in runs]}}
    bands = retrain_bands(card)
    assert list(bands) == ["balanced_accuracy", "quadratic_weighted_kappa"]
    assert bands["balanced_accuracy"] == retrain_band(card, "balanced_accuracy", family=2)
    assert list(figure_bands(card)) == ["balanced_accuracy", "quadratic_weighted_kappa", "accuracy"]
    assert figure_bands(card)["accuracy"] == retrain_band(card, "accuracy")
    assert reported_bands(card) == {"accuracy": figure_bands(card)["accuracy"]}
    low, high = bands["balanced_accuracy"]
    assert outside(bands, {"balanced_accuracy": 0.88, "quadratic_weighted_kappa": 0.95}) == []
    assert outside(bands, {"balanced_accuracy": low - 0.001, "quadratic_weighted_kappa": 0.95}) == [
        f"balanced_accuracy {low - 0.001:.4f} outside {low:.4f}-{high:.4f}"]
    assert len(outside(bands, {"balanced_accuracy": float("nan")})) == 2  # NaN, and kappa missing


def test_the_band_leaves_out_the_spread_run_that_the_retrain_repeats_bit_for_bit():
    """Chest14's case: the card's seed is 1 and the spread has a seed-1 run made on this CPU type; the retrain here
    is that run again, so its figures must not widen the band. The same seed on another CPU type is another model."""
    here, other = "avx avx2 avx512f", "avx avx2"
    card = {"task": "chest14", "metrics": {"mean_auc": 0.861}, "training": {"seed": 1},
            "intervals": {"intervals": {"mean_auc": [0.85, 0.87]}},
            "spread": {"runs_count": 4, "runs": [{"seed": s, "cpu": c, "figures": {"mean_auc": v}} for s, c, v in
                                                 ((0, here, 0.862), (1, here, 0.757), (2, here, 0.860),
                                                  (3, other, 0.859))]}}
    assert retrain_band(card, "mean_auc")[0] < 0.757  # the seed-1 run widens the band around itself
    left = without_the_retrains_twin(card, here)
    assert [run["seed"] for run in left["spread"]["runs"]] == [0, 2, 3] and left["spread"]["runs_count"] == 4
    assert retrain_band(left, "mean_auc") == (0.85, 0.87)  # the interval: the t band of the other four is narrower
    assert [run["seed"] for run in without_the_retrains_twin(card, other)["spread"]["runs"]] == [0, 1, 2, 3]
    assert without_the_retrains_twin({**card, "spread": None}, here)["spread"] is None
    assert len(card["spread"]["runs"]) == 4  # the card itself is not changed


def test_each_run_left_out_is_held_to_the_bands_of_the_others():
    """A run the others do not resemble misses their band; a band that has seen it would not. A figure that is
    not a headline one is reported against its own band; a run's NaN figure there has no band."""
    card = {"task": "pneumonia", "metrics": {"auc": 0.90, "f1": 0.80},
            "intervals": {"intervals": {"auc": [0.88, 0.92]}},
            "spread": {"runs": [{"seed": s, "figures": {"auc": a, "f1": f}} for s, a, f in
                                ((0, 0.905, 0.81), (1, 0.895, 0.79), (2, 0.70, float("nan")), (3, 0.90, 0.50))]}}
    checked = {run["seed"]: (misses, others) for run, misses, others in left_out_misses(card)}
    assert checked[2] == ([f"auc 0.7000 outside {retrain_band(without(card, 2), 'auc')[0]:.4f}-"
                           f"{retrain_band(without(card, 2), 'auc')[1]:.4f}"], [])  # f1 NaN: no band
    assert checked[3][0] == [] and checked[3][1][0].startswith("f1 0.5000 outside")  # reported, not a miss
    assert checked[0] == ([], []) and checked[1] == ([], [])  # run 2 in the others' sd widens their bands
    assert retrain_band(card, "auc")[0] < 0.70  # the same run inside a band that counts it
    assert len(card["spread"]["runs"]) == 4


def test_the_left_out_command_prints_each_run_and_refuses_a_missing_card(tmp_path, capsys):
    from train.spread import main

    assert main(["pneumonia", "--left-out"]) == 0
    printed = capsys.readouterr().out
    runs = json.loads((Path(__file__).parent.parent / "models" / "pneumonia" / "card.json").read_text())["spread"]
    assert printed.count("headline figure(s) outside the others' bands") == len(runs["runs"])
    assert "runs would fail the slow retrain test had it not seen them (it holds auc at 95% together)" in printed
    with pytest.raises(SystemExit) as refused:
        main(["pneumonia", "--left-out", "--models", str(tmp_path)])
    assert refused.value.code == 2 and "pneumonia/card.json is missing" in capsys.readouterr().err


def without(card, seed):
    return {**card, "spread": {"runs": [run for run in card["spread"]["runs"] if run["seed"] != seed]}}


@pytest.mark.parametrize("task", [task for task in TASKS if (Path(__file__).parent.parent / "models" / task /
                                                              "card.json").exists()])
def test_every_measured_run_of_a_shipped_model_lies_inside_its_retrain_band(task):
    card = json.loads((Path(__file__).parent.parent / "models" / task / "card.json").read_text())
    bands = retrain_bands(card)
    assert list(bands) == list(TASKS[task].headline)
    for run in (card.get("spread") or {}).get("runs", []):
        assert outside(bands, run["figures"]) == [], (task, run["seed"])
        defined = {name: band for name, band in figure_bands(card).items()
                   if math.isfinite(run["figures"].get(name, math.nan))}  # a class the split lacks: NaN
        assert outside(defined, run["figures"]) == [], (task, run["seed"])


def test_a_card_shows_test_and_fresh_figures_with_intervals_and_the_spread():
    card = ModelCard.load(Path(__file__).parent.parent / "models" / "pneumonia")
    card.intervals = {"intervals": {"auc": [0.97, 1.0]}}
    card.fresh = {"seed": 31415, "images": 600, "figures": {"auc": 0.99}, "intervals": {"auc": [0.98, 0.995]}}
    card.spread = {"runs_count": 3, "summary": {"auc": {"mean": 0.995, "sd": 0.004}}}
    text = card_markdown(card)
    assert "95% interval (by patient)" in text and "fresh set (seed 31415, 600 images)" in text
    row = next(line for line in text.splitlines() if line.startswith("| auc |"))
    assert "(0.970-1.000)" in row and "0.990" in row and "(0.980-0.995)" in row and "0.995 +- 0.004" in row
    assert "Clopper-Pearson" not in text  # no exact interval in this card

    shipped = card_markdown(ModelCard.load(Path(__file__).parent.parent / "models" / "pneumonia"))
    row = next(line for line in shipped.splitlines() if line.startswith("| specificity |"))
    assert row.startswith("| specificity | 1.000 | (0.949-1.000) exact |")  # 71 of 71, not the bootstrap's point
    assert "exact binomial (Clopper-Pearson) interval" in shipped
    mura = card_markdown(ModelCard.load(Path(__file__).parent.parent / "models" / "mura"))
    wrist = next(line for line in mura.splitlines() if line.startswith("| study_accuracy_per_part: wrist |"))
    assert wrist.startswith("| study_accuracy_per_part: wrist | 1.000 | (0.949-1.000) exact |")  # 70 of 70
    assert wrist.endswith("| 1.000 +- 0.000 |")  # nested figures have their spread too


def test_a_paired_difference_inside_the_noise_is_a_tie_and_a_real_one_is_not():
    from train.intervals import paired

    spec, targets, good, samples = knee_case(200, 0.9, seed=1)
    _, _, same, _ = knee_case(200, 0.9, seed=1)
    _, _, worse, _ = knee_case(200, 0.5, seed=1)
    tie = paired(spec, targets, good, same * 0.999 + 0.0002, samples, [0.5] * 5, replicates=100)
    assert tie["verdicts"]["accuracy"] == "tie" and tie["differences"]["accuracy"] == pytest.approx(0, abs=1e-9)
    clear = paired(spec, targets, good, worse, samples, [0.5] * 5, replicates=100)
    low, high = clear["intervals"]["accuracy"]
    assert clear["verdicts"]["accuracy"] == "first higher" and 0 < low <= clear["differences"]["accuracy"] <= high


def test_one_finished_run_is_kept_in_the_card_without_a_spread(tmp_path):
    shipped = ModelCard.load(Path(__file__).parent.parent / "models" / "pneumonia")
    shipped.spread = None
    models = tmp_path / "models"
    shipped.save((models / "pneumonia").mkdir(parents=True) or models / "pneumonia")
    folder = tmp_path / "runs" / "seed0" / "pneumonia"
    folder.mkdir(parents=True)
    values = json.loads((models / "pneumonia" / "card.json").read_text())
    values["metrics"] = {"split": "test", "auc": 0.99}
    (folder / "card.json").write_text(json.dumps(values))
    spread = summarise("pneumonia", models, tmp_path / "runs")
    assert spread["runs_count"] == 1 and spread["summary"] == {} and spread["runs"][0]["figures"]["auc"] == 0.99
