"""Bounded cost and isolation in the running app (in-process servers on the ONNX CAM path, gradio_client):
one global limit on analyses, a bounded queue, request caps, per-task isolation, untrustworthy numbers,
race-free overlays, one log line per refusal, temp folders removed."""
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gradio_client import Client, handle_file  # noqa: E402 - after conftest turned telemetry off
from gradio_client.exceptions import AppError  # noqa: E402

from train.phantoms import dicom_bytes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def first_example(task):
    entry = json.loads((EXAMPLES / task / "examples.json").read_text())[0]
    return EXAMPLES / task / entry["files"][0]


def start(*flags, models=None):
    import app
    from bench.endpoints import free_port

    argv = ["--port", str(free_port()), "--cam", "onnx", *flags] + (["--models", str(models)] if models else [])
    demo, url = app.serve(app.settings(argv), block=False)
    return demo, url


def stop(demo):
    demo.close()
    demo.radiograph_app.close()


@pytest.fixture(scope="module")
def slow_server():
    """Concurrency 2, a queue of 4; every analysis takes at least 0.4 s and counts how many run at once."""
    demo, url = start("--concurrency", "2", "--queue-size", "4")
    service = demo.radiograph_app.service
    analyse, lock, state = service.analyse, threading.Lock(), {"now": 0, "most": 0}

    def counted(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.4)
            return analyse(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    service.analyse = counted
    yield url, state
    stop(demo)


def test_one_limit_covers_every_endpoint(slow_server):
    url, state = slow_server
    clients = [Client(url, verbose=False) for _ in range(3)]
    jobs = [clients[i % 3].submit(handle_file(str(first_example(task))), api_name=f"/{task}")
            for i, task in enumerate(["knee", "pneumonia", "chest14", "mura"])]
    study = [handle_file(str(p)) for p in sorted((EXAMPLES / "mura").rglob("hand_*.png"))]
    jobs.append(clients[1].submit(study, api_name="/mura_study"))
    for job in jobs:
        assert job.result(timeout=300)[0]["model"]
    assert state["most"] == 2, state  # five busy endpoints, never more than --concurrency analyses at once


def test_a_full_queue_answers_busy(slow_server):
    url, _ = slow_server
    clients = [Client(url, verbose=False) for _ in range(4)]
    knee = handle_file(str(first_example("knee")))
    jobs = [clients[i % 4].submit(knee, api_name="/knee") for i in range(12)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=300)[0]["decision"]["label"])
        except Exception as error:  # noqa: BLE001 - the busy answer
            outcomes.append(str(error))
    busy = [o for o in outcomes if "Queue is full" in o]
    assert busy and all("try again" in o for o in busy), outcomes
    assert len(busy) < len(outcomes)  # the others were answered
    assert Client(url, verbose=False).predict(knee, api_name="/knee")[0]["decision"]["label"]  # and it serves on


@pytest.fixture(scope="module")
def server():
    demo, url = start()
    yield demo, url
    stop(demo)


def test_a_study_with_too_many_files_is_refused(server, tmp_path):
    _, url = server
    view = first_example("mura")
    with pytest.raises(AppError, match="13 files in one request; at most 12"):
        Client(url, verbose=False).predict([handle_file(str(view))] * 13, api_name="/mura_study")


def test_an_oversized_upload_is_cut_off_at_the_socket(server):
    import httpx

    import app

    _, url = server
    body = b"\0" * (app.MAX_REQUEST_BYTES + 1)
    response = httpx.post(f"{url}gradio_api/upload", content=body, timeout=60,
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "at most 200 MB" in response.text


def test_untrustworthy_dicom_numbers_are_refused_or_flagged(server, tmp_path):
    _, url = server
    client = Client(url, verbose=False)
    pixels = (np.tile(np.linspace(0, 4000, 256), (256, 1))).astype(np.uint16)
    nan_window = tmp_path / "nan_window.dcm"
    nan_window.write_bytes(dicom_bytes(pixels, window=("NaN", "NaN")))
    result, _ = client.predict(handle_file(str(nan_window)), api_name="/knee")
    assert "not a valid window" in result["image"]["notes"][0]
    if result["gate"]["verdict"] != "refuse":  # a bare ramp: the input gate may refuse it as no task's image
        assert all(np.isfinite(p) for p in result["probabilities"].values())
    for name, tags, words in [("zero_slope.dcm", {"RescaleSlope": 0}, "Rescale Slope 0.0"),
                              ("nan_slope.dcm", {"RescaleSlope": "NaN"}, "cannot be trusted")]:
        path = tmp_path / name
        path.write_bytes(dicom_bytes(pixels, **tags))
        with pytest.raises(AppError, match=words):
            client.predict(handle_file(str(path)), api_name="/knee")
    negative = tmp_path / "negative_slope.dcm"
    negative.write_bytes(dicom_bytes(pixels, RescaleSlope=-1, RescaleIntercept=4000))
    result, _ = client.predict(handle_file(str(negative)), api_name="/knee")
    assert "negative" in result["image"]["notes"][0]


def test_a_probability_that_is_not_finite_is_an_error(server, monkeypatch):
    demo, url = server
    model = demo.radiograph_app.service.models["pneumonia"]
    run = model.run

    def broken(images, features=True):
        output = run(images, features)
        output.probabilities[:] = np.nan
        return output

    monkeypatch.setattr(model, "run", broken)
    with pytest.raises(AppError, match="not a finite number"):
        Client(url, verbose=False).predict(handle_file(str(first_example("pneumonia"))), api_name="/pneumonia")


def test_overlays_are_race_free_with_many_aged_files(server):
    """The reported race: concurrent requests sweeping the same aged overlays (one unlinks what another stats)."""
    import os

    demo, url = server
    folder = demo.radiograph_app.overlays
    for index in range(400):
        aged = folder / f"aged{index}.png"
        aged.write_bytes(b"x")
        os.utime(aged, (time.time() - 3600, time.time() - 3600))
    clients = [Client(url, verbose=False) for _ in range(4)]
    knee = handle_file(str(first_example("knee")))
    jobs = [clients[i % 4].submit(knee, api_name="/knee") for i in range(24)]
    for job in jobs:
        result, overlay = job.result(timeout=300)
        assert Path(overlay).exists()
    assert not list(folder.glob("aged*.png"))


def test_one_log_line_per_refused_input_and_no_traceback(server, tmp_path, caplog, capsys):
    _, url = server
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is text, not an image\n" * 10)
    with caplog.at_level(logging.INFO, logger="radiograph.app"):
        with pytest.raises(AppError, match="not a recognised image"):
            Client(url, verbose=False).predict(handle_file(str(bad)), api_name="/knee")
        time.sleep(0.5)
        wrong = tmp_path / "notes.txt"
        wrong.write_bytes(b"hello")
        with pytest.raises(AppError, match="Invalid file type"):  # Gradio's own extension check, kept quiet
            Client(url, verbose=False).predict(handle_file(str(wrong)), api_name="/knee")
        time.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "radiograph.app"]
    assert len(lines) == 2 and lines[0].startswith("refused 'notes.png' (270 bytes) on /knee: not a recognised image")
    assert lines[1].startswith("refused 'notes.txt' (5 bytes) on /knee: Invalid file type")
    assert "Traceback" not in capsys.readouterr().err


def corrupted_models(tmp_path, task="knee"):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("*.keras"))
    with open(models / task / "model.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"corrupted")
    return models


def test_a_bad_model_disables_only_its_own_task(tmp_path):
    demo, url = start(models=corrupted_models(tmp_path))
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="Knee.*model is unavailable.*sha256"):
            client.predict(handle_file(str(first_example("knee"))), api_name="/knee")
        assert client.predict(handle_file(str(first_example("pneumonia"))), api_name="/pneumonia")[0]["decision"]
        assert "knee" in demo.radiograph_app.service.unavailable
    finally:
        stop(demo)


def test_strict_refuses_to_start_with_a_bad_model(tmp_path):
    from radiograph.inference import ModelFileError

    with pytest.raises(ModelFileError, match="sha256"):
        start("--strict", models=corrupted_models(tmp_path))


def test_the_overlay_folder_is_removed_on_exit(tmp_path):
    import subprocess
    import sys

    script = ("import app, sys\nfrom radiograph.service import Service\n"
              "ui = app.App(Service(app.ROOT / 'models', ['knee']))\n"
              "ui.png(__import__('numpy').zeros((20, 20, 3), 'uint8'))\nprint(ui.overlays)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(done.stdout.split()[-1])
    assert folder.parent == tmp_path and not folder.exists()
