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
