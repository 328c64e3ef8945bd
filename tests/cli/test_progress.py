"""Progress of the long steps: a rate and an ETA on stderr, nothing with -q, never on stdout.

The commands run in this process, their stderr captured (not a terminal): the log interval
is set to 0 so that every update prints a line."""
import io
import re

import numpy as np
import pytest

from features.cli import main
from features.pipeline import progress as progress_module
from features.pipeline.progress import Progress

RATE = re.compile(r"\d+\.\d (iterations/s|s/iteration|images/s|s/image|examples/s)")


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, small_set):
    out = tmp_path_factory.mktemp("progress") / "store"
    assert main(["extract", str(small_set), "-o", str(out), "--words", "32",
                 "--max-side", "200", "-q"]) == 0
    return out


def _lines(text, label):
    return [line for line in text.splitlines() if line.startswith(label + ":")]


def test_codebook_shows_iterations_rate_and_eta(sampled, tmp_path, capsys, every_update):
    import shutil
    store = tmp_path / "store"
    shutil.copytree(sampled, store)
    assert main(["codebook", str(store)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"codebook: {store / 'codebook.npy'}"
    lines = _lines(err, "codebook")
    assert len(lines) >= 2 and all(RATE.search(line) for line in lines), err
    assert "ETA" in lines[0] and lines[-1].endswith("s") and " in " in lines[-1]
    counts = [int(re.match(r"codebook: (\d+)/", line).group(1)) for line in lines]
    assert counts == sorted(counts) and counts[0] == 1


def test_quiet_prints_nothing_on_stderr(sampled, small_set, tmp_path, capsys, every_update):
    import shutil
    store = tmp_path / "store"
    shutil.copytree(sampled, store)
    assert main(["codebook", str(store), "-q"]) == 0
    assert main(["encode", str(small_set), "-o", str(store), "-q"]) == 0
    assert main(["index", str(store), "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") >= 3
    assert main(["index", str(store), "--force"]) == 0
    err = capsys.readouterr().err
    lines = _lines(err, "index")
    assert lines and all(RATE.search(line) for line in lines), err


def test_index_build_reports_rows_as_they_go_in(small_store, tmp_path):
    import shutil

    from features.index import build
    from features.store import Store
    store_dir = tmp_path / "store"
    shutil.copytree(small_store, store_dir)
    calls = []
    with Store(store_dir) as store:
        build(store, force=True, part_rows=5, progress=lambda done, total: calls.append(
            (done, total)))
    done = [d for d, _ in calls]
    assert len(calls) >= 3 and done == sorted(done) and done[0] == 0
    assert {t for _, t in calls} == {calls[-1][0]} and calls[-1][0] > 0

    stream = io.StringIO()
    bar = Progress("index", unit="images", failures=False, stream=stream, interval=0)
    with Store(store_dir) as store:
        build(store, force=True, part_rows=5, progress=bar)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert any("ETA" in line and RATE.search(line) for line in lines), lines


def test_kmeans_calls_back_after_each_iteration():
    from features.codebook.kmeans import kmeans_fit
    x = np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)
    calls = []
    result = kmeans_fit(x, 16, iters=7, redo=2, tol=0,
                        progress=lambda done, total: calls.append((done, total)))
    assert {t for _, t in calls} == {14}
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(done) == len(set(done))
    assert result.iterations <= 7 and done[-1] <= 14


def test_baseline_training_shows_examples_rate_and_eta(tmp_path, capsys, every_update):
    from features.baseline.synthetic import write_synthetic_store
    labels = np.repeat(np.arange(3), 40)
    store = write_synthetic_store(tmp_path / "bl", labels,
                                  classes=["n02085620", "n02085782", "n04285008"],
                                  sparse={"bovw": (50, 8)}, dense={})
    assert main(["baseline", str(store), "--classifier", "svm", "--epochs", "4"]) == 0
    out, err = capsys.readouterr()
    lines = _lines(err, "bovw / svm")
    bars = [line for line in lines if "examples" in line]
    assert len(bars) >= 2 and all(RATE.search(line) for line in bars), err
    assert any("ETA" in line for line in bars)
    assert "examples" not in out

    assert main(["baseline", str(store), "--classifier", "svm", "--epochs", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.lstrip().startswith("{")
