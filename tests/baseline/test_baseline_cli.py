"""`features baseline` on synthetic stores: results, --json, the report, and bad input."""
import json

import numpy as np
import pytest

from features.baseline.synthetic import write_synthetic_store
from features.cli import main

BREEDS = ["n02085620", "n02085782", "n02099601", "n02110958"]
CARS = ["n04285008", "n02814533", "n03100240"]
CLASSES = BREEDS + CARS + ["n01440764"]


def _store(path, per_class=40, classes=CLASSES, **kw):
    labels = np.repeat(np.arange(len(classes)), per_class)
    kw.setdefault("dense", {"fisher": (64, "float16")})
    kw.setdefault("sparse", {"bovw": (100, 12)})
    return write_synthetic_store(path, labels, classes=classes, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("bl") / "store", separation=0.4)


def _run(capsys, *args):
    code = main(["baseline", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_encoding_and_classifier_json(store, capsys):
    code, out, _ = _run(capsys, store, "--json", "--epochs", "5")
    assert code == 0
    r = json.loads(out)
    got = {(x["encoding"], x["classifier"]) for x in r["results"]}
    assert got == {(e, c) for e in ("bovw", "fisher") for c in ("svm", "logreg")}
    assert r["hierarchy"] == "WordNet 3.0 nouns"
    assert r["class_names"][0] == "Chihuahua"  # names from WordNet when the store has none
    assert r["val_images"] == 8 * 8 and r["train_images"] + r["heldout_images"] == 8 * 32
    for x in r["results"]:
        assert 0 <= x["top5_error"] <= x["top1_error"] < 0.5
        assert x["hierarchical_error"] is not None and x["hierarchical_error"] >= 0
        assert len(x["per_class_accuracy"]) == 8
        assert x["hedging"]["curve"]["accuracy"][-1] == pytest.approx(1.0)
        assert str(x["lambda"] if x["lambda"] >= 1e-6 else 1e-6)
    best = min(r["results"], key=lambda x: (x["top1_error"], x["top5_error"]))
    assert r["best"]["encoding"] == best["encoding"]


def test_one_encoding_one_classifier_text(store, capsys):
    code, out, _ = _run(capsys, store, "--encoding", "fisher", "--classifier", "logreg",
                        "--train-per-class", "10", "--epochs", "3", "-q")
    assert code == 0
    assert "fisher" in out and "bovw" not in out and "best: fisher / logreg" in out
    assert out.startswith("72 training images (+8 held out)")  # 10 per class, 1 held out


def test_source_splits_are_used(tmp_path, capsys):
    labels = np.repeat(np.arange(3), 20)
    split = np.array((["train"] * 15 + ["val"] * 5) * 3)
    write_synthetic_store(tmp_path / "s", labels, classes=BREEDS[:3], split=split,
                          dense={"fisher": (32, "float32")})
    code, out, _ = _run(capsys, tmp_path / "s", "--json", "--epochs", "2")
    r = json.loads(out)
    assert r["split"] == "source splits" and r["val_images"] == 15


def test_val_store_with_the_same_codebook(tmp_path, capsys):
    cb = np.random.default_rng(0).random((16, 128))
    _store(tmp_path / "train", centroids=cb, seed=1)
    _store(tmp_path / "val", per_class=5, centroids=cb, seed=2)
    code, out, _ = _run(capsys, tmp_path / "train", "--val", tmp_path / "val", "--json",
                        "--epochs", "2", "--encoding", "fisher")
    assert code == 0
    r = json.loads(out)
    assert r["split"] == "val store" and r["val_images"] == 40


@pytest.mark.parametrize("case, message", [
    ("no-labels", "has no labels"),
    ("single-class", "single class"),
    ("empty-class", "'n02110958' has no training image"),
    ("other-codebook", "another codebook"),
    ("unknown-encoding", "no encoding 'vlad'"),
    ("not-a-store", "not a features store"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, case, message):
    args = [tmp_path / "s"]
    if case == "no-labels":
        write_synthetic_store(tmp_path / "s", np.full(20, -1), classes=[],
                              dense={"fisher": (8, "float32")})
    elif case == "single-class":
        write_synthetic_store(tmp_path / "s", np.zeros(20), classes=BREEDS[:1],
                              dense={"fisher": (8, "float32")})
    elif case == "empty-class":
        labels = np.repeat(np.arange(3), 10)
        write_synthetic_store(tmp_path / "s", labels, classes=BREEDS, dense={"fisher": (8, "float32")})
    elif case == "other-codebook":
        _store(tmp_path / "s", per_class=5, centroids=np.zeros((16, 128)))
        _store(tmp_path / "v", per_class=5, centroids=np.ones((16, 128)))
        args += ["--val", tmp_path / "v"]
    elif case == "unknown-encoding":
        _store(tmp_path / "s", per_class=5)
        args += ["--encoding", "vlad"]
    code, out, err = _run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: ") and message in lines[0]


SHARK = "n01484850"  # "great white shark": a name longer than the old labels' 16 characters


@pytest.fixture(scope="module")
def report_store(tmp_path_factory):
    """A store whose manifest names a folder of its images (gray noise with a class-sized
    ring), so that the report draws the strip of examples, with a long class name and three
    encodings."""
    import cv2
    from features.store.layout import FORMAT, MANIFEST_FILE
    d = tmp_path_factory.mktemp("report")
    classes = [SHARK] + CLASSES
    per_class = 30
    # six encoding/classifier pairs: the error chart used to grow wider than the page
    store = _store(d / "store", per_class=per_class, classes=classes, separation=0.4,
                   dense={"fisher": (64, "float16"), "vlad": (64, "float16")})
    rng = np.random.default_rng(0)
    for i in range(len(classes) * per_class):
        c = i // per_class
        folder = d / "images" / classes[c]
        folder.mkdir(parents=True, exist_ok=True)
        image = (rng.random((64, 64)) * 80 + 10 * c).astype(np.uint8)
        cv2.circle(image, (32, 32), 8 + 2 * c, 255, 2)
        cv2.imwrite(str(folder / f"{i:07d}.png"), image)
    (d / "store" / MANIFEST_FILE).write_text(json.dumps(
        {"format": FORMAT, "config": None, "steps": {}, "shards": {},
         "job": {"source": str(d / "images"), "kind": "tree"}}))
    return store


def test_report_renders_in_chromium(report_store, tmp_path, capsys):
    code, out, _ = _run(capsys, report_store, "--report", tmp_path / "report", "--epochs", "3",
                        "-q")
    assert code == 0
    d = tmp_path / "report"
    for name in ("index.html", "summary.md", "results.json", "errors.png", "hedging.png",
                 "per_class.png", "confusion.png", "examples.png"):
        assert (d / name).stat().st_size > 0, name
    summary = (d / "summary.md").read_text()
    assert "| fisher | svm |" in summary and "Best:" in summary
    _check_in_browser(d / "index.html", tmp_path / "shot.png")


def _figures(store_path):
    from features.baseline.experiment import evaluate
    from features.baseline.report import build_figures
    from features.store import Store
    with Store(store_path) as store:
        result = evaluate(store, epochs=3)
        figures, missing = build_figures(result)
    return result, figures, missing


def _texts(fig):
    """Every visible text of a figure with something in it (titles, labels, tick labels,
    annotations, legend entries)."""
    from matplotlib.text import Text
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_report_figures_are_readable(report_store):
    """What a person reads in the figures: text large enough, inside the picture, titles
    clear of the images, class names whole."""
    import matplotlib.pyplot as plt
    result, figures, missing = _figures(report_store)
    assert missing is None and set(figures) == {"errors.png", "hedging.png", "per_class.png",
                                                "confusion.png", "examples.png"}
    try:
        for name, fig in figures.items():
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            width, height = fig.canvas.get_width_height()
            assert width <= 1000, name  # shown unscaled in a 1280-pixel window
            for t in _texts(fig):
                # 11 pixels at least in the PNG: >= 10 CSS px when shown at >= 90%
                assert t.get_fontsize() * fig.dpi / 72 >= 11, (name, t.get_text())
            # everything drawn is inside the picture: no label cut off at an edge
            drawn = fig.get_tightbbox(renderer)  # inches
            page = fig.bbox_inches
            assert (drawn.x0 >= page.x0 - 0.01 and drawn.y0 >= page.y0 - 0.01
                    and drawn.x1 <= page.x1 + 0.01 and drawn.y1 <= page.y1 + 0.01), \
                (name, drawn, page)
        strip = figures["examples.png"]
        title = strip._suptitle.get_window_extent(strip.canvas.get_renderer())
        for ax in strip.axes:  # the title overlaps no image and no guess above one
            r = strip.canvas.get_renderer()
            assert not title.overlaps(ax.get_window_extent(r)), "suptitle over an image"
            assert not title.overlaps(ax.title.get_window_extent(r)), "suptitle over guesses"
        # full names, wrapped rather than cut
        for name in ("examples.png", "per_class.png"):
            words = " ".join(" ".join(t.get_text().split()) for t in _texts(figures[name]))
            assert "great white shark" in words, name
        assert "great white shark" in " ".join(result["class_names"])
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_error_axes_are_around_the_values():
    """Errors that differ by a few hundredths are not squashed into an axis from 0 to 1."""
    import matplotlib.pyplot as plt
    from features.baseline.report import fig_errors
    encodings = ["bovw", "vlad", "fisher", "sbow-bovw", "phow-vlad", "phow-fisher", "sift-lcs",
                 "sbow-fisher"]
    rs = [{"encoding": e, "classifier": c, "top1_error": 0.70 + 0.01 * i + 0.004 * j,
           "top5_error": 0.48 + 0.015 * i - 0.002 * j}
          for i, e in enumerate(encodings) for j, c in enumerate(("svm", "logreg"))]
    for r in rs:          # 95% intervals of about 5,000 scored images
        for key in ("top1", "top5"):
            r[f"{key}_error_ci"] = [r[f"{key}_error"] - 0.012, r[f"{key}_error"] + 0.012]
    best = min(rs, key=lambda r: r["top1_error"])
    fig = fig_errors({"results": rs, "best": {"encoding": best["encoding"],
                                              "classifier": best["classifier"]}})
    try:
        assert fig.canvas.get_width_height()[0] <= 1000  # 16 results: not 2,000 pixels wide
        top1, top5 = fig.axes[:2]
        for ax, key in ((top1, "top1_error"), (top5, "top5_error")):
            values = [r[key] for r in rs]
            ends = [v for r in rs for v in r[f"{key}_ci"]]
            lo, hi = ax.get_ylim()
            spread = max(ends) - min(ends)
            assert lo <= min(ends) and hi >= max(ends)
            # the values and their intervals fill most of the axis
            assert spread / (hi - lo) > 0.6, (key, lo, hi, spread)
    finally:
        plt.close(fig)


def _check_in_browser(page, shot):
    import shutil
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1600"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        assert "Best:" in driver.find_element(By.ID, "best").text
        imgs = driver.find_elements(By.TAG_NAME, "img")
        assert len(imgs) == 5  # the four figures and the strip of examples
        for img in imgs:  # every figure loaded, and shown at (nearly) its natural size, so
            # that its text is as large on screen as it was drawn
            natural, shown = driver.execute_script(
                "const i = arguments[0];"
                "return [i.complete ? i.naturalWidth : 0, i.getBoundingClientRect().width];",
                img)
            assert natural > 100, img.get_attribute("src")
            assert shown >= 0.9 * natural, (img.get_attribute("src"), shown, natural)
        rows = driver.find_elements(By.CSS_SELECTOR, "#results tr")
        assert len(rows) == 1 + 6  # three encodings, two classifiers
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from PIL import Image
    im = np.asarray(Image.open(shot).convert("L"))
    # the screenshot shows a page with content: not blank, figures drawn (dark pixels)
    assert im.shape[0] > 500 and im.std() > 20 and (im < 100).mean() > 0.005
