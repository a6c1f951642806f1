"""The model-parameter randomisation test (Adebayo et al. 2018) on every shipped model, and its two measures."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from radiograph.registry import TASKS  # noqa: E402
from radiograph.sanity import (  # noqa: E402
    RANK_BOUND,
    SSIM_BOUND,
    Row,
    cascade,
    main,
    measure,
    rank_correlation,
    ssim,
    weighted_layers,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [task for task in TASKS if (ROOT / "models" / task / "model.keras").exists()]


def test_every_task_ships_a_model_to_check():
    assert SHIPPED == list(TASKS)


@pytest.mark.parametrize("task", SHIPPED)
def test_randomised_weights_change_the_maps_of_every_shipped_model(task):
    """Every layer randomised (fixed seed): the maps of the same class on the same example films are no more
    alike than the bound (docs/gradcam.md, "Sanity check", says why it sits there)."""
    measured = measure(task, ROOT / "models", ROOT / "examples", count=4, cascading=False)
    full = measured.full
    assert len(full.rank) >= 3, f"{task}: too few examples with a map to compare ({measured.images})"
    assert full.mean_rank < RANK_BOUND, f"{task}: mean |rho| {full.mean_rank:.3f} per image {full.rank}"
    assert full.mean_ssim < SSIM_BOUND, f"{task}: mean SSIM {full.mean_ssim:.3f} per image {full.ssim}"


def test_the_similarity_measures():
    rng = np.random.default_rng(0)
    blob = np.exp(-((np.arange(64)[:, None] - 20) ** 2 + (np.arange(64)[None] - 40) ** 2) / 200.0)
    noise = rng.uniform(0, 1, (64, 64))
    assert rank_correlation(blob, blob) == pytest.approx(1.0)
    assert rank_correlation(blob, 1 - blob) == pytest.approx(1.0)  # a flipped sign counts as alike (absolute rho)
    assert rank_correlation(blob, np.zeros_like(blob)) == 0.0  # a flat map ranks nothing
    assert rank_correlation(blob, noise) < 0.1
    assert ssim(blob, blob) == pytest.approx(1.0)
    assert ssim(blob, noise) == pytest.approx(ssim(noise, blob))
    assert ssim(blob, noise) < 0.1
    # two constant images: only SSIM's luminance term is left, (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2
    assert ssim(np.full((32, 32), 0.2), np.full((32, 32), 0.6)) == pytest.approx(
        (2 * 0.2 * 0.6 + 1e-4) / (0.2 ** 2 + 0.6 ** 2 + 1e-4))


def test_maps_no_more_alike_than_the_bound_pass_and_the_same_maps_fail():
    unchanged = Row("knee", "a method that ignores the weights", 87, [1.0, 0.99], [1.0, 0.98], 0)
    assert not unchanged.passes
    assert Row("knee", "all layers", 87, [RANK_BOUND - 0.1] * 2, [SSIM_BOUND - 0.1] * 2, 0).passes
    assert not Row("knee", "all layers", 87, [RANK_BOUND - 0.1] * 2, [SSIM_BOUND + 0.1] * 2, 0).passes


def test_the_cascade_starts_at_the_logits_and_covers_every_weighted_layer_once():
    from radiograph.layers import load_model

    model = load_model(ROOT / "models" / "knee" / "model.keras")
    blocks = cascade(model)
    assert blocks[0] == ("logits", ["logits"])
    names = [name for _, layers in blocks for name in layers]
    assert sorted(names) == sorted(layer.name for layer in weighted_layers(model))
    stages = [int(name.split()[1].split("x")[0]) for name, _ in blocks[1:]]
    assert stages == sorted(stages) and len(set(stages)) == len(stages)  # deepest (smallest map) first, each once


def test_the_command_prints_a_table_and_says_whether_the_models_pass(capsys):
    assert main(["--tasks", "pneumonia", "--count", "2", "--no-cascade", "--models", str(ROOT / "models"),
                 "--examples", str(ROOT / "examples")]) == 0
    printed = capsys.readouterr().out
    assert "| pneumonia | all layers |" in printed and "trained maps of two different images" in printed
    with pytest.raises(SystemExit):
        main(["--count", "1"])
