"""The app end to end through gradio_client: every endpoint, DICOM and 16-bit input, bad files, the light install."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radiograph.registry import TASKS

from corpus import ACCEPTED, REFUSED  # noqa: E402

from gradio_client import Client, handle_file  # noqa: E402 - after conftest turned telemetry off
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GATE_KEYS = {"verdict", "reasons", "codes", "ood_score", "ood_threshold", "routed_task", "routed_probability"}


@pytest.fixture(scope="session")
def client(app_url):
    return Client(app_url, verbose=False)


def examples(task):
    return json.loads((EXAMPLES / task / "examples.json").read_text())


def assert_overlay_of(path, original):
    with Image.open(path) as overlay, Image.open(original) as source:
        assert overlay.format == "PNG" and overlay.size == source.size


@pytest.mark.parametrize("task", [t for t in TASKS if t != "mura"])
def test_every_single_image_endpoint_gives_the_examples_truth(client, task):
    for example in examples(task):
        path = EXAMPLES / task / example["files"][0]
        result, overlay = client.predict(handle_file(str(path)), api_name=f"/{task}")
        decision = result["decision"]
        if TASKS[task].multi_label:  # a heatmap for every positive finding by default, most probable first
            assert set(example["truth"]) <= set(decision["positive"]), example["caption"]
            by_probability = sorted(result["probabilities"], key=lambda c: -result["probabilities"][c])
            positives = [c for c in by_probability if c in decision["positive"]]
            assert [h["class"] for h in result["heatmaps"]] == (positives or by_probability[:1])  # none: the top
            assert all(h["hottest_region_xywh"] for h in result["heatmaps"] if not h["flat"])
        else:
            assert decision["label"] == example["truth"][0], example["caption"]
        assert result["heatmap"]["class"] == result["heatmaps"][0]["class"]
        assert result["model"]["provider"] and result["model"]["cam_path"] in ("keras-gradcam", "onnx-cam")
        assert set(result["probabilities"]) == set(TASKS[task].labels)
        assert result["timings_ms"]["total"] > 0 and "not a medical device" in result["notice"]
        assert set(result["gate"]) == GATE_KEYS and 0 <= result["uncertainty"]["value"] <= 1
        if path.suffix != ".dcm":  # Pillow cannot open DICOM; its size is checked from the result
            assert_overlay_of(overlay, path)
        assert Image.open(overlay).size == (result["image"]["width"], result["image"]["height"])


def test_mura_study_and_single_view_endpoints(client):
    for example in examples("mura"):
        files = [EXAMPLES / "mura" / name for name in example["files"]]
        study, gallery = client.predict([handle_file(str(f)) for f in files], api_name="/mura_study")
        part, status = example["truth"][0].split("_")
        assert study["views"] == len(files) and study["decision"]["body_part"] == part
        assert study["decision"]["abnormal"] == (status == "abnormal"), example["caption"]
        assert len(study["per_view"]) == len(gallery) == len(files)
        for item, source in zip(gallery, files):
            assert_overlay_of(item["image"], source)
    result, overlay = client.predict(handle_file(str(files[0])), api_name="/mura")
    assert result["decision"]["body_part"] == part
    assert_overlay_of(overlay, files[0])


def test_dicom_and_16bit_inputs_match_their_8bit_sources(client):
    dicom = next(e for e in examples("chest14") if "DICOM" in e["caption"])
    deep = next(e for e in examples("knee") if "16-bit" in e["caption"])
    from_dicom, _ = client.predict(handle_file(str(EXAMPLES / "chest14" / dicom["files"][0])), api_name="/chest14")
    assert set(dicom["truth"]) <= set(from_dicom["decision"]["positive"])
    from_16bit, _ = client.predict(handle_file(str(EXAMPLES / "knee" / deep["files"][0])), api_name="/knee")
    assert from_16bit["decision"]["label"] == deep["truth"][0]


BAD_FILES = {  # name: words the error message must contain
    "notes.png": "not a recognised image",
    "empty.png": "empty",
    "huge.png": "30000x30000",
    "truncated_60.png": "truncated",
}


def knee_example():
    entry = examples("knee")[0]
    return EXAMPLES / "knee" / entry["files"][0], entry["truth"][0]


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_get_clear_errors_and_the_app_keeps_serving(client, tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(REFUSED.get(name, b"this is text, not an image\n" * 10))
    with pytest.raises(AppError, match=BAD_FILES[name]) as raised:
        client.predict(handle_file(str(bad)), api_name="/knee")
    assert str(raised.value).startswith(name) and "accepted: PNG" in str(raised.value)
    good, truth = knee_example()
    assert client.predict(handle_file(str(good)), api_name="/knee")[0]["decision"]["label"] == truth


def test_the_whole_input_corpus_through_the_app(client, tmp_path):
    """Every refused file gets the loader's message, every odd valid one a result; the app serves on."""
    for name, content in {**REFUSED, **ACCEPTED}.items():
        path = tmp_path / name
        path.write_bytes(content)
        if name in REFUSED:
            with pytest.raises(AppError, match="accepted: PNG|Invalid file type. Please upload a file that is one of"):
                client.predict(handle_file(str(path)), api_name="/knee")
        else:  # decoded; the input gate may refuse it (a blank or tiny image), with its reasons and no diagnosis
            result, overlay = client.predict(handle_file(str(path)), api_name="/knee")
            assert Path(overlay).exists() and set(result["gate"]) == GATE_KEYS
            if result["gate"]["verdict"] == "refuse":
                assert result["gate"]["reasons"] and "probabilities" not in result
            else:
                assert result["decision"]["label"] in TASKS["knee"].labels
    good, truth = knee_example()
    assert client.predict(handle_file(str(good)), api_name="/knee")[0]["decision"]["label"] == truth


def test_a_file_type_outside_the_list_is_refused(client, tmp_path):
    wrong = tmp_path / "scan.txt"
    wrong.write_bytes(b"hello")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(handle_file(str(wrong)), api_name="/knee")


def test_upload_size_limit_is_enforced(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 6_000_000)  # the fixture's limit is 5 MB
    with pytest.raises(Exception, match="(?i)size|413|large"):
        client.predict(handle_file(str(big)), api_name="/knee")


def test_api_names_and_parameters_are_meaningful(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/knee", "/mura", "/mura_study", "/pneumonia", "/chest14"} <= set(info)
    for name in ("/knee", "/mura", "/pneumonia", "/chest14"):
        assert [p["parameter_name"] for p in info[name]["parameters"]] == ["radiograph"]
        assert [r["label"] for r in info[name]["returns"]] == ["Result (JSON)", "Grad-CAM overlay"]
    assert [p["parameter_name"] for p in info["/mura_study"]["parameters"]] == ["views"]
    assert not any(name.startswith("/lambda") or name.startswith("/run") for name in info)


def test_the_app_runs_without_tensorflow(tmp_path):
    """The light install: no TensorFlow, the ONNX CAM path; checked in a process where TensorFlow cannot import."""
    script = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import app\n"
        "from radiograph.service import Service\n"
        "service = Service(app.ROOT / 'models', ['knee'])\n"
        "app.App(service).build()\n"
        "result = service.analyse('knee', sorted((app.ROOT / 'examples' / 'knee').glob('*.png'))[0]).result()\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "import json; sys.path.insert(0, 'tests'); from test_app import gate_verdicts\n"
        f"print(json.dumps(gate_verdicts(Service(app.ROOT / 'models'), {str(tmp_path)!r})))\n"
        "print(result['model']['cam_path'], result['heatmap']['flat'])\n")
    photo(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["onnx-cam", "False"]
    from radiograph.service import Service

    light = json.loads(done.stdout.strip().splitlines()[-2])
    assert light == gate_verdicts(Service(ROOT / "models", cam_path="onnx"), tmp_path)  # the same gate, full install


def test_model_cards_for_people_name_their_provenance():
    from radiograph.cards import ModelCard, card_markdown

    for task in TASKS:
        card = ModelCard.load(ROOT / "models" / task)
        text = card_markdown(card)
        assert card.model_version in text and "phantom" in text and card.training["command"] in text


def test_sharing_is_off_unless_asked_for(monkeypatch):
    import app

    monkeypatch.delenv("RADIOGRAPH_SHARE", raising=False)
    assert app.settings([]).share is False  # a public gradio.live link only on request
    assert app.settings(["--share"]).share is True
    monkeypatch.setenv("RADIOGRAPH_SHARE", "1")
    assert app.settings([]).share is True


def test_threshold_bars_mark_every_class_and_its_threshold():
    import app

    labels = list(TASKS["chest14"].labels)
    probabilities = np.linspace(0.05, 0.95, len(labels))
    thresholds = {label: 0.5 for label in labels}
    html = app.threshold_bars(labels, probabilities, thresholds)
    assert html.count('class="bar-threshold"') == len(labels)
    assert html.count("bar-row positive") == int((probabilities >= 0.5).sum())
    assert "unreachable" not in html
    saturated = {**thresholds, "Effusion": 1.0, "Edema": 0.9999999997}  # as the shipped chest14 card has them
    marked = app.threshold_bars(labels, probabilities, saturated)
    assert marked.count("bar-row unreachable") + marked.count("positive unreachable") == 2
    assert "Unreachable threshold (Effusion, Edema)" in marked and "calls these findings positive only then" in marked


def test_the_chest_tab_shows_an_overlay_per_positive_finding_when_there_are_several():
    import dataclasses

    import app
    from radiograph.service import Service

    ui = app.App(Service(app.ROOT / "models", ["chest14"]))
    analysis = ui.service.analyse("chest14", EXAMPLES / "chest14" / examples("chest14")[0]["files"][0])
    assert ui.findings_gallery(analysis)["visible"] is (len(analysis.shown_classes) > 1)
    top3 = np.argsort(-analysis.probabilities)[:3]
    card = analysis.card.updated(thresholds={label: 1.0 for label in analysis.labels})
    card.thresholds.update({analysis.labels[c]: 0.0 for c in top3})
    gallery = ui.findings_gallery(dataclasses.replace(analysis, card=card), opacity=0.6, region=True)
    assert gallery["visible"] and [caption.split(":")[0] for _, caption in gallery["value"]] == [
        analysis.labels[c] for c in top3]
    for path, _ in gallery["value"]:
        assert Image.open(path).size == (analysis.display.shape[1], analysis.display.shape[0])


def test_concurrent_requests_match_serial_ones(client):
    """32 requests at once over every endpoint (the queue runs 2 at a time): all answered, none differs."""
    cases = {task: handle_file(str(EXAMPLES / task / examples(task)[0]["files"][0])) for task in TASKS}
    serial = {task: client.predict(value, api_name=f"/{task}")[0]["probabilities"] for task, value in cases.items()}
    jobs = [(task, client.submit(value, api_name=f"/{task}")) for _ in range(8) for task, value in cases.items()]
    for task, job in jobs:
        result, overlay = job.result(timeout=300)
        assert result["probabilities"] == serial[task] and Path(overlay).exists()


def test_the_app_serves_no_file_outside_its_examples_and_outputs(app_url):
    import httpx

    example = EXAMPLES / "knee" / examples("knee")[0]["files"][0]
    refused = ["/etc/passwd", ROOT / "app.py", ROOT / "models" / "knee" / "model.onnx", ROOT / "models" / "knee" /
               "card.json", f"{EXAMPLES}/../app.py", ROOT / "README.md"]
    for path in refused:
        assert httpx.get(f"{app_url}gradio_api/file={path}").status_code == 403, path
    assert httpx.get(f"{app_url}gradio_api/file={example}").status_code == 200


def photo(tmp_path) -> Path:
    """A colour picture: gradients in two channels, a flat third."""
    ramp = np.linspace(0, 255, 300 * 200).reshape(200, 300).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(np.dstack([ramp, ramp[::-1], np.full_like(ramp, 40)])).save(path)
    return path


def gate_verdicts(service, folder) -> dict:
    """The gate of a colour photo and every third example on every task: (verdict, codes, routed task, feature
    distance to 2 places); run in the light install's process and in this one."""
    files = [Path(folder) / "photo.png", *sorted(EXAMPLES.glob("*/*.png"))[::3]]
    found = {}
    for task in service.models:
        for path in files:
            gate = service.analyse(task, path).gate
            found[f"{task}/{path.name}"] = [gate.verdict, [r.code for r in gate.reasons], gate.routed_task,
                                            None if gate.ood_score is None else round(gate.ood_score, 2)]
    return found


def test_the_auto_endpoint_routes_every_example(client):
    missed = []
    for task in TASKS:
        for example in examples(task):
            result, overlay = client.predict(handle_file(str(EXAMPLES / task / example["files"][0])), api_name="/auto")
            if result["task"] != task:  # the shipped router misses some knee phantoms (docs/router.md)
                assert result["gate"]["verdict"] == "refuse" and "probabilities" not in result
                missed.append(example["files"][0])
                continue
            assert result["gate"]["routed_task"] == task and result["gate"]["routed_probability"] >= 0.5
            assert set(result["probabilities"]) == set(TASKS[task].labels) and Path(overlay).exists()
    assert len(missed) <= 1, missed


def test_a_wrong_tab_upload_is_warned_about_and_names_the_task(client):
    chest = EXAMPLES / "chest14" / examples("chest14")[0]["files"][0]
    result, _ = client.predict(handle_file(str(chest)), api_name="/knee")
    gate = result["gate"]
    assert gate["verdict"] == "warn" and "other_task" in gate["codes"] and gate["routed_task"] == "chest14"
    assert TASKS["chest14"].title in " ".join(gate["reasons"])
    assert result["decision"]["text"].startswith("Warning (") and result["probabilities"]


def test_a_photo_is_refused_without_a_diagnosis(client, tmp_path):
    for endpoint in ("/chest14", "/auto", "/mura"):
        result, overlay = client.predict(handle_file(str(photo(tmp_path))), api_name=endpoint)
        assert result["gate"]["verdict"] == "refuse" and result["gate"]["codes"] == ["colour"]
        assert not {"probabilities", "heatmap", "heatmaps", "uncertainty"} & set(result)
        assert result["decision"]["text"].startswith("Refused")
    study, gallery = client.predict([handle_file(str(photo(tmp_path)))], api_name="/mura_study")
    assert study["gate"]["verdict"] == "refuse" and "probabilities" not in study


def test_a_port_already_in_use_is_a_clear_error_not_a_traceback():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
                  f"import app; app.serve(app.settings(['--port', '{port}']), block=False)\n")
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port N" in done.stderr
    assert "Traceback" not in done.stderr
