import numpy as np
import pytest

from features.encodings.bovw import (CSR, counts_csr, document_frequency, encode_words,
                                     idf_weights, weight_rows, word_counts)


def test_word_counts():
    ids, cnt = word_counts(np.array([3, 1, 3, 3, 0]), 5)
    assert ids.tolist() == [0, 1, 3] and cnt.tolist() == [1, 1, 3]


def test_counts_csr_with_empty_rows():
    rows = [word_counts(np.array([1, 1, 2]), 4), word_counts(np.array([], int), 4),
            word_counts(np.array([3]), 4)]
    csr = counts_csr(rows, 4)
    assert csr.indptr.tolist() == [0, 2, 2, 3]
    dense = csr.to_dense()
    np.testing.assert_array_equal(dense, [[0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(csr.to_dense(1, 3), dense[1:3])


def test_idf():
    df = document_frequency(np.array([0, 0, 1, 0]), 3)
    assert df.tolist() == [3, 1, 0]
    idf = idf_weights(df, 3)
    np.testing.assert_allclose(idf, [0.0, np.log(3), 0.0], rtol=1e-6)


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_weighted_rows_are_unit_norm(power):
    rng = np.random.default_rng(0)
    rows = [word_counts(rng.integers(0, 20, rng.integers(0, 50)), 20) for _ in range(30)]
    csr = counts_csr(rows, 20)
    idf = rng.uniform(0.1, 3, 20).astype(np.float32)
    values = weight_rows(csr.indptr, csr.indices, csr.data, idf, power)
    dense = CSR(csr.indptr, csr.indices, values, 20).to_dense()
    norms = np.linalg.norm(dense, axis=1)
    lengths = np.diff(csr.indptr)
    np.testing.assert_allclose(norms[lengths > 0], 1.0, rtol=1e-5)
    assert (norms[lengths == 0] == 0).all()
    # direction: counts ** power * idf
    i = int(np.argmax(lengths))
    raw = csr.to_dense(i, i + 1)[0].astype(np.float64) ** power * idf
    np.testing.assert_allclose(dense[i], raw / np.linalg.norm(raw), rtol=1e-5)


def test_encode_words_matches_rows():
    ids, values = encode_words(np.array([0, 0, 2]), 3, np.ones(3, np.float32), 1.0)
    assert ids.tolist() == [0, 2]
    np.testing.assert_allclose(values, np.array([2, 1]) / np.sqrt(5), rtol=1e-6)
