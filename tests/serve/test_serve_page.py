"""The web page of `features serve` in a real headless Chromium (Debian's), driven by selenium:
upload an image, read the ranked results, click one, see the verified matches drawn."""
from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="features serve needs the [serve] extra (aiohttp)")
pytest.importorskip("selenium", reason="the page test needs selenium (the [test] extra)")

from serve_helpers import Server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")

WIDTH, HEIGHT = 1280, 1000


@pytest.fixture(scope="module")
def server(small_store):
    srv = Server(small_store, "--threads", 2)
    yield srv
    code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars"):
        options.add_argument(arg)
    # the driver is Debian's: selenium must not try to download one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _png(data):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_upload_results_click_matches(server, browser, small_set, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url)
    wait.until(lambda d: "images" in d.find_element(By.ID, "store-info").text)
    assert "24 images" in browser.find_element(By.ID, "store-info").text

    query = small_set / "chelsea" / "perspective.jpg"
    browser.find_element(By.ID, "file").send_keys(str(query))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#results .result")))
    results = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(results) == 10
    top = results[0]
    assert top.get_attribute("data-key") == "chelsea/perspective.jpg"
    assert "chelsea" in top.find_element(By.CLASS_NAME, "label").text
    assert float(top.find_element(By.CLASS_NAME, "score").text) == pytest.approx(1.0, abs=1e-3)
    # the thumbnails are real images, loaded from /api/thumb
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#results .result img');"
        "return i && i.complete && i.naturalWidth > 0;"))
    assert browser.execute_script(
        "return document.getElementById('query-image').naturalWidth") > 0

    canvas = browser.find_element(By.ID, "match-canvas")

    def matches_of(result):
        key = result.get_attribute("data-key")
        result.click()
        wait.until(lambda d: canvas.get_attribute("data-drawn") == "1"
                   and browser.find_element(By.ID, "match-title").text == key)
        return key, int(canvas.get_attribute("data-inliers"))

    # the top result is the query's own file: many verified matches (fewer than its features:
    # words that occur more than 4 times in an image are not used for verification)
    assert matches_of(top)[1] >= 30
    # the next is another copy of the photo (half size): fewer, but still many (7 with the
    # codebook of the k-means defaults, k-means++ seeding and tol 0.1%; 8 and more with
    # 25 iterations: on this 24-image store the count moves with the codebook)
    key, inliers = matches_of(results[1])
    assert key.startswith("chelsea/") and key != "chelsea/perspective.jpg"
    assert inliers >= 7
    assert f"{inliers} verified matches" in browser.find_element(By.ID, "match-status").text

    # the drawing: query and result side by side (not placeholders), colored match lines
    drawing = _png(canvas.screenshot_as_png)
    h, w = drawing.shape[:2]
    assert h > 100 and w > 300
    rgb = drawing.astype(int)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 120).mean() > 0.002  # the lines (the photos here are gray or dull)
    left, right = drawing[:, : w // 3], drawing[:, -w // 4:]
    assert left.std() > 20 and right.std() > 20  # photos, not flat placeholders

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    page = _png(shot.read_bytes())
    assert page.shape[1] == WIDTH and page.shape[0] > 0.8 * HEIGHT
    assert page.std() > 20  # not blank
    if os.environ.get("FEATURES_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FEATURES_KEEP_SCREENSHOT"])


def test_a_non_image_shows_an_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image at all")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 30).until(lambda d: "failed" in status.text)
    assert "not an image" in status.text
    assert "error" in status.get_attribute("class")
