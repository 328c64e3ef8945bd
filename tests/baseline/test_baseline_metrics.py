"""Flat and hierarchical error, per-class accuracy, confusions, DARTS hedging."""
import numpy as np
import pytest

from features.baseline import hedging
from features.baseline.metrics import (hierarchical_error, most_confused, summarize,
                                       top_guesses, topk_error)
from features.baseline.wordnet import ClassHierarchy, IsA


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_agrees_with_sklearn(dtype):
    from sklearn.metrics import top_k_accuracy_score
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 300)
    scores = rng.normal(size=(300, 12)).astype(dtype)
    scores[np.arange(300), y] += rng.normal(1.0, 1.0, 300).astype(dtype)
    g = top_guesses(scores)
    assert g.shape == (300, 5) and np.array_equal(g[:, 0], scores.argmax(1))
    for k in (1, 5):
        assert topk_error(g, y, k) == pytest.approx(
            1 - top_k_accuracy_score(y, scores, k=k, labels=np.arange(12)))


def test_hierarchical_error_takes_the_best_guess():
    lca = np.array([[0, 1, 3], [1, 0, 3], [3, 3, 0]])
    y = np.array([0, 0, 2])
    guesses = np.array([[1, 2], [2, 1], [1, 0]])
    # image 0: min(1, 3); image 1: min(3, 1); image 2: min(3, 3)
    assert hierarchical_error(guesses, y, lca, k=2) == pytest.approx((1 + 1 + 3) / 3)
    assert hierarchical_error(guesses, y, lca, k=1) == pytest.approx((1 + 3 + 3) / 3)


def test_confusion_agrees_with_sklearn():
    from sklearn.metrics import confusion_matrix
    from features.baseline.metrics import confusion
    rng = np.random.default_rng(3)
    y, pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    assert np.array_equal(confusion(y, pred, 9), confusion_matrix(y, pred, labels=np.arange(9)))


def test_confusions_and_per_class():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([[0], [1], [1], [1], [0], [2]])
    out, cm = summarize(pred, y, 4)
    assert out["per_class_accuracy"] == [pytest.approx(1 / 3), 0.5, 1.0, None]
    assert out["most_confused"][0] == dict(true=0, predicted=1, count=2, fraction=2 / 3)
    assert most_confused(cm, 1) == [(0, 1, 2, 2 / 3)]
    assert out["top1_error"] == pytest.approx(3 / 6)


def test_darts_trades_accuracy_for_information():
    wn = IsA.wordnet()
    classes = ["n02085620", "n02085782", "n02099601", "n04285008", "n02814533", "n01440764"]
    h = wn.hierarchy(classes)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 400)
    scores = rng.normal(size=(400, 6))
    scores[np.arange(400), y] += 1.0
    # confuse dogs among dogs: the hedge "dog" is then a good bet
    dogs = y < 3
    scores[dogs, :3] += 1.5
    proba = hedging.softmax(scores)
    c = hedging.curve(proba, y, h)
    # lambda = 0 maximizes the expected reward: it already hedges where that pays
    assert c["info_gain"][0] >= np.log2(6) * np.mean(proba.argmax(1) == y) - 1e-9
    assert c["accuracy"][-1] == pytest.approx(1.0)   # large lambda: the root, always right
    assert c["info_gain"][-1] == pytest.approx(0.0)
    assert np.all(np.diff(c["accuracy"]) >= -1e-9)   # accuracy grows with lambda
    lam = hedging.darts_lambda(proba, y, h, 0.9)
    acc, gain = hedging.evaluate(proba, y, h, lam)
    assert acc >= 0.9 and gain > 0
    pred = hedging.predict(proba[dogs], h, lam)
    assert "n02084071" in [h.wnids[v] for v in pred]  # some dogs are hedged to "dog"


def test_temperature_recovers_the_scale():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3000, 5)) * 2
    p = hedging.softmax(logits)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert hedging.fit_temperature(logits * 3, y) == pytest.approx(3, rel=0.2)


def test_flat_hedging_has_two_levels():
    h = ClassHierarchy.flat(["a", "b"])
    proba = np.array([[0.6, 0.4], [0.9, 0.1]])
    assert hedging.predict(proba, h, 0.0).tolist() == [0, 0]
    assert hedging.predict(proba, h, 100.0).tolist() == [2, 2]
