"""A real PACS: Debian's Orthanc with its DICOMweb plugin, started here with HTTP basic authentication.

Phantom studies go in as DICOM through STOW-RS; the app's API and the batch command search them (QIDO-RS), fetch
them (WADO-RS), analyse them (MURA as a study) and store the results back (STOW-RS), which are then read back and
checked for their references. Server errors (down, study not found, refused credentials) and the fetch budgets are
tested too. CI sets RADIOGRAPH_REQUIRE_ORTHANC=1, so a missing Orthanc fails there instead of skipping.
"""
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from radiograph import pacs as pacs_module
from radiograph.dicom_results import REPORT_DESCRIPTION, SERIES_DESCRIPTION, STUDY_REPORT_DESCRIPTION
from radiograph.pacs import CappedSession, Pacs, PacsError, ResponseTooLarge
from train.phantoms.dicom import study_bytes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
USER, PASSWORD = "radiograph", "phantom-only-password"
IDENTIFYING = ("PHANTOM^SYNTHETIC", "PHANTOM-WRIST", "PHANTOM-HAND", "PHANTOM-CHEST", "PatientName", "PatientID")


def grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    from radiograph.orthanc import Orthanc, OrthancUnavailable

    try:
        server = Orthanc(tmp_path_factory.mktemp("orthanc"), user=USER, password=PASSWORD).start()
    except OrthancUnavailable as error:
        if os.environ.get("RADIOGRAPH_REQUIRE_ORTHANC") == "1":
            pytest.fail(f"RADIOGRAPH_REQUIRE_ORTHANC=1 but {error}")
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pacs(orthanc):
    return Pacs(orthanc.url, USER, PASSWORD)


@pytest.fixture(scope="module")
def studies(pacs):
    """Three phantom studies stored through STOW-RS: {name: (Study Instance UID, [file bytes])}."""
    mura = EXAMPLES / "mura"
    wrist = [grey(p) for p in sorted((mura / "XR_WRIST").rglob("*.png"))]
    hand = [grey(p) for p in sorted((mura / "XR_HAND").rglob("*.png"))]
    chest = [grey(EXAMPLES / "chest14" / "00000060_001.png")]
    made = {"wrist": study_bytes(wrist, "WRIST", "PHANTOM-WRIST"), "hand": study_bytes(hand, "HAND", "PHANTOM-HAND"),
            "chest": study_bytes(chest, "CHEST", "PHANTOM-CHEST", modality="DX")}
    result = {}
    for name, files in made.items():
        datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
        stored = pacs.store(datasets)
        assert sorted(stored) == sorted(str(d.SOPInstanceUID) for d in datasets)
        result[name] = (str(datasets[0].StudyInstanceUID), files)
    return result


def test_search_lists_the_studies_without_identifying_values(pacs, studies):
    rows = pacs.search()
    assert {uid for uid, _ in studies.values()} <= {row["study"] for row in rows}
    assert not any(value in json.dumps(rows) for value in IDENTIFYING)
    [row] = pacs.search(patient_id="PHANTOM-HAND")  # a filter, never shown
    assert row["study"] == studies["hand"][0] and row["instances"] == "3" and row["modalities"] == "CR"
    assert [r["study"] for r in pacs.search(modality="dx")] == [studies["chest"][0]]
    assert pacs.search(date="20261201-20261231") and not pacs.search(date="19990101")
    with pytest.raises(PacsError, match="not accepted: give YYYYMMDD"):
        pacs.search(date="yesterday")
    with pytest.raises(PacsError, match="not accepted: give a UID"):
        pacs.search(study="1.2/../../instances")


def test_fetched_instances_equal_what_was_stored(pacs, studies):
    uid, files = studies["wrist"]
    instances, skipped = pacs.fetch_study(uid)
    assert skipped == 0 and [item.data for item in instances] == files  # in instance number order, byte for byte
    assert all(item.address.startswith(f"studies/{uid}/series/") for item in instances)
    again = [pydicom.dcmread(io.BytesIO(data)) for data in files + files[:1]]  # stored again, one of them twice
    assert sorted(pacs.store(again)) == sorted({str(d.SOPInstanceUID) for d in again})  # each UID once
    assert len(pacs.fetch_study(uid)[0]) == len(files)  # one copy each


def references(pacs, uid):
    """The study's instances read back: (sources, Secondary Captures, Structured Reports, study reports)."""
    found = pacs.client.search_for_instances(study_instance_uid=uid, fields=["SeriesDescription"])
    datasets = [pydicom.dcmread(io.BytesIO(pacs.fetch_instance(uid, item["0020000E"]["Value"][0],
                                                               item["00080018"]["Value"][0]))) for item in found]
    kinds = {SERIES_DESCRIPTION: [], REPORT_DESCRIPTION: [], STUDY_REPORT_DESCRIPTION: [], "source": []}
    for dataset in datasets:
        kinds.get(str(dataset.get("SeriesDescription", "")), kinds["source"]).append(dataset)
    return (kinds["source"], kinds[SERIES_DESCRIPTION], kinds[REPORT_DESCRIPTION], kinds[STUDY_REPORT_DESCRIPTION])


def assert_results_reference_their_sources(pacs, uid, views, study_reports=1):
    sources, scs, srs, studies = references(pacs, uid)
    assert len(sources) == views and len(scs) == views and len(srs) == views and len(studies) == study_reports
    source_uids = {str(d.SOPInstanceUID) for d in sources}
    for sc in scs:
        assert sc.StudyInstanceUID == uid and sc.Modality == "OT" and sc.PhotometricInterpretation == "RGB"
        assert str(sc.SourceImageSequence[0].ReferencedSOPInstanceUID) in source_uids
    sc_uids = {str(d.SOPInstanceUID) for d in scs}
    for sr in srs:
        assert sr.StudyInstanceUID == uid
        evidence = {str(item.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        assert len(evidence & source_uids) == 1 and len(evidence & sc_uids) == 1
        assert all(study.StudyInstanceUID == uid for study in sr.CurrentRequestedProcedureEvidenceSequence)
        names = [item.ConceptNameCodeSequence[0].CodeMeaning for item in sr.ContentSequence]
        assert "Finding" in names and "Algorithm Version" in names
    for report in studies:  # the study's report (MURA): every view as evidence, its decision's text
        evidence = {str(item.ReferencedSOPInstanceUID) for study in report.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        assert report.StudyInstanceUID == uid and evidence == source_uids
        assert any(item.get("TextValue", "").startswith(("Normal", "Abnormal")) for item in report.ContentSequence)


@pytest.fixture(scope="module")
def pacs_client(orthanc):
    """The app with the PACS configured (credentials from the environment), through gradio_client."""
    import app
    from bench.endpoints import free_port
    from gradio_client import Client

    saved = {key: os.environ.get(key) for key in ("RADIOGRAPH_DICOMWEB_USER", "RADIOGRAPH_DICOMWEB_PASSWORD")}
    os.environ.update(RADIOGRAPH_DICOMWEB_USER=USER, RADIOGRAPH_DICOMWEB_PASSWORD=PASSWORD)
    try:
        demo, url = app.serve(app.settings(["--port", str(free_port()), "--dicomweb", orthanc.url, "--cam", "onnx"]),
                              block=False)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    yield Client(url, verbose=False)
    demo.close()
    demo.radiograph_app.close()


def test_round_trip_through_the_app_api(pacs, studies, pacs_client):
    uid, _ = studies["wrist"]
    rows, chooser, status = pacs_client.predict("", "", "CR", "", api_name="/pacs_search")
    assert uid in [row[0] for row in rows["data"]] and "found" in status
    assert not any(value in json.dumps(rows) for value in IDENTIFYING)
    start = time.perf_counter()
    result, gallery, status = pacs_client.predict(uid, "mura", True, api_name="/pacs_analyse")
    seconds = time.perf_counter() - start
    assert result["study_instance_uid"] == uid and len(result["instances"]) == 3 and len(gallery) == 3
    assert result["study"]["views"] == 3 and "decision" in result["study"]  # a MURA study, decided as one
    assert result["study"]["decision"]["text"]
    assert len(result["stored"]["instances"]) == 7 and "Stored 7 results" in status  # 3 x (overlay, report), study
    assert not any(value in json.dumps(result) for value in IDENTIFYING)
    assert_results_reference_their_sources(pacs, uid, 3)
    again, _, status = pacs_client.predict(uid, "mura", False, api_name="/pacs_analyse")
    assert again["skipped_objects"] == 7 and "skipped 7 other objects" in status  # its own results are not images
    assert "by the MURA (musculoskeletal) model." in status
    assert [v["result"]["probabilities"] for v in again["instances"]] == \
        [v["result"]["probabilities"] for v in result["instances"]]
    routed, _, status = pacs_client.predict(uid, "auto", False, api_name="/pacs_analyse")  # each image routed
    assert {v["result"]["task"] for v in routed["instances"]} == {"mura"} and routed["study"]["views"] == 3
    assert routed["study"]["decision"] == result["study"]["decision"] and "Study: " in status
    assert "by the MURA (musculoskeletal) model, routed." in status  # the status names the task it was routed to
    print(f"round trip of a 3-view study through the app (search done; fetch, analyse, store): {seconds:.2f} s, "
          f"fetch {result['timings_ms']['fetch']:.0f} ms, analyse {result['timings_ms']['analyse']:.0f} ms")


def test_round_trip_through_the_batch_command(pacs, studies, orthanc, tmp_path):
    uid, _ = studies["hand"]
    chest, _ = studies["chest"]
    out = tmp_path / "results.json"
    env = {**os.environ, "RADIOGRAPH_DICOMWEB_USER": USER, "RADIOGRAPH_DICOMWEB_PASSWORD": PASSWORD}
    stored = []
    for _ in range(2):  # run again (a retry after a failed store): the results keep their UIDs, one copy is kept
        done = subprocess.run([sys.executable, "-m", "radiograph", "predict", "mura", "--dicomweb", orthanc.url,
                               "--study", uid, "--store", "--out", str(out), "--quiet", "--processes", "0"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        rows = json.loads(out.read_text())
        images = [row for row in rows if row["kind"] == "image"]
        [study] = [row for row in rows if row["kind"] == "study"]
        assert len(images) == 3 and all(row["status"] == "ok" and len(row["stored"]) == 2 for row in images)
        assert all(row["file"].startswith(f"{orthanc.url}/studies/{uid}/series/") for row in images)
        assert study["file"] == f"{orthanc.url}/studies/{uid}" and study["views"] == 3
        assert len(study["stored"]) == 1 and "7 DICOM results stored in 1 studies" in done.stderr
        assert not any(value in out.read_text() + done.stderr for value in IDENTIFYING)
        stored.append(sorted(u for row in rows for u in row["stored"]))
    assert stored[0] == stored[1]
    assert_results_reference_their_sources(pacs, uid, 3)  # 3 overlays, 3 reports, 1 study report: no second copy
    csv = subprocess.run([sys.executable, "-m", "radiograph", "predict", "chest14", "--study", chest, "--quiet",
                          "--processes", "0"], cwd=ROOT, env={**env, "RADIOGRAPH_DICOMWEB_URL": orthanc.url},
                         capture_output=True, text=True, timeout=300)
    assert csv.returncode == 0, csv.stderr
    assert f"{orthanc.url}/studies/{chest}/series/" in csv.stdout and "1 of 1 files predicted" in csv.stderr


def test_server_errors_are_clear_and_the_app_keeps_its_place(pacs, studies, pacs_client, orthanc):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="is not on the DICOMweb server"):
        pacs_client.predict("1.2.3.4.5", "mura", False, api_name="/pacs_analyse")
    with pytest.raises(AppError, match="not accepted"):
        pacs_client.predict("", "not-a-date", "", "", api_name="/pacs_search")
    rows, _, _ = pacs_client.predict("", "", "", "", api_name="/pacs_search")  # still serving
    assert len(rows["data"]) >= 3
    with pytest.raises(PacsError, match="refused the credentials") as refused:
        Pacs(orthanc.url, USER, "wrong").search()
    assert refused.value.kind == "unauthorised" and "wrong" not in str(refused.value)
    from bench.endpoints import free_port

    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    result = pydicom.dcmread(io.BytesIO(studies["chest"][1][0]))
    for call in (lambda p: p.search(), lambda p: p.fetch_study(studies["chest"][0]), lambda p: p.store([result])):
        with pytest.raises(PacsError, match="is not reachable") as unreachable:
            call(Pacs(down))
        assert unreachable.value.kind == "unreachable"
    with pytest.raises(PacsError, match="must be http"):
        Pacs("orthanc:8042")
    embedded = Pacs(orthanc.url.replace("http://", f"http://{USER}:{PASSWORD}@"))  # credentials in the URL
    assert PASSWORD not in embedded.url and USER not in embedded.url and embedded.search()
    for broken in ("http://u:secret@host:99999/x", "http://u:secret@:80/x", "htp://u:secret@host/x"):
        with pytest.raises(PacsError, match="must be http") as refused_url:
            Pacs(broken)
        assert "secret" not in str(refused_url.value)
    with pytest.raises(PacsError, match="no wildcard"):  # IDs are not to be recovered prefix by prefix
        pacs.search(patient_id="PHANTOM-*")


def test_credentials_in_the_url_are_taken_out_and_the_host_kept_as_written():
    """No server needed: user:password@ becomes the session's credentials; an IPv6 host keeps its brackets."""
    for url, expected, auth in (("http://u:p%40ss@[::1]:8042/dicom-web/", "http://[::1]:8042/dicom-web", ("u", "p@ss")),
                                ("http://[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web", None),
                                ("https://reader@pacs.example:443/wado", "https://pacs.example:443/wado", ("reader", ""))):
        client = Pacs(url)
        assert (client.url, client.session.auth) == (expected, auth) and "p@ss" not in repr(client)
    for broken in ("http://u:secret@[::1]:99999/x", "http://[::1:80/x"):
        with pytest.raises(PacsError, match="must be http") as refused_url:
            Pacs(broken)
        assert "secret" not in str(refused_url.value)


def test_the_app_says_a_down_server_without_losing_its_place():
    """The handlers alone (no models needed): a server that is down becomes the user's message."""
    import gradio as gr

    import app
    from bench.endpoints import free_port

    handlers = app.App.__new__(app.App)
    handlers.pacs = Pacs(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(gr.Error, match="is not reachable"):
        handlers.pacs_search("", "", "", "")
    with pytest.raises(gr.Error, match="Nothing to store yet"):
        handlers.pacs_store(None)
    with pytest.raises(gr.Error, match="in the PACS already"):  # said, not stored again
        handlers.pacs_store({"analyses": [], "study": "1.2.3", "stored": True})


def test_fetch_budgets_hold(pacs, studies, monkeypatch):
    uid, _ = studies["wrist"]
    monkeypatch.setattr(pacs_module, "MAX_VIEWS", 2)
    with pytest.raises(PacsError, match="at most 2 are analysed") as many:
        pacs.fetch_study(uid)
    assert many.value.kind == "too_large"
    monkeypatch.setattr(pacs_module, "MAX_VIEWS", 12)
    monkeypatch.setattr(pacs_module, "MAX_REQUEST_BYTES", 500_000)  # the three views add up to about 1 MB
    with pytest.raises(PacsError, match="larger than 0 MB together"):
        pacs.fetch_study(uid)
    monkeypatch.setattr(pacs_module, "MAX_FILE_BYTES", 100_000)  # the wrist views are 230-410 kB
    with pytest.raises(ResponseTooLarge, match="larger than"):
        pacs.fetch_study(uid)


class Endless(BaseHTTPRequestHandler):
    """A server whose answer never ends (no Content-Length), or lies about its length."""

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.startswith("/malformed"):  # valid JSON, not DICOM JSON
            body = b'[1, {"0020000D": "x"}]'
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302 if self.path.startswith("/redirect") else 200)
        if self.path.startswith("/redirect"):
            self.send_header("Location", "/endless")
        self.send_header("Content-Type", "application/dicom+json")
        if self.path.endswith("lying"):
            self.send_header("Content-Length", str(2**40))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"[" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_):
        pass


def test_an_answer_is_read_with_a_byte_cap_whatever_it_claims():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for path in ("endless", "lying"):
            session = CappedSession(limit=2**20)
            start = time.perf_counter()
            with pytest.raises(ResponseTooLarge):
                session.get(f"http://127.0.0.1:{server.server_port}/{path}", timeout=5)
            assert time.perf_counter() - start < 5
        with pytest.raises(PacsError, match="larger than"):  # through a search, too
            Pacs(f"http://127.0.0.1:{server.server_port}/dicom-web").search()
        start = time.perf_counter()  # a redirect with an endless body: not followed, its body never read
        with pytest.raises(PacsError, match="redirect"):
            Pacs(f"http://127.0.0.1:{server.server_port}/redirect").search()
        assert time.perf_counter() - start < 5
        with pytest.raises(PacsError, match="not valid DICOMweb") as malformed:
            Pacs(f"http://127.0.0.1:{server.server_port}/malformed").search()
        assert malformed.value.kind == "server"
    finally:
        server.shutdown()


def test_no_pacs_tab_or_endpoint_without_a_server(app_url):
    from gradio_client import Client

    info = Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert not any(name.startswith("/pacs") for name in info)


def test_the_pacs_tab_in_a_real_browser(pacs, studies, pacs_client, tmp_path):
    """Debian's chromium on the PACS tab: search by modality, fetch and analyse the chosen study, store its results
    with the button once (a second press is refused with a message, nothing stored twice), and axe-core finds no
    serious or critical violation on the tab with a result shown. Last in this module: it adds results to the
    chest study."""
    from playwright.sync_api import expect, sync_playwright
    from test_browser import ARTIFACTS, WAIT_MS, axe_check, open_app

    uid, _ = studies["chest"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = open_app(playwright, pacs_client.src, tmp_path)
        expect(page.get_by_text("not a medical device").first).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("tab", name="PACS").click()
        status = page.locator("#pacs-status")
        page.get_by_label("Modality (e.g. CR, DX)").fill("DX")
        page.locator("#pacs-search").click()
        expect(status).to_contain_text("1 study found", timeout=WAIT_MS)
        expect(page.locator("#pacs-studies")).to_contain_text(uid)
        assert not any(value in page.content() for value in IDENTIFYING)
        page.locator("#pacs-analyse").click()  # the chooser holds the study found
        expect(status).to_contain_text("Fetched 1 image instances", timeout=WAIT_MS)
        page.wait_for_function("document.querySelectorAll('#pacs-gallery img').length === 1", timeout=WAIT_MS)
        found = axe_check(page, "pacs_result")
        page.screenshot(path=str(ARTIFACTS / "pacs.png"), full_page=True)
        page.locator("#pacs-store").click()
        expect(status).to_contain_text("Stored 2 results", timeout=WAIT_MS)  # an overlay and a report
        page.locator("#pacs-store").click()
        expect(page.get_by_text("in the PACS already").first).to_be_visible(timeout=WAIT_MS)
        expect(status).to_contain_text("Stored 2 results")  # the tab keeps its place
        browser.close()
    assert not found, "\n".join(found)
    images, others = pacs.image_instances(uid)
    assert (len(images), others) == (1, 2)  # stored once: one overlay and one report beside the film
    assert_results_reference_their_sources(pacs, uid, 1, study_reports=0)
