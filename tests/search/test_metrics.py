import pytest

from features.search.metrics import average_precision


@pytest.mark.parametrize("ranked, n_rel, expected", [
    ([1, 1, 0, 0], 2, 1.0),
    ([0, 1, 0, 1], 2, (1 / 2 + 2 / 4) / 2),
    ([1, 0, 0, 0], 2, 0.5),          # one relevant item never retrieved
    ([0, 0, 0], 1, 0.0),
])
def test_average_precision(ranked, n_rel, expected):
    assert average_precision(ranked, n_rel) == pytest.approx(expected)


def test_average_precision_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="n_relevant"):
        average_precision([1, 1], 1)
    with pytest.raises(ValueError, match="n_relevant"):
        average_precision([1], 0)
