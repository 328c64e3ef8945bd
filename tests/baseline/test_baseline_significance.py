"""Intervals and paired tests: every error says how sure it is, and "best" says when the
difference is noise."""
import json

import numpy as np
import pytest

from features.baseline import metrics
from features.baseline.significance import bootstrap_interval, mcnemar, rank, wilson_interval
from features.baseline.synthetic import write_synthetic_store
from features.cli import main
from features.exceptions import ParameterError


@pytest.mark.parametrize("errors,n,expected", [
    (0, 10, (0.0, 0.27753)),          # z^2 / (n + z^2): sound at zero errors
    (5, 10, (0.23659, 0.76341)),
    (10, 10, (0.72247, 1.0)),
    (148, 1000, (0.12734, 0.17136)),
])
def test_wilson_interval_known_values(errors, n, expected):
    assert wilson_interval(errors, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(0)
    for p, n in ((0.05, 40), (0.3, 200)):
        draws = rng.binomial(n, p, 4000)
        covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(d, n) for d in draws)])
        assert 0.92 <= covered <= 0.985, (p, n, covered)


@pytest.mark.parametrize("errors,n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_refuses_impossible_counts(errors, n):
    with pytest.raises(ParameterError):
        wilson_interval(errors, n)


def test_bootstrap_interval_is_seeded_and_shrinks_with_images():
    rng = np.random.default_rng(1)
    small, large = rng.integers(0, 4, 100), rng.integers(0, 4, 10000)
    lo, hi = bootstrap_interval(small)
    assert lo < small.mean() < hi
    assert bootstrap_interval(small) == (lo, hi)
    lo2, hi2 = bootstrap_interval(large)
    assert hi2 - lo2 < (hi - lo) / 5


def test_mcnemar_counts_only_the_images_the_two_disagree_on():
    a = np.ones(400, bool)
    assert mcnemar(a, a) == 1.0
    b = a.copy()
    b[:10] = False                    # b misses 10 that a gets: 2 * 0.5 ** 10
    assert mcnemar(a, b) == pytest.approx(2 * 0.5 ** 10)
    c = a.copy()
    c[:2] = False                     # 2 images of 400: noise
    assert mcnemar(a, c) == pytest.approx(0.5)
    with pytest.raises(ParameterError):
        mcnemar(a, a[:-1])


def test_rank_says_which_differences_are_noise():
    results = [{"top1_error": 0.153, "top5_error": 0.05}, {"top1_error": 0.148,
                                                            "top5_error": 0.05},
               {"top1_error": 0.40, "top5_error": 0.2}]
    rng = np.random.default_rng(2)
    base = rng.random(400) > 0.15
    near = base.copy()
    near[np.flatnonzero(~base)[:2]] = True          # 2 images better
    far = rng.random(400) > 0.40
    ranked = rank(results, [base, near, far])
    assert ranked["index"] == 1
    verdict = {a["index"]: a["significant"] for a in ranked["against"]}
    assert verdict == {0: False, 2: True}


def test_five_classes_make_top5_and_hierarchical_error_trivial():
    y = np.arange(5).repeat(4)
    guesses = np.tile(np.arange(5), (20, 1)).astype(np.int32)
    out, _ = metrics.summarize(guesses, y, 5)
    assert out["top5_error"] is None and out["hierarchical_error"] is None
    assert "5 guesses name all 5 classes" in out["trivial"]
    assert out["top1_error_ci"][0] <= out["top1_error"] <= out["top1_error_ci"][1]
    assert metrics.format_error(out, "top5") == "trivial"


CLASSES = ["n02085620", "n02085782", "n02099601", "n02110958", "n04285008", "n02814533",
           "n03100240", "n01440764"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    labels = np.repeat(np.arange(len(CLASSES)), 30)
    return write_synthetic_store(tmp_path_factory.mktemp("sig") / "store", labels,
                                 classes=CLASSES, dense={"fisher": (64, "float16")},
                                 sparse={"bovw": (100, 12)}, separation=0.4)


def test_cli_prints_intervals_and_the_verdict(store, capsys):
    assert main(["baseline", str(store), "--epochs", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "top-1 error [95% interval]" in out
    best = out.strip().splitlines()[-1]
    assert best.startswith("best: ") and "[" in best
    assert "within the noise of" in best or "better than every other" in best

    assert main(["baseline", str(store), "--epochs", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for x in r["results"]:
        lo, hi = x["top1_error_ci"]
        assert lo <= x["top1_error"] <= hi and 0 < hi - lo < 0.5
        lo, hi = x["hierarchical_error_ci"]
        assert lo <= x["hierarchical_error"] <= hi
    b = r["best"]
    assert len(b["compared"]) == len(r["results"]) - 1
    assert all(0 <= c["p_value"] <= 1 for c in b["compared"])
    assert b["within_noise_of"] == [c for c in b["compared"] if not c["significant"]]


def test_a_report_path_that_is_a_file_is_refused_before_training(store, tmp_path, capsys):
    blocker = tmp_path / "report"
    blocker.write_text("not a folder")
    assert main(["baseline", str(store), "--report", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert "top-1 error" not in err       # refused before any classifier was trained


def test_interrupted_baseline_says_a_rerun_starts_over(store, capsys, monkeypatch):
    import features.baseline.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "evaluate", interrupted)
    assert main(["baseline", str(store)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "from the start" in err and "resume" not in err
