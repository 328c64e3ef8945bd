"""The WordNet is-a hierarchy of ImageNet classes.

ImageNet class ids (wnids) are WordNet 3.0 noun synset offsets: ``n`` + 8 digits.  The
package ships the is-a table of all 82,115 WordNet 3.0 noun synsets
(``data/wordnet30_nouns.npz``, generated from WordNet's ``data.noun`` by
``tools/make_wordnet_table.py``; WordNet's license is in ``data/WORDNET_LICENSE``), so
ImageNet-1k and ImageNet-21k labels both work without downloads.  The ILSVRC devkit's
``meta.mat`` (its ``synsets`` with ``WNID``, ``words`` and ``children``) is accepted too.

Parents are hypernyms and instance hypernyms.  WordNet has multiple inheritance (a synset
may have several hypernyms, e.g. ``n02084071`` dog is both a canine and a domestic animal):
the hierarchy is a DAG and every ancestor along every path counts.  The metrics that need a
single answer say how they resolve it (``ClassHierarchy``).
"""
from __future__ import annotations

import re
from importlib import resources

import numpy as np

from ..exceptions import BaselineError

WNID = re.compile(r"^n\d{8}$")
_TABLE = "wordnet30_nouns.npz"


class IsA:
    """An is-a graph over synsets: wnids, their names and their parents.

    Build it with :meth:`wordnet` (the shipped WordNet 3.0 nouns), :meth:`from_meta_mat`
    (an ILSVRC devkit ``meta.mat``) or :meth:`load` (either, from a spec).
    """

    def __init__(self, wnids, names, parent_indptr, parent_index, source=""):
        self.wnids = list(wnids)
        self.names = list(names)
        self._indptr = np.asarray(parent_indptr, dtype=np.int64)
        self._parents = np.asarray(parent_index, dtype=np.int64)
        self._where = {w: i for i, w in enumerate(self.wnids)}
        self.source = source

    @classmethod
    def wordnet(cls):
        """The WordNet 3.0 noun hierarchy shipped with the package."""
        ref = resources.files("features.baseline") / "data" / _TABLE
        with resources.as_file(ref) as path, np.load(path) as t:
            wnids = [f"n{o:08d}" for o in t["offsets"].tolist()]
            names = t["words"].tobytes().decode("utf-8").split("\n")
            return cls(wnids, names, t["parent_indptr"], t["parent_index"],
                       source="WordNet 3.0 nouns")

    @classmethod
    def from_meta_mat(cls, path):
        """The hierarchy of an ILSVRC devkit ``meta.mat`` (``synsets`` with ``children``)."""
        import scipy.io
        try:
            synsets = np.atleast_1d(scipy.io.loadmat(path, squeeze_me=True)["synsets"])
            id_field = next(f for f in synsets.dtype.names if f.endswith("_ID"))
            ids = [int(s[id_field]) for s in synsets]
            wnids = [str(s["WNID"]) for s in synsets]
            names = [str(s["words"]) for s in synsets]
            children = [np.atleast_1d(s["children"]).astype(np.int64).tolist()
                        if int(s["num_children"]) else [] for s in synsets]
        except (OSError, KeyError, ValueError, TypeError, IndexError, StopIteration) as exc:
            raise BaselineError(f"cannot read {path}: not a devkit meta.mat ({exc})") from None
        row = {i: r for r, i in enumerate(ids)}
        parents = [[] for _ in wnids]
        for r, kids in enumerate(children):
            for k in kids:
                if k not in row:
                    raise BaselineError(f"{path}: synset {wnids[r]} has an unknown child id {k}")
                parents[row[k]].append(r)
        indptr = np.cumsum([0] + [len(p) for p in parents])
        index = [p for ps in parents for p in ps]
        return cls(wnids, names, indptr, index, source=str(path))

    @classmethod
    def load(cls, spec=None):
        """``None`` or ``"wordnet"``: the shipped WordNet; a path ending in ``.mat``: meta.mat."""
        if spec is None or spec == "wordnet":
            return cls.wordnet()
        if str(spec).lower().endswith(".mat"):
            return cls.from_meta_mat(spec)
        raise BaselineError(f"unknown hierarchy {spec!r}: expected 'wordnet' or a devkit meta.mat")

    def __len__(self):
        return len(self.wnids)

    def __contains__(self, wnid):
        return wnid in self._where

    def index(self, wnid):
        try:
            return self._where[wnid]
        except KeyError:
            raise KeyError(f"{wnid!r} is not a synset of {self.source or 'this hierarchy'}") \
                from None

    def name(self, wnid):
        return self.names[self.index(wnid)]

    def _parent_rows(self, i):
        return self._parents[self._indptr[i]:self._indptr[i + 1]].tolist()

    def parents(self, wnid):
        return [self.wnids[p] for p in self._parent_rows(self.index(wnid))]

    def _ancestor_rows(self, i):
        seen, todo = set(), self._parent_rows(i)
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(self._parent_rows(p))
        return seen

    def ancestors(self, wnid):
        """Every synset above ``wnid`` along any path (itself excluded)."""
        return {self.wnids[a] for a in self._ancestor_rows(self.index(wnid))}

    def is_a(self, wnid, other):
        """True if ``wnid`` is ``other`` or a kind of it."""
        return wnid == other or other in self.ancestors(wnid)

    def hierarchy(self, classes):
        """The :class:`ClassHierarchy` of ``classes`` (wnids) and all their ancestors."""
        missing = [c for c in classes if c not in self._where]
        if missing:
            raise BaselineError(f"class {missing[0]!r} is not a synset of "
                             f"{self.source or 'the hierarchy'}"
                             + (f" ({len(missing)} such classes)" if len(missing) > 1 else ""))
        rows = [self._where[c] for c in classes]
        above = set()
        for r in rows:
            above |= self._ancestor_rows(r)
        extra = sorted(above - set(rows))
        node_rows = rows + extra
        local = {r: i for i, r in enumerate(node_rows)}
        parents = [[local[p] for p in self._parent_rows(r)] for r in node_rows]
        return ClassHierarchy(list(classes), [self.wnids[r] for r in node_rows],
                              [self.names[r] for r in node_rows], parents)


class ClassHierarchy:
    """The classes of a problem and their ancestors: what the hierarchical metrics need.

    Nodes ``0..C-1`` are the classes (in label order), the others their ancestors.

    - ``below[v, c]``: class ``c`` is node ``v`` or one of its descendants;
    - ``height[v]``: length of the longest path from ``v`` down to a class in this graph
      (the classes with no class below them have height 0), as the ILSVRC-2010 devkit
      defines it on the hierarchy of its classes;
    - ``lca_height[a, b]``: the height of the lowest common ancestor of classes ``a`` and
      ``b``, 0 when ``a == b``.  With multiple inheritance two classes may have several
      lowest common ancestors (common ancestors none of whose descendants is also common):
      we take the lowest of them, i.e. the minimum height over all common ancestors, the
      most favourable reading of the devkit's definition.  Two classes without any common
      ancestor (a devkit forest) meet at a virtual root one above the highest node.
    - ``info_gain[v]``: ``log2 C - log2 |classes below v|``, the reward of DARTS (Deng et
      al., CVPR 2012) with a uniform prior over classes.
    """

    def __init__(self, classes, wnids, names, parents):
        self.classes = list(classes)
        self.wnids = list(wnids)
        self.names = list(names)
        self.parents = [list(p) for p in parents]
        n_classes, n_nodes = len(self.classes), len(self.wnids)
        children = [[] for _ in range(n_nodes)]
        for v, ps in enumerate(self.parents):
            for p in ps:
                children[p].append(v)
        order = _topological(children, n_nodes)  # every node after all its children
        below = np.zeros((n_nodes, n_classes), dtype=bool)
        below[np.arange(n_classes), np.arange(n_classes)] = True
        height = np.zeros(n_nodes, dtype=np.int64)
        for v in order:
            for k in children[v]:
                below[v] |= below[k]
                height[v] = max(height[v], height[k] + 1)
        self.below, self.height = below, height
        self.info_gain = np.log2(n_classes) - np.log2(np.maximum(below.sum(1), 1))
        self.lca_height = self._lca_heights()

    @classmethod
    def flat(cls, classes, names=None):
        """Classes with no known hierarchy: one root above them all."""
        names = list(names) if names is not None else list(classes)
        return cls(classes, list(classes) + ["(any class)"], names + ["(any class)"],
                   [[len(classes)]] * len(classes) + [[]])

    @property
    def n_classes(self):
        return len(self.classes)

    def _lca_heights(self):
        n = self.n_classes
        out = np.full((n, n), int(self.height.max(initial=0)) + 1, dtype=np.int32)
        done = np.eye(n, dtype=bool)
        out[done] = 0
        # lowest nodes first: the first common ancestor met is the one of minimum height
        for v in np.argsort(self.height, kind="stable"):
            members = np.flatnonzero(self.below[v])
            if len(members) < 2:
                continue
            block = np.ix_(members, members)
            fresh = ~done[block]
            if fresh.any():
                sub = out[block]
                sub[fresh] = self.height[v]
                out[block] = sub
                done[block] = True
        return out


def _topological(children, n):
    """Nodes ordered so that every node comes after all its children."""
    state = np.zeros(n, dtype=np.int8)
    order = []
    for start in range(n):
        if state[start]:
            continue
        stack = [(start, iter(children[start]))]
        state[start] = 1
        while stack:
            v, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[v] = 2
                order.append(v)
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(children[nxt])))
            elif state[nxt] == 1:
                raise BaselineError("the is-a graph has a cycle")
    return order
