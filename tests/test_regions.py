"""Heatmaps that colour-blind readers can read and that are described in words: the overlay's colour maps
(radiograph.cam.COLORMAPS) and the words (radiograph.regions), on synthetic maps and on the shipped models."""
import json
from pathlib import Path

import numpy as np
import pytest

from radiograph.cam import COLORMAPS, DEFAULT_COLORMAP, overlay
from radiograph.regions import FLAT_TEXT, describe
from radiograph.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
# Published sRGB values of the maps (matplotlib's _cm_listed.py and jet's definition), independent of OpenCV.
VIRIDIS = {0.0: (68, 1, 84), 0.5: (33, 145, 140), 1.0: (253, 231, 37)}
JET = {0.0: (0, 0, 128), 0.5: (128, 255, 128), 1.0: (128, 0, 0)}


def blob(shape, centre_xy, radius=0.08):
    """A Gaussian map peaking at `centre_xy` (fractions of width and height), cut to zero far from it."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width]
    distance = ((xs + 0.5) / width - centre_xy[0]) ** 2 + ((ys + 0.5) / height - centre_xy[1]) ** 2
    heatmap = np.exp(-distance / (2 * radius ** 2)).astype(np.float32)
    heatmap[heatmap < 0.05] = 0.0
    return heatmap


def map_colour(colormap, value):
    """The colour map's colour at `value`: the overlay on a black film at full opacity is that colour times value."""
    drawn = overlay(np.zeros((4, 4)), np.full((4, 4), value, np.float32), 1.0, colormap)[0, 0]
    return drawn.astype(float) / value


def test_the_default_colour_map_is_viridis_and_jet_is_there_on_request():
    assert DEFAULT_COLORMAP == "viridis" and {"viridis", "cividis", "jet"} <= set(COLORMAPS)
    film, hot = np.zeros((4, 4)), np.full((4, 4), 0.5, np.float32)
    assert np.array_equal(overlay(film, hot, 1.0), overlay(film, hot, 1.0, "viridis"))  # the default is viridis
    for value in (0.5, 1.0):
        assert np.abs(map_colour("viridis", value) - VIRIDIS[value]).max() <= 5, value
        assert np.abs(map_colour("jet", value) - JET[value]).max() <= 6, value
    assert np.abs(map_colour("cividis", 1.0) - (254, 232, 56)).max() <= 4  # cividis's yellow end
    assert np.abs(map_colour("jet", 1.0) - map_colour("viridis", 1.0)).max() > 100


def test_a_cold_map_keeps_the_film_and_opacity_zero_draws_nothing():
    film = np.full((6, 6), 120.0)
    assert np.array_equal(overlay(film, np.zeros((6, 6), np.float32)), np.full((6, 6, 3), 120, np.uint8))
    assert np.array_equal(overlay(film, np.ones((6, 6), np.float32), 0.0, "jet"), np.full((6, 6, 3), 120, np.uint8))


@pytest.mark.parametrize("name", ["rainbow", "", None, "JET "])
def test_an_unknown_colour_map_is_a_clear_error(name):
    with pytest.raises(ValueError, match="unknown colour map .*choose one of viridis, cividis, jet"):
        overlay(np.zeros((4, 4)), np.ones((4, 4), np.float32), 0.4, name)
    with pytest.raises(ValueError, match="unknown colour map"):
        overlay(np.zeros((4, 4)), None, 0.4, name)  # even with nothing to draw


@pytest.mark.parametrize("task, centre, row, column", [
    ("chest14", (0.15, 0.15), "upper zone", "patient's right lung"),
    ("chest14", (0.85, 0.85), "lower zone", "patient's left lung"),
    ("pneumonia", (0.5, 0.5), "middle zone", "centre (mediastinum and heart)"),
    ("pneumonia", (0.8, 0.2), "upper zone", "patient's left lung"),
    ("knee", (0.25, 0.5), "joint space", "image left (the lateral compartment of a right knee, the medial of a left knee)"),
    ("knee", (0.75, 0.12), "distal femur", "image right (the medial compartment of a right knee, the lateral of a left knee)"),
    ("knee", (0.3, 0.9), "proximal tibia", "image left (the lateral compartment of a right knee, the medial of a left knee)"),
    ("mura", (0.9, 0.1), "top", "image right"),
    ("mura", (0.1, 0.9), "bottom", "image left"),
])
def test_a_blob_is_named_by_the_task_s_anatomy(task, centre, row, column):
    words = describe(blob((300, 240), centre), get_task(task).anatomy)
    assert (words["row"], words["column"], words["flat"]) == (row, column, False)
    assert row in words["text"] and column in words["text"] and words["terms"] in words["text"]
    assert np.allclose(words["centroid_fraction_xy"], centre, atol=0.03)


def test_a_blob_at_the_top_left_of_a_chest_film_is_the_patient_s_right_upper_zone():
    text = describe(blob((512, 512), (0.2, 0.15)), get_task("chest14").anatomy)["text"]
    assert "patient's right lung, upper zone" in text and "radiological convention" in text
    assert "image terms" in describe(blob((512, 512), (0.2, 0.15)), get_task("mura").anatomy)["text"]


def test_coverage_is_the_hottest_region_s_area_and_warm_counts_every_region():
    heatmap = np.zeros((100, 100), np.float32)
    heatmap[10:30, 10:30] = 1.0  # the hottest region: 400 pixels, 4% of the image
    heatmap[60:90, 60:90] = 0.6  # another region above half the maximum, not connected: 900 pixels
    heatmap[0:5, 50:100] = 0.3  # below half the maximum: counted nowhere
    words = describe(heatmap, get_task("mura").anatomy)
    assert words["hottest_region_fraction"] == pytest.approx(0.04)
    assert words["warm_fraction"] == pytest.approx(0.13)
    assert (words["row"], words["column"]) == ("top", "image left")
    assert "covering 4% of the image" in words["text"] and "13%" in words["text"]


def test_a_flat_map_says_there_is_no_positive_evidence():
    for flat in (None, np.zeros((20, 20), np.float32), np.full((20, 20), np.nan, np.float32)):
        words = describe(flat, get_task("chest14").anatomy)
        assert words == {"flat": True, "text": FLAT_TEXT} and "no positive evidence" in words["text"].lower()


def test_every_task_names_its_bands_and_says_what_its_terms_are():
    for spec in TASKS.values():
        anatomy = spec.anatomy
        assert anatomy.rows and anatomy.columns and anatomy.terms
        assert anatomy.zone(0.0, 0.0) == (anatomy.rows[0], anatomy.columns[0])
        assert anatomy.zone(1.0, 1.0) == (anatomy.rows[-1], anatomy.columns[-1])  # the far edge is the last band
    assert "image terms" in TASKS["mura"].anatomy.terms and not TASKS["mura"].upright


def test_every_described_heatmap_of_a_shipped_model_carries_its_words():
    """The JSON result (Service, ONNX path on the shipped chest14 model): each heatmap's description names a lung
    zone where its region box is; the overlay's colours change with the colour map."""
    from radiograph.service import Service

    service = Service(ROOT / "models", tasks=["chest14"], cam_path="onnx")
    entry = json.loads((ROOT / "examples" / "chest14" / "examples.json").read_text())[0]
    analysis = service.analyse("chest14", ROOT / "examples" / "chest14" / entry["files"][0])
    result = analysis.result()
    for described in [result["heatmap"], *result["heatmaps"]]:
        words = described["description"]
        assert words["flat"] == described["flat"]
        if not words["flat"]:
            x, y, w, h = described["hottest_region_xywh"]
            width, height = result["image"]["width"], result["image"]["height"]
            cx, cy = words["centroid_fraction_xy"]
            assert x / width - 0.01 <= cx <= (x + w) / width + 0.01 and y / height - 0.01 <= cy <= (y + h) / height + 0.01
            assert words["row"] in ("upper zone", "middle zone", "lower zone")
            assert 0 < words["hottest_region_fraction"] <= words["warm_fraction"] <= 1
    assert analysis.description(analysis.shown_class) == result["heatmap"]["description"]
    assert not np.array_equal(analysis.overlay(), analysis.overlay(colormap="jet"))
    with pytest.raises(ValueError, match="unknown colour map"):
        analysis.overlay(colormap="rainbow")


def test_the_app_s_colour_map_setting_and_its_environment_variable(monkeypatch):
    import app

    assert app.settings([]).colormap == "viridis"
    assert app.settings(["--colormap", "jet"]).colormap == "jet"
    monkeypatch.setenv("RADIOGRAPH_COLORMAP", "cividis")
    assert app.settings([]).colormap == "cividis"
    monkeypatch.setenv("RADIOGRAPH_COLORMAP", "rainbow")
    with pytest.raises(SystemExit):
        app.settings([])
    with pytest.raises(SystemExit):
        app.settings(["--colormap", "rainbow"])


def test_the_batch_command_describes_each_map_and_draws_its_overlays_in_the_chosen_colour_map(tmp_path, capsys):
    """python -m radiograph predict on the shipped knee model: a heatmap_words column naming a knee zone, and
    --cam-dir overlays that differ between viridis and jet; an unknown --colormap is refused."""
    import csv

    import cv2

    from radiograph.predict import main

    examples, rows, overlays = ROOT / "examples" / "knee", {}, {}
    for colormap in ("viridis", "jet"):
        out, cams = tmp_path / f"{colormap}.csv", tmp_path / colormap
        assert main(["knee", str(examples), "--out", str(out), "--cam-dir", str(cams), "--colormap", colormap,
                     "--models", str(ROOT / "models"), "--quiet"]) == 0
        rows[colormap] = list(csv.DictReader(out.open()))
        overlays[colormap] = [cv2.imread(row["cam"]) for row in rows[colormap]]
    knee = TASKS["knee"].anatomy
    for row in rows["viridis"]:
        assert row["status"] == "ok" and row["heatmap_words"].startswith("Hottest region: ")
        assert any(name in row["heatmap_words"] for name in knee.rows)
    assert [r["heatmap_words"] for r in rows["viridis"]] == [r["heatmap_words"] for r in rows["jet"]]
    assert all(not np.array_equal(a, b) for a, b in zip(overlays["viridis"], overlays["jet"]))
    with pytest.raises(SystemExit):
        main(["knee", str(examples), "--colormap", "rainbow", "--models", str(ROOT / "models"), "--quiet"])
    assert "invalid choice: 'rainbow'" in capsys.readouterr().err
