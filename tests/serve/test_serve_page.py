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

    status = browser.find_element(By.ID, "match-status")
    # the top result is the query's own file: many verified matches (fewer than its features:
    # words that occur more than 4 times in an image are not used for verification), said
    # to be the query itself, and only a spread subset of them drawn
    inliers = matches_of(top)[1]
    assert inliers >= 30
    lines = int(canvas.get_attribute("data-lines"))
    assert canvas.get_attribute("data-self") == "1"
    assert "the query image itself" in status.text
    assert lines == min(inliers, 60)
    assert ("showing" in status.text) == (lines < inliers)
    assert "RANSAC" not in status.text
    # the next is another copy of the photo (half size): fewer, but still many (7 with the
    # codebook of the k-means defaults, k-means++ seeding and tol 0.1%; 8 and more with
    # 25 iterations: on this 24-image store the count moves with the codebook)
    key, inliers = matches_of(results[1])
    assert key.startswith("chelsea/") and key != "chelsea/perspective.jpg"
    assert inliers >= 7
    assert f"{inliers} verified matches" in status.text
    # the words of the README and of features/search/spatial.py, not the RANSAC it replaced
    assert "local optimization" in status.text and "RANSAC" not in status.text
    assert canvas.get_attribute("data-self") == ""
    assert int(canvas.get_attribute("data-lines")) == min(inliers, 150)

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


def test_many_matches_are_drawn_as_a_readable_subset(server, browser):
    """The photo against itself at 2000 keypoints verifies about a thousand matches: drawn
    whole they are a solid block. The page draws a subset spread over the image and says so
    (this store's photos are too small for that many, so the answer is made up here and drawn
    by the page's own functions)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return typeof drawMatches === 'function'"))
    out = browser.execute_script("""
        const grid = (n, shift) => Array.from({length: n}, (_, i) => {
          const x = ((i * 37) % 101) / 101, y = ((i * 53) % 97) / 97;
          return [x, y, Math.min(1, x + shift), y];
        });
        const canvas = document.createElement('canvas');
        const size = {width: 640, height: 480};
        const self = {query: size, result: size, inliers: 1066, matches: grid(500, 0)};
        const other = {query: size, result: size, inliers: 420, matches: grid(420, 0.2)};
        const subset = spreadSubset(self.matches, MAX_LINES);
        const quarters = new Set(subset.map(([x, y]) => (x < 0.5 ? 0 : 1) + (y < 0.5 ? 0 : 2)));
        const ys = subset.map(m => m[1]);
        return {self: isSelfMatch(self), other: isSelfMatch(other),
                selfLines: drawMatches(canvas, self, null, null, MAX_SELF_LINES),
                otherLines: drawMatches(canvas, other, null, null, MAX_LINES),
                quarters: quarters.size, spreadY: Math.max(...ys) - Math.min(...ys),
                maxLines: MAX_LINES};""")
    assert out["self"] is True and out["other"] is False
    assert 20 <= out["selfLines"] <= 100
    assert 100 <= out["otherLines"] == out["maxLines"] <= 200
    assert out["quarters"] == 4 and out["spreadY"] > 0.8


def _searches(browser):
    return browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/search')).length")


def test_changing_a_control_runs_the_query_again(server, browser, small_set):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url)
    browser.find_element(By.ID, "file").send_keys(str(small_set / "coins" / "original.jpg"))

    def results():
        return browser.find_elements(By.CSS_SELECTOR, "#results .result")

    wait.until(lambda d: len(results()) == 10)
    assert _searches(browser) == 1
    assert "inliers" not in results()[0].text
    Select(browser.find_element(By.ID, "k")).select_by_visible_text("5")
    wait.until(lambda d: len(results()) == 5)
    assert _searches(browser) == 2
    browser.find_element(By.ID, "rerank").click()  # verify: re-ranked, with inlier counts
    wait.until(lambda d: _searches(d) == 3 and len(results()) == 5
               and "inliers" in results()[0].text)
    assert results()[0].get_attribute("data-key") == "coins/original.jpg"
    assert "rerank=1" in browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/search')).pop().name")


@pytest.fixture(scope="module")
def split_links_store(tmp_path_factory, small_set, small_config):
    """A train/ val/ split tree whose val/ folders hold symbolic links to images outside it
    (the folder of links a user makes to avoid copying a dataset)."""
    from features.pipeline import run
    from features.sources import open_source
    root = tmp_path_factory.mktemp("splitlinks") / "images"
    for cls in sorted(p.name for p in small_set.iterdir()):
        files = sorted((small_set / cls).iterdir())
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
        for f in files[:4]:
            shutil.copy(f, root / "train" / cls / f.name)
        for f in files[4:]:
            (root / "val" / cls / f.name).symlink_to(f)
    out = tmp_path_factory.mktemp("splitstore") / "store"
    source = open_source(str(root))
    assert source.kind == "split-tree"
    run(small_config, source, out, progress=False)
    return out


def test_thumbnails_of_a_split_tree_of_links(split_links_store, browser, small_set):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from serve_helpers import get_json

    srv = Server(split_links_store, "--threads", 2)
    try:
        status, health = get_json(srv.url + "api/health")
        assert status == 200 and health["thumbnails"] is True
        wait = WebDriverWait(browser, 60)
        browser.get(srv.url)
        wait.until(lambda d: "images" in d.find_element(By.ID, "store-info").text)
        assert "no thumbnails" not in browser.find_element(By.ID, "store-info").text
        Select(browser.find_element(By.ID, "k")).select_by_visible_text("20")
        browser.find_element(By.ID, "file").send_keys(str(small_set / "rocket" / "original.jpg"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 20)
        keys = [r.get_attribute("data-key")
                for r in browser.find_elements(By.CSS_SELECTOR, "#results .result")]
        assert any(k.startswith("train/") for k in keys) and any(k.startswith("val/")
                                                                 for k in keys)
        # every result shows its picture: copied files and links alike (scrolled to, as the
        # thumbnails load lazily)
        browser.execute_script(
            "document.querySelectorAll('#results .result').forEach(r => r.scrollIntoView());")
        wait.until(lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll('#results .result img')];"
            "return imgs.length === 20 && imgs.every(i => i.complete);"))
        widths = browser.execute_script(
            "return [...document.querySelectorAll('#results .result img')]"
            ".map(i => [i.alt, i.naturalWidth]);")
        assert all(w > 0 for _, w in widths), widths
        assert not browser.find_elements(By.CSS_SELECTOR, "#results .thumb:not(:has(img))")
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err and "no thumbnails" not in err, err


def test_no_upload_where_no_image_can_query(browser, tmp_path):
    """An index over rows no image can be encoded as: the page offers no upload and says
    why, rather than failing every upload."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from conftest import write_store
    from features.pipeline import build_index
    store = write_store(tmp_path / "s", np.random.default_rng(0).random((30, 16), np.float32),
                        dense=True)
    build_index(store, encoding="dense", progress=False)
    srv = Server(store, "--threads", 1)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(srv.url)
        wait.until(lambda d: "No queries by image" in d.find_element(By.ID, "status").text)
        assert "encodings/dense" in browser.find_element(By.ID, "status").text
        assert not browser.find_element(By.ID, "drop").is_displayed()
        assert not browser.find_element(By.ID, "k").is_displayed()
    finally:
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err
