"""`features baseline`: train and score linear classifiers on the encodings of a store.

Which images train and which score:

- ``val`` given (a second store, e.g. encoded with ``features run VAL --like TRAIN``): every
  ok image of the train store (of its ``train`` split, if it has splits) trains, every ok
  labelled image of the val store scores; none may be a training image (:mod:`.leaks`).  The
  two stores must share the codebook and the models the encodings learned (compared by
  checksum) and the val classes must be train classes (matched by class id).
- else, if the store has ``images/split`` (a source with ``train/`` and ``val/`` folders),
  the ``train`` images train and the ``val`` images score;
- else a seeded split: ``val_fraction`` of the images of each class score.

``train_per_class`` caps the training images of each class (seeded choice, as the ILSVRC-2010
organizers' baseline did with 100).  Of the training images, a seeded ``heldout_fraction`` of
each class (at least one image when the class has two) is held out to choose the
regularization, calibrate the scores into posteriors (softmax temperature) and set DARTS's
lambda; the chosen model is the one trained on the rest.

Every error comes with its 95% interval, and the best (encoding, classifier) is compared
with each other one by the exact McNemar test on the same scored images: ``best`` lists
those it does not beat significantly (``within_noise_of``).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

import numpy as np

from .._shared.hashing import array_sha256
from ..exceptions import BaselineError, ParameterError
from ..store.encodings import EncodingRows, encoding_attrs, list_encodings
from ..store.models import encoding_models, model_path
from . import hedging, leaks, metrics, significance
from .metrics import format_error
from .linear import CLASSIFIERS, DEFAULT_LAMBDAS, decision_blocks, feature_stats, train_sgd
from .wordnet import WNID, ClassHierarchy, IsA

OK = 0
HEDGE_TARGETS = (0.5, 0.7, 0.9)


def _priority(seed, key):
    digest = hashlib.blake2b(f"{seed}\2{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _per_class_pick(rows, labels, keys, seed, fraction=None, count=None, at_least=0):
    """Seeded choice of rows within each class: a fraction or a count of each class.

    The choice depends on the seed and the image keys only (not on the order of the store).
    """
    chosen = []
    for c in np.unique(labels[rows]):
        members = rows[labels[rows] == c]
        order = members[np.argsort([_priority(seed, keys[i]) for i in members], kind="stable")]
        n = len(order) if count is None else min(count, len(order))
        if fraction is not None:
            n = int(round(fraction * len(order)))
            if len(order) >= 2:
                n = min(max(n, at_least), len(order) - 1)
            else:
                n = 0
        chosen.append(order[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def codebook_checksum(h5):
    """The codebook's recorded checksum (computed for stores written before it was)."""
    if "codebook/centroids" not in h5:
        return None
    ds = h5["codebook/centroids"]
    return str(ds.attrs.get("checksum", "")) or array_sha256(ds[:])


def check_same_models(store, val_store, names):
    """A val store must be encoded as the train store: the same codebook and, for each
    encoding scored, the same options and the same models (``models/NAME/*``, by the checksums
    both stores recorded for it; see :mod:`features.store.models`)."""
    hint = f"(encode it with `features run VAL -o VALSTORE --like {store.dir}`)"
    ours, theirs = codebook_checksum(store.h5), codebook_checksum(val_store.h5)
    if ours != theirs:
        what = f"has no codebook, unlike {store.dir}" if theirs is None else \
            f"was encoded with another codebook than {store.dir}"
        raise BaselineError(f"val store {val_store.dir} {what} {hint}")
    for name in names:
        a, b = encoding_attrs(store.h5, name), encoding_attrs(val_store.h5, name)
        if a.get("params") != b.get("params"):
            raise BaselineError(f"val store {val_store.dir} computed encodings/{name} with other "
                                f"options than {store.dir} {hint}")
        ours, theirs = encoding_models(store.h5, name), encoding_models(val_store.h5, name)
        for model in sorted(set(ours) | set(theirs)):
            if ours.get(model) != theirs.get(model):
                # bovw's word weights are encodings/idf, the others models/NAME/MODEL
                path = model_path(store.h5, name, model)
                what = (f"computed encodings/{name} without the {path} of "
                        f"{store.dir}" if model not in theirs else
                        f"computed encodings/{name} with another {path} than "
                        f"{store.dir}")
                raise BaselineError(f"val store {val_store.dir} {what} {hint}")


class _Side:
    """The images of one store that take part: rows, labels (in train class indices), keys."""

    def __init__(self, store, rows, labels):
        self.store, self.rows, self.labels = store, rows, labels


def _labelled(store, what):
    classes = store.classes
    labels = store.column("label").astype(np.int64)
    status = store.column("status")
    if not classes or not np.any(labels >= 0):
        raise BaselineError(f"{what} {store.dir} has no labels: baselines need a labelled "
                            f"source (class folders, an ILSVRC layout or a labelled list)")
    ok = np.flatnonzero((status == OK) & (labels >= 0))
    return classes, labels, ok


def _splits(store, val_store, seed, val_fraction, train_per_class):
    classes, labels, ok = _labelled(store, "store")
    keys = store.keys
    if val_store is not None:
        val_classes, val_labels, val_ok = _labelled(val_store, "val store")
        where = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in val_classes if c not in where]
        used = set(val_labels[val_ok].tolist())
        unknown = [c for i, c in enumerate(val_classes) if c not in where and i in used]
        if unknown:
            raise BaselineError(f"val store {val_store.dir} has class {unknown[0]!r}, which the "
                                f"train store {store.dir} does not have")
        remap = np.array([where.get(c, -1) for c in val_classes], dtype=np.int64)
        train_rows = ok
        if "images/split" in store.h5:
            # a store with splits trains on its train split: its val/ images are its own
            # held-apart images (and often those of the val store)
            train_rows = ok[store.h5["images/split"].asstr()[:][ok] == "train"]
        val = _Side(val_store, val_ok, remap[val_labels[val_ok]])
        split_kind = "val store"
        checked = leaks.check_disjoint(store, train_rows, val_store, val_ok)
    elif "images/split" in store.h5:
        split = store.h5["images/split"].asstr()[:]
        train_rows = ok[split[ok] == "train"]
        val_rows = ok[split[ok] == "val"]
        if len(val_rows) == 0:
            raise BaselineError(f"store {store.dir} has splits but no labelled val image")
        _check_models_unseen(store, val_rows)
        val = _Side(store, val_rows, labels[val_rows])
        split_kind = "source splits"
        checked = leaks.check_disjoint(store, train_rows, store, val_rows,
                                       what="the val split of store")
    else:
        # the images the codebook and the models were learned from only ever train
        seen = leaks.model_sample_rows(store)
        unseen = np.setdiff1d(ok, seen)
        val_rows = _per_class_pick(unseen, labels, keys, seed, fraction=val_fraction,
                                   at_least=1)
        if len(val_rows) == 0 and len(seen):
            raise BaselineError(
                f"store {store.dir}: its codebook and models were learned from "
                f"{len(np.intersect1d(ok, seen))} of its {len(ok)} labelled images, which "
                f"leaves none to score; give a val store encoded --like it (--val)")
        train_rows = np.setdiff1d(ok, val_rows)
        val = _Side(store, val_rows, labels[val_rows])
        split_kind = f"seeded split ({val_fraction:g} of each class scores)"
        checked = (f"no scored image is one of the {len(np.intersect1d(ok, seen))} images "
                   f"the codebook and the models were learned from (they only train)")
    if train_per_class is not None:
        if train_per_class < 1:
            raise ParameterError(f"train_per_class must be >= 1, got {train_per_class}",
                                 "train_per_class")
        train_rows = _per_class_pick(train_rows, labels, keys, seed + 1, count=train_per_class)
    n_train = np.bincount(labels[train_rows], minlength=len(classes))
    if len(classes) < 2 or np.count_nonzero(n_train) < 2:
        raise BaselineError(f"store {store.dir} has a single class with training images: "
                            f"a classifier needs at least two")
    missing = [classes[c] for c in range(len(classes)) if n_train[c] == 0]
    if missing:
        raise BaselineError(f"class {missing[0]!r} has no training image"
                            + (f" ({len(missing)} such classes)" if len(missing) > 1 else ""))
    if len(val.rows) == 0:
        raise BaselineError(f"no labelled image left to score in {val.store.dir}")
    return classes, _Side(store, train_rows, labels[train_rows]), val, split_kind, checked


def _check_models_unseen(store, val_rows):
    """Refuse a store whose codebook or models were learned from images of its val split
    (a store built before the sample was drawn from the train split only)."""
    if leaks.sample_splits(store) in ("train", "none"):
        return
    seen = np.intersect1d(leaks.model_sample_rows(store), val_rows)
    if len(seen):
        raise BaselineError(
            f"store {store.dir}: its codebook and models were learned from a sample holding "
            f"{len(seen)} images of its val split (e.g. {store.keys[seen[0]]!r}); build it "
            f"again into a new folder (the sample now takes train/ images only)")


def class_hierarchy(classes, names, spec=None):
    """The WordNet (or meta.mat) hierarchy of the classes, or a flat one when they are not
    synsets of it; also says which."""
    if spec is not None or all(WNID.match(c) for c in classes):
        isa = IsA.load(spec)
        try:
            return isa.hierarchy(classes), isa.source
        except BaselineError as exc:
            if spec is not None:
                raise
            return ClassHierarchy.flat(classes, names), f"flat ({exc})"
    return ClassHierarchy.flat(classes, names), "flat (class ids are not WordNet ids)"


def _select(scores_by_lambda, y):
    errors = [float(np.mean(s.argmax(1) != y)) for s in scores_by_lambda]
    return int(np.argmin(errors)), errors


@dataclass(frozen=True)
class _Options:
    """How :func:`evaluate` trains and scores (its keyword arguments but the encoding, the
    hierarchy and the log); the classifiers are checked."""
    classifiers: tuple = CLASSIFIERS
    seed: int = 0
    val_fraction: float = 0.2
    heldout_fraction: float = 0.1
    train_per_class: int | None = None
    epochs: int = 10
    lambdas: tuple = DEFAULT_LAMBDAS
    keep_scores: bool = False

    def __post_init__(self):
        for c in self.classifiers:
            if c not in CLASSIFIERS:
                raise BaselineError(f"unknown classifier {c!r}: expected one of "
                                    f"{', '.join(CLASSIFIERS)}")


@dataclass(frozen=True)
class _Plan:
    """Which images fit the models, choose among them (held out) and score, and the
    classes: what every (encoding, classifier) of one experiment shares."""
    store: object
    classes: list
    class_names: list
    split: str                   # how the scored images were chosen
    hierarchy: ClassHierarchy
    hierarchy_source: str
    fit: _Side
    held: _Side
    val: _Side
    leaks: str = ""              # how the scored images were kept apart from the training ones

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def hierarchical(self) -> bool:
        """Whether the classes have a real hierarchy (hierarchical error is reported)."""
        return not self.hierarchy_source.startswith("flat")


@dataclass(frozen=True)
class _Rows:
    """One encoding's rows in both stores, and the feature statistics of the fit rows."""
    name: str
    train: EncodingRows
    val: EncodingRows
    stats: object


def evaluate(store, val_store=None, *, encoding=None, classifiers=CLASSIFIERS, hierarchy=None,
             seed=0, val_fraction=0.2, heldout_fraction=0.1, train_per_class=None, epochs=10,
             lambdas=DEFAULT_LAMBDAS, keep_scores=False, log=None, progress=None):
    """Train and score every (encoding, classifier); a JSON-ready dict of the results.

    ``store`` and ``val_store`` are open :class:`features.store.Store` objects.
    ``progress(label)``, if given, makes a context manager around each training whose value
    is called as ``bar(done, total)`` with the training examples seen so far (the
    command's progress line; nothing here prints).
    """
    options = _Options(classifiers, seed, val_fraction, heldout_fraction, train_per_class,
                       epochs, lambdas, keep_scores)
    leaks.check_not_same(store, val_store)
    names = _encodings(store, val_store, encoding)
    plan = _plan(store, val_store, hierarchy, options)
    out = _header(plan, val_store, options)
    for name in names:
        rows = _rows(plan, name)
        for clf in options.classifiers:
            with (progress(f"{name} / {clf}") if progress else contextlib.nullcontext()) as bar:
                result = _train_and_score(plan, rows, clf, options, bar)
            out["results"].append(result)
            if log:
                log(f"{name} / {clf}: top-1 error {format_error(result, 'top1')}, top-5 "
                    f"{format_error(result, 'top5')} (lambda {result['lambda']:g}, "
                    f"{result['train_seconds']:.1f} s)")
    out["best"] = _best(out["results"], plan.val.labels)
    out["_val"] = plan.val
    return out


def _best(results, labels):
    """The result of least top-1 error, and whether the paired test says it beats each
    other result on the same scored images (:func:`significance.rank`)."""
    correct = [r["_guesses"][:, 0] == labels for r in results]
    ranked = significance.rank(results, correct)
    best = results[ranked["index"]]
    compared = [{"encoding": results[a["index"]]["encoding"],
                 "classifier": results[a["index"]]["classifier"],
                 "top1_error": results[a["index"]]["top1_error"],
                 "p_value": a["p_value"], "significant": a["significant"]}
                for a in ranked["against"]]
    return {"encoding": best["encoding"], "classifier": best["classifier"],
            "top1_error": best["top1_error"], "top1_error_ci": best["top1_error_ci"],
            "top5_error": best["top5_error"], "top5_error_ci": best["top5_error_ci"],
            "compared": compared,
            "within_noise_of": [c for c in compared if not c["significant"]]}


def _encodings(store, val_store, encoding):
    """The encodings to score: ``encoding``, else all the store's; a val store must hold
    them, computed as the store's."""
    available = list_encodings(store.h5)
    if encoding is not None:
        if encoding not in available:
            raise BaselineError(f"store {store.dir} has no encoding {encoding!r} (it has: "
                                f"{', '.join(available) or 'none'})")
        names = [encoding]
    else:
        names = available
        if not names:
            raise BaselineError(f"store {store.dir} has no encodings")
    if val_store is not None:
        theirs = list_encodings(val_store.h5)
        lacking = [n for n in names if n not in theirs]
        if lacking:
            raise BaselineError(f"val store {val_store.dir} has no encoding {lacking[0]!r}")
        check_same_models(store, val_store, names)
    return names


def _plan(store, val_store, hierarchy, options) -> _Plan:
    """The images that train and score (module doc), the held-out part of the training
    images, and the classes' hierarchy and names."""
    classes, train, val, split_kind, checked = _splits(
        store, val_store, options.seed, options.val_fraction, options.train_per_class)
    stored = store.class_names or [""] * len(classes)
    hier, hier_source = class_hierarchy(classes, [n or c for n, c in zip(stored, classes)],
                                        hierarchy)
    # a class without a stored name: its WordNet name (first lemma), else its id
    class_names = [n or (hier.names[i].split(",")[0] if not hier_source.startswith("flat")
                         else c) for i, (n, c) in enumerate(zip(stored, classes))]
    fit, held = _hold_out(store, train, options.seed, options.heldout_fraction)
    return _Plan(store, classes, class_names, split_kind, hier, hier_source, fit, held, val,
                 checked)


def _hold_out(store, train, seed, fraction):
    """The training images split into those that fit the models and a seeded held-out
    ``fraction`` of each class (module doc)."""
    held = _per_class_pick(train.rows, store.column("label").astype(np.int64), store.keys,
                           seed + 2, fraction=fraction, at_least=1)
    fit_mask = ~np.isin(train.rows, held)
    fit = _Side(store, train.rows[fit_mask], train.labels[fit_mask])
    held = _Side(store, train.rows[~fit_mask], train.labels[~fit_mask])
    if len(held.rows) == 0:  # every class has a single image: choose on the training rows
        held = fit
    return fit, held


def _header(plan, val_store, options) -> dict:
    """The result's description of the experiment; its ``results`` still empty."""
    return {
        "store": str(plan.store.dir), "val_store": str(val_store.dir) if val_store else None,
        "split": plan.split, "leak_check": plan.leaks, "classes": plan.classes,
        "class_names": plan.class_names,
        "hierarchy": plan.hierarchy_source, "seed": options.seed,
        "train_images": int(len(plan.fit.rows)), "heldout_images": int(len(plan.held.rows)),
        "val_images": int(len(plan.val.rows)), "train_per_class": options.train_per_class,
        "results": [],
    }


def _rows(plan, name) -> _Rows:
    """Encoding ``name`` read from both stores, which must give it the same width."""
    reader = EncodingRows(plan.store.h5, name)
    val_reader = (reader if plan.val.store is plan.store
                  else EncodingRows(plan.val.store.h5, name))
    if val_reader.dim != reader.dim:
        raise BaselineError(f"encoding {name!r} has {val_reader.dim} dimensions in the val "
                            f"store and {reader.dim} in the train store")
    return _Rows(name, reader, val_reader, feature_stats(reader, plan.fit.rows))


def _fit(plan, rows, clf, options, progress=None):
    """Classifier ``clf`` trained for every lambda; the one of least held-out top-1 error,
    its held-out scores, every lambda's held-out error and the seconds taken."""
    t0 = time.perf_counter()
    models = train_sgd(rows.train, plan.fit.rows, plan.fit.labels, plan.n_classes, loss=clf,
                       lambdas=options.lambdas, epochs=options.epochs, seed=options.seed,
                       stats=rows.stats, progress=progress)
    held_scores = [decision_blocks(m, rows.train, plan.held.rows) for m in models]
    best, held_errors = _select(held_scores, plan.held.labels)
    return models[best], held_scores[best], held_errors, time.perf_counter() - t0


def _hedge(plan, held_scores, scores):
    """Scores calibrated into posteriors (a softmax temperature fit on the held-out
    images), then the accuracy-specificity curve and DARTS at each target accuracy."""
    temperature = hedging.fit_temperature(held_scores, plan.held.labels)
    proba = hedging.softmax(scores, temperature)
    curve = hedging.curve(proba, plan.val.labels, plan.hierarchy)
    held_proba = hedging.softmax(held_scores, temperature)
    darts = []
    for target in HEDGE_TARGETS:
        lam = hedging.darts_lambda(held_proba, plan.held.labels, plan.hierarchy, target)
        acc, gain = hedging.evaluate(proba, plan.val.labels, plan.hierarchy, lam)
        darts.append({"target_accuracy": target,
                      "lambda": lam if np.isfinite(lam) else None, "accuracy": acc,
                      "info_gain": gain})
    return temperature, dict(curve=curve, darts=darts)


def _train_and_score(plan, rows, clf, options, progress=None) -> dict:
    """One (encoding, classifier): trained, scored on the val images, hedged."""
    model, held_scores, held_errors, train_time = _fit(plan, rows, clf, options, progress)
    scores = decision_blocks(model, rows.val, plan.val.rows)
    guesses = metrics.top_guesses(scores, 5)
    summary, cm = metrics.summarize(guesses, plan.val.labels, plan.n_classes,
                                    plan.hierarchy if plan.hierarchical else None,
                                    seed=options.seed)
    temperature, hedged = _hedge(plan, held_scores, scores)
    result = dict(
        encoding=rows.name, classifier=clf, dims=rows.train.dim,
        layout="csr" if rows.train.sparse else "dense",
        lambda_=float(model.lam), heldout_top1_error=dict(
            zip([f"{lam:g}" for lam in options.lambdas], held_errors)),
        temperature=temperature, train_seconds=train_time, epochs=options.epochs,
        **summary, hedging=hedged)
    result["lambda"] = result.pop("lambda_")
    result["_confusion"] = cm
    result["_guesses"] = guesses
    if options.keep_scores:
        result["_scores"] = scores
    return result


def to_json(result):
    """The result without its private arrays (keys starting with ``_``)."""
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not str(k).startswith("_")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x
    return clean(result)
