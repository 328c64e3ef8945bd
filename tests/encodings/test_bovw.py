import numpy as np
import pytest

from features.encodings.bovw import (CSR, document_frequency, encode_words,
                                     idf_weights, weight_rows, word_counts, word_counts_csr)
from features.exceptions import ParameterError


def test_word_counts():
    ids, cnt = word_counts(np.array([3, 1, 3, 3, 0]), 5)
    assert ids.tolist() == [0, 1, 3] and cnt.tolist() == [1, 1, 3]


def _unique_counts(words):
    ids, cnt = np.unique(np.asarray(words, np.int64), return_counts=True)
    return ids.astype(np.int32), cnt.astype(np.int32)


@pytest.mark.parametrize("n_words", [7, 1000, 10 ** 7])
def test_word_counts_csr_rows_are_each_images_counts(n_words):
    """By bincount (a few words) and by sort (a vocabulary tree's millions), empty rows
    first, last and between: each row is the image's own counts."""
    rng = np.random.default_rng(n_words)
    lengths = [0, 5, 0, 0, 300, 1, 0, 40, 0]
    words = rng.integers(0, n_words, sum(lengths)).astype(np.int16 if n_words < 1000
                                                          else np.int32)
    words[5:305:3] = n_words - 1                 # the last word, repeated
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    csr = word_counts_csr(words, offsets, n_words)
    assert csr.n_rows == len(lengths) and csr.n_cols == n_words
    assert csr.indptr.dtype == np.int64
    assert csr.indices.dtype == csr.data.dtype == np.int32
    for i in range(len(lengths)):
        ids, cnt = csr.row(i)
        ref_ids, ref_cnt = _unique_counts(words[offsets[i]:offsets[i + 1]])
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(cnt, ref_cnt)
        one_ids, one_cnt = word_counts(words[offsets[i]:offsets[i + 1]], n_words)
        np.testing.assert_array_equal(one_ids, ref_ids)
        np.testing.assert_array_equal(one_cnt, ref_cnt)
        assert one_ids.dtype == one_cnt.dtype == np.int32


def test_word_counts_csr_without_images_or_words():
    csr = word_counts_csr(np.zeros(0, np.int32), [0], 10)
    assert csr.n_rows == 0 and csr.indptr.tolist() == [0] and len(csr.indices) == 0
    csr = word_counts_csr(np.zeros(0, np.int32), [0, 0, 0], 10 ** 7)
    assert csr.indptr.tolist() == [0, 0, 0]


@pytest.mark.parametrize("words, offsets, n_words, match", [
    ([0, 3, 4], [0, 3], 4, r"\[0, 4\), got 0..4"),
    ([0, -1], [0, 2], 4, r"got -1..0"),
    ([0, 1], [0, 1], 4, "offsets must rise"),
    ([0, 1], [1, 2], 4, "offsets must rise"),
    ([0, 1, 2], [0, 2, 1, 3], 4, "offsets must rise"),
    ([0.5], [0, 1], 4, "integers"),
    ([0], [0, 1], 0, "n_words must be >= 1"),
])
def test_word_counts_csr_refuses(words, offsets, n_words, match):
    with pytest.raises(ParameterError, match=match):
        word_counts_csr(np.asarray(words), offsets, n_words)


@pytest.mark.parametrize("words, n_words, match", [
    ([0, 1, 4], 4, r"\[0, 4\), got 0..4"),                 # counted by bincount
    ([0, -1, 2, 3], 4, "got -1..3"),
    ([0, 10 ** 6], 10 ** 6, r"\[0, 1000000\), got 0..1000000"),   # by sort
    ([0, -1], 10 ** 6, "got -1..0"),
])
def test_word_counts_refuses_words_out_of_range(words, n_words, match):
    with pytest.raises(ParameterError, match=match):
        word_counts(np.array(words * 10), n_words)


def test_word_counts_without_words():
    for words in ([], np.zeros(0, np.float64), np.zeros(0, np.int16)):
        ids, cnt = word_counts(words, 5)
        assert len(ids) == len(cnt) == 0 and ids.dtype == cnt.dtype == np.int32


def test_word_counts_csr_with_empty_rows():
    csr = word_counts_csr(np.array([1, 1, 2, 3]), [0, 3, 3, 4], 4)
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
    lengths = rng.integers(0, 50, 30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    csr = word_counts_csr(rng.integers(0, 20, offsets[-1]), offsets, 20)
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
