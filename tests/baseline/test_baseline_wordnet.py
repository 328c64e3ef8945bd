"""The shipped WordNet 3.0 is-a table, the devkit's meta.mat, and LCA heights."""
import numpy as np
import pytest

from features.baseline.wordnet import ClassHierarchy, IsA
from features.exceptions import BaselineError

DOG, CAR, FISH = "n02084071", "n02958343", "n02512053"
BREEDS = ["n02085620", "n02085782", "n02086240", "n02099601", "n02110958", "n02106662"]
CARS = ["n04285008", "n02814533", "n03100240"]  # sports car, station wagon, convertible


@pytest.fixture(scope="module")
def wn():
    return IsA.wordnet()


def test_tench_is_a_fish(wn):
    assert len(wn) == 82115  # WordNet 3.0 noun synsets
    assert wn.name("n01440764").startswith("tench")
    assert wn.is_a("n01440764", FISH)
    assert not wn.is_a("n01440764", DOG)
    assert "n00001740" in wn.ancestors("n01440764")  # entity is the root of every noun


def test_dog_is_an_ancestor_of_every_breed(wn):
    for breed in BREEDS:
        assert DOG in wn.ancestors(breed), wn.name(breed)
    for car in CARS:
        assert DOG not in wn.ancestors(car) and wn.is_a(car, CAR), wn.name(car)


def test_multiple_inheritance_is_kept(wn):
    # dog is both a canine and a domestic animal
    assert sorted(wn.parents(DOG)) == ["n01317541", "n02083346"]


def test_lca_heights(wn):
    h = wn.hierarchy(BREEDS + CARS)
    lca = h.lca_height
    assert np.all(np.diag(lca) == 0) and np.array_equal(lca, lca.T)
    nb = len(BREEDS)
    breeds, cross = lca[:nb, :nb], lca[:nb, nb:]
    assert breeds[~np.eye(nb, dtype=bool)].max() <= 4  # two breeds meet just above
    assert cross.min() >= 2 * breeds[~np.eye(nb, dtype=bool)].max()  # dog and car: far up
    assert h.height[:len(BREEDS) + len(CARS)].max() == 0  # classes are the leaves
    assert h.info_gain[0] == pytest.approx(np.log2(len(BREEDS) + len(CARS)))
    root = h.wnids.index("n00001740")
    assert h.info_gain[root] == 0 and h.below[root].all()


def test_unknown_class_is_refused(wn):
    with pytest.raises(BaselineError, match="n99999999"):
        wn.hierarchy(["n02085620", "n99999999"])


def test_flat_hierarchy():
    h = ClassHierarchy.flat(["a", "b", "c"])
    assert h.lca_height[0, 1] == 1 and h.lca_height[1, 1] == 0
    assert h.below[-1].all()


def _save_meta(path, synsets):
    import scipy.io
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O"),
          ("children", "O")]
    arr = np.zeros((len(synsets),), dtype=dt)
    for i, (sid, wnid, words, kids) in enumerate(synsets):
        arr[i] = (sid, wnid, words, len(kids), np.array(kids, dtype=np.uint16))
    scipy.io.savemat(path, {"synsets": arr})


def test_meta_mat(tmp_path):
    # two leaves under one parent, a third under the root
    _save_meta(tmp_path / "meta.mat", [
        (1, "n00000001", "a", []), (2, "n00000002", "b", []), (3, "n00000003", "c", []),
        (4, "n00000004", "ab", [1, 2]), (5, "n00000005", "root", [4, 3])])
    isa = IsA.load(str(tmp_path / "meta.mat"))
    assert isa.parents("n00000001") == ["n00000004"]
    assert isa.is_a("n00000002", "n00000005")
    h = isa.hierarchy(["n00000001", "n00000002", "n00000003"])
    assert h.lca_height.tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]


def test_meta_mat_rejects_other_files(tmp_path):
    import scipy.io
    scipy.io.savemat(tmp_path / "x.mat", {"other": np.zeros(3)})
    with pytest.raises(BaselineError, match="meta.mat"):
        IsA.load(str(tmp_path / "x.mat"))
