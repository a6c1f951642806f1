"""The app in a real browser: Debian's chromium driven by Playwright uploads an example in every tab.

Screenshots go to $RADIOGRAPH_ARTIFACTS (default test-artifacts/). Without chromium
the test skips, except where RADIOGRAPH_REQUIRE_BROWSER=1 (.ci/run sets it): there it fails.
"""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from radiograph.registry import TASKS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("RADIOGRAPH_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
WAIT_MS = 90_000


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("RADIOGRAPH_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium is not installed (apt-get install chromium) and RADIOGRAPH_REQUIRE_BROWSER=1")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def first_example(task):
    entry = json.loads((ROOT / "examples" / task / "examples.json").read_text())[0]
    return entry, [str(ROOT / "examples" / task / name) for name in entry["files"]]


def overlay_css(task):
    return f"#{task}-gallery img" if task == "mura" else f"#{task}-overlay img"


def overlay_sources(page, task):
    return page.locator(overlay_css(task)).evaluate_all("images => images.map(i => i.src)")


def test_every_tab_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load")
        expect(page.get_by_text("not a medical device").first).to_be_visible(timeout=WAIT_MS)
        for task, spec in TASKS.items():
            entry, files = first_example(task)
            page.get_by_role("tab", name=spec.title).click()
            page.locator(f"#{task}-upload input[type=file]").set_input_files(files)
            decision = page.locator(f"#{task}-decision")
            expected = entry["truth"][0].split("_")[0] if task == "mura" else entry["truth"][0]
            expect(decision).to_contain_text(expected, ignore_case=True, timeout=WAIT_MS)
            expect(page.locator(f"#{task}-label")).to_be_visible()
            page.wait_for_function(f"document.querySelectorAll('{overlay_css(task)}').length >= {len(files)}",
                                   timeout=WAIT_MS)
            before = overlay_sources(page, task)
            page.screenshot(path=str(ARTIFACTS / f"{task}.png"), full_page=True)

            page.locator(f"#{task}-class input").click()  # another heatmap class re-renders the overlay
            other = [label for label in spec.labels if label != page.locator(f"#{task}-class input").input_value()][0]
            page.get_by_role("option", name=other, exact=True).click()
            page.wait_for_function(
                f"JSON.stringify(Array.from(document.querySelectorAll('{overlay_css(task)}')).map(i => i.src))"
                f" !== {json.dumps(json.dumps(before))}", timeout=WAIT_MS)
            page.screenshot(path=str(ARTIFACTS / f"{task}_class_{other}.png"), full_page=True)
        page.get_by_role("tab", name="Models").click()
        page.get_by_role("button", name=TASKS["knee"].title, exact=False).click()
        expect(page.get_by_text("pointing game").first).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)
        browser.close()
    taken = [p for p in ARTIFACTS.glob("*.png") if p.stat().st_mtime >= started]  # this run's, not stale ones
    assert len(taken) >= 2 * len(TASKS) + 1



def test_a_new_upload_a_cleared_upload_and_a_failed_analysis_leave_nothing_stale(app_url, tmp_path):
    """The stale-result scenario: analyse, clear, upload a non-image; then analyse and clear alone. Every output
    of the tab (heading, probabilities, timing, decoded image, overlay) is empty after each."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    entry, files = first_example("knee")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is text, not an image\n" * 10)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name=TASKS["knee"].title).click()
        upload = page.locator("#knee-upload input[type=file]")

        def analysed():
            upload.set_input_files(files)
            expect(page.locator("#knee-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('#knee-preview img') !== null", timeout=WAIT_MS)

        def nothing_stale(step):
            expect(page.locator("#knee-decision")).not_to_contain_text(entry["truth"][0], timeout=WAIT_MS)
            for css in ("#knee-overlay img", "#knee-preview img"):
                expect(page.locator(css)).to_have_count(0, timeout=WAIT_MS)
            expect(page.locator("#knee-timing")).not_to_contain_text("ms", timeout=WAIT_MS)
            expect(page.locator("#knee-label")).not_to_contain_text(entry["truth"][0], timeout=WAIT_MS)
            page.screenshot(path=str(ARTIFACTS / f"stale_{step}.png"), full_page=True)

        def clear():
            page.locator("#knee-upload button[aria-label='Clear']").first.click()

        analysed()
        clear()
        nothing_stale("cleared")  # clearing alone
        upload.set_input_files(str(not_an_image))  # the scenario: analyse, clear, upload a non-image
        expect(page.get_by_text("not a recognised image").first).to_be_visible(timeout=WAIT_MS)
        nothing_stale("failed")
        clear()
        analysed()  # and the tab still works
        browser.close()


def test_the_auto_tab_routes_and_a_wrong_tab_upload_is_warned_and_opened_in_its_tab(app_url, tmp_path):
    """Any radiograph routes a chest example to its task; the same film in the knee tab gets the warning that
    names the chest task, and its button opens the film in that tab."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    entry, files = first_example("chest14")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Any radiograph").click()
        page.locator("#auto-upload input[type=file]").set_input_files(files)
        expect(page.locator("#auto-decision")).to_contain_text(f"Routed to {TASKS['chest14'].title}", timeout=WAIT_MS)
        expect(page.locator("#auto-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "auto.png"), full_page=True)

        page.get_by_role("tab", name=TASKS["knee"].title).click()
        page.locator("#knee-upload input[type=file]").set_input_files(files)
        warning = page.locator("#knee-gate [role=alert]")
        expect(warning).to_contain_text(TASKS["chest14"].title, timeout=WAIT_MS)
        expect(page.locator("#knee-decision")).to_contain_text("Warning", timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "wrong_tab_warning.png"), full_page=True)
        page.locator("#knee-open-routed").click()
        expect(page.get_by_role("tab", name=TASKS["chest14"].title)).to_have_attribute("aria-selected", "true",
                                                                                   timeout=WAIT_MS)
        page.locator("#chest14-analyse").click()
        expect(page.locator("#chest14-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
        expect(page.locator("#chest14-gate")).to_contain_text("passed", timeout=WAIT_MS)
        browser.close()


def test_the_chest_heatmap_is_described_in_words_and_redrawn_in_another_colour_map(app_url, tmp_path):
    """chest14 tab, first example: the words under the overlay name a lung zone and follow the class selector;
    choosing jet in the "Colour map" dropdown redraws the overlay (a new src)."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    entry, files = first_example("chest14")
    zones = ("upper zone", "middle zone", "lower zone")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name=TASKS["chest14"].title).click()
        page.locator("#chest14-upload input[type=file]").set_input_files(files)
        expect(page.locator("#chest14-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
        words = page.locator("#chest14-heatmap-words")
        expect(words).to_be_visible(timeout=WAIT_MS)
        expect(words).to_contain_text(f"{entry['truth'][0]} heatmap in words", timeout=WAIT_MS)
        text = words.inner_text()
        assert any(zone in text for zone in zones) and "radiological convention" in text, text
        page.wait_for_function("document.querySelector('#chest14-overlay img') !== null", timeout=WAIT_MS)
        before = overlay_sources(page, "chest14")
        page.screenshot(path=str(ARTIFACTS / "chest14_words_viridis.png"), full_page=True)

        page.locator("#chest14-colormap input").click()
        page.get_by_role("option", name="jet", exact=True).click()
        page.wait_for_function(f"JSON.stringify(Array.from(document.querySelectorAll('#chest14-overlay img'))"
                               f".map(i => i.src)) !== {json.dumps(json.dumps(before))}", timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "chest14_words_jet.png"), full_page=True)

        page.locator("#chest14-class input").click()  # another class: the words follow it
        other = next(label for label in TASKS["chest14"].labels if label != entry["truth"][0])
        page.get_by_role("option", name=other, exact=True).click()
        expect(words).to_contain_text(f"{other} heatmap in words", timeout=WAIT_MS)
        browser.close()


def _open(playwright, app_url, tmp_path):
    browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS,
                                         env={**os.environ, "HOME": str(tmp_path)})
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_url, wait_until="load")
    return browser, page


def test_example_thumbnails_analyse_and_a_typed_opacity_applies_on_enter(app_url, tmp_path):
    """Issue 22 frictions 10 and 6: the examples are thumbnails (img elements whose alt is the caption, the truth,
    also shown as text); clicking one analyses it. Typing an opacity and pressing Enter re-renders the overlay
    while the number box keeps the focus (no blur needed)."""
    from playwright.sync_api import expect, sync_playwright

    captions = [e["caption"] for e in json.loads((ROOT / "examples" / "knee" / "examples.json").read_text())]
    with sync_playwright() as playwright:
        browser, page = _open(playwright, app_url, tmp_path)
        page.get_by_role("tab", name=TASKS["knee"].title).click()
        thumbnails = page.locator("#knee-examples img")
        expect(thumbnails).to_have_count(len(captions), timeout=WAIT_MS)
        assert thumbnails.evaluate_all("images => images.map(i => i.alt)") == captions
        expect(page.locator("#knee-examples")).to_contain_text(captions[0])  # visible text too
        thumbnails.nth(0).click()
        expect(page.locator("#knee-decision")).to_contain_text(captions[0].removeprefix("Truth: ").split(" (")[0],
                                                               timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#knee-overlay img') !== null", timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "example_thumbnails.png"), full_page=True)
        before = page.locator("#knee-overlay img").get_attribute("src")
        box = page.locator("#knee-opacity input[type=number]")
        box.fill("0.9")
        box.press("Enter")
        page.wait_for_function(f"document.querySelector('#knee-overlay img').src !== {json.dumps(before)}",
                               timeout=WAIT_MS)
        assert page.evaluate("document.activeElement.dataset.testid") == "number-input"  # applied without a blur
        browser.close()


def _whole(images) -> list:
    """The images whose content is cut off: neither object-fit contain nor a box of the image's own aspect."""
    return images.evaluate_all(
        "images => images.filter(i => getComputedStyle(i).objectFit !== 'contain' && Math.abs(i.naturalWidth / "
        "i.naturalHeight - i.clientWidth / i.clientHeight) > 0.02 || i.getBoundingClientRect().bottom > "
        "i.closest('.block').getBoundingClientRect().bottom + 1).map(i => i.src)")


def test_study_views_and_report_figures_are_shown_whole(app_url, tmp_path):
    """Issue 22 friction 7: every view of a MURA study and every report figure in the Models tab is whole: object-fit
    contain (or a box of the image's aspect), and its box inside its component, not cut off below."""
    from playwright.sync_api import expect, sync_playwright

    entry, _ = first_example("mura")
    with sync_playwright() as playwright:
        browser, page = _open(playwright, app_url, tmp_path)
        page.get_by_role("tab", name=TASKS["mura"].title).click()
        page.locator("#mura-examples img").first.click()
        page.wait_for_function(f"document.querySelectorAll('#mura-gallery img').length >= {len(entry['files'])}",
                               timeout=WAIT_MS)
        page.wait_for_function("Array.from(document.querySelectorAll('#mura-gallery img')).every(i => i.complete)",
                               timeout=WAIT_MS)
        assert _whole(page.locator("#mura-gallery img")) == []
        page.screenshot(path=str(ARTIFACTS / "mura_gallery_whole.png"), full_page=True)
        page.get_by_role("tab", name="Models").click()
        page.get_by_role("button", name=TASKS["knee"].title, exact=False).click()
        figures = page.locator("[id^=knee-report-] img")
        expect(figures).to_have_count(3, timeout=WAIT_MS)  # ROC, confusion matrix, training curves
        page.wait_for_function("Array.from(document.querySelectorAll('[id^=knee-report-] img')).every(i => "
                               "i.complete && i.naturalWidth > 0)", timeout=WAIT_MS)
        assert _whole(figures) == []
        curves = page.locator("#knee-report-training_curves img").bounding_box()
        assert curves["width"] >= 700  # across the page, not a thumbnail
        page.screenshot(path=str(ARTIFACTS / "models_figures.png"), full_page=True)
        browser.close()


def test_the_pdf_report_downloads_after_an_analysis_and_holds_the_shown_numbers(app_url, tmp_path):
    """Analyse the knee example, click "Download PDF report": a one-page PDF whose text holds the top class and
    probability the tab shows, the file's sha256 and the notice; clearing the upload hides the button again."""
    import hashlib
    import re

    import pypdfium2 as pdfium
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    entry, files = first_example("knee")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name=TASKS["knee"].title).click()
        report = page.locator("#knee-report")
        expect(report).to_be_hidden(timeout=WAIT_MS)  # nothing to download before an analysis
        page.locator("#knee-upload input[type=file]").set_input_files(files)
        expect(page.locator("#knee-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
        expect(report).to_be_visible(timeout=WAIT_MS)
        top = page.locator("#knee-label [data-testid$='-confidence-set']").first
        shown_label = top.locator("dt").inner_text().strip()
        shown_percent = int(top.locator("meter").get_attribute("aria-valuenow"))
        with page.expect_download(timeout=WAIT_MS) as downloading:
            report.click()
        saved = tmp_path / downloading.value.suggested_filename
        downloading.value.save_as(saved)
        page.screenshot(path=str(ARTIFACTS / "report_download.png"), full_page=True)
        page.locator("#knee-upload button[aria-label='Clear']").first.click()
        expect(report).to_be_hidden(timeout=WAIT_MS)  # cleared with the other outputs
        browser.close()
    document = pdfium.PdfDocument(saved.read_bytes())
    assert saved.suffix == ".pdf" and len(document) == 1
    text = " ".join(document[0].get_textpage().get_text_range().split())
    row = re.search(rf"{re.escape(shown_label)} (\d\.\d{{3}})", text)
    assert row and round(float(row.group(1)) * 100) == shown_percent, (shown_label, shown_percent, text[:400])
    assert hashlib.sha256(Path(files[0]).read_bytes()).hexdigest() in text and "NOT A MEDICAL DEVICE" in text
    document[0].render(scale=1.5).to_pil().save(ARTIFACTS / "report_knee_page.png")


def test_switching_to_grad_cam_plus_plus_re_renders_the_knee_overlay(app_url, tmp_path):
    """The Heatmap method radio (shown where TensorFlow is installed: the Keras path) re-renders the overlay."""
    pytest.importorskip("keras")
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    entry, files = first_example("knee")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name=TASKS["knee"].title).click()
        page.locator("#knee-upload input[type=file]").set_input_files(files)
        expect(page.locator("#knee-decision")).to_contain_text(entry["truth"][0], timeout=WAIT_MS)
        page.wait_for_function(f"document.querySelectorAll('{overlay_css('knee')}').length >= 1", timeout=WAIT_MS)
        before = overlay_sources(page, "knee")
        page.locator("#knee-method").get_by_label("Grad-CAM++").check()
        page.wait_for_function(
            f"JSON.stringify(Array.from(document.querySelectorAll('{overlay_css('knee')}')).map(i => i.src))"
            f" !== {json.dumps(json.dumps(before))}", timeout=WAIT_MS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "knee_gradcam_plus_plus.png"), full_page=True)
        browser.close()
