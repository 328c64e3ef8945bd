"""Add an encoding to an existing store: ``aggregate(config, store_dir, method, name, options,
jobs) -> path``.

The encoding of every image is computed from what the store holds (words and frames for
``bovw`` and ``spm``; descriptors for ``vlad`` and ``fisher``, or descriptors extracted again
from the source when the store was kept without them), shard by shard: each worker reads one
shard file of the store, encodes its images and writes their rows to
``STORE/encodings/NAME/shard-NNNNNN.h5`` (temporary file, then rename), and the manifest
records the finished shard. A killed aggregation resumes when rerun: finished shards are
skipped. When all shards are in, ``store.h5`` is replaced (copy, add, rename) by one that
holds ``encodings/NAME`` and the models the encoding used.

Layout in ``store.h5``
----------------------
- dense encodings (``vlad``, ``fisher``): ``encodings/NAME``, an (N, D) float16 or float32
  dataset (``dtype`` attribute too), an HDF5 virtual dataset over the per-shard files, whose
  datasets are chunked by rows. A virtual dataset rather than a copy: a Fisher vector of
  32k dimensions over ILSVRC-2012 is 84 GB in float16, which a copy would need twice on disk
  and write twice; the store's per-descriptor data is already kept that way.
- sparse encodings (``bovw``, ``spm``): ``encodings/NAME/{indptr,indices,data}`` (CSR, as
  the encode step's ``bovw``), ``indices`` and ``data`` virtual over the shard files,
  ``indptr`` a real int64 array.
- every parameter as attributes of ``encodings/NAME``: ``method``, ``params`` (JSON), ``dim``,
  ``dtype``, ``layout`` and the method's own (``grids``, ``kernel_map``, ...).
- the models the encoding uses, its own: ``models/NAME/kmeans-vlad/centers``,
  ``models/NAME/pca/{mean,components}`` (+ ``explained_variance``, ``whiten`` and ``eps``
  attributes), ``models/NAME/gmm/{means,covariances,priors}`` (+ ``xy_weight`` for a GMM of
  descriptors and their positions), each with its checksum,
  recorded in the encoding's ``models`` attribute; replacing an encoding never touches
  another's models. They are learned from as many descriptors as each needs
  (:mod:`features.encodings.training`: the codebook's sample, else more descriptors of
  the images it was drawn from; ``rows`` and ``learned_from`` attributes say what they were), seeded with
  the store's seed, so a rerun learns the same models; another encoding's models of the
  same sizes are reused. Each encoding also keeps the models it used in
  ``STORE/encodings/NAME/models-TOKEN.h5``.

An image that failed, or has no descriptors, gets an all-zero row (an empty CSR row);
``images/status`` says why. The rows are those of ``features.encodings.rows.encode_rows``,
the function a query by image is encoded with too (``features.search.encoder``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codebook import kmeans
from ..encodings.gmm import fit_gmm
from ..encodings.methods import METHODS, check_options, dimension
from ..encodings.pca import fit_pca
from ..encodings.positions import append_positions
from ..encodings.training import model_spec, rows_needed, shape_problem
from ..encodings.rows import encode_rows, project
from ..exceptions import ParameterError, StoreError
from ..store import Manifest, Store, store_lock
from ..store.atomic import atomic_path, remove_stale_temporaries
from ..store.confined import open_confined
from ..store.encodings import add_encoding, create_dense, write_csr
from ..store.h5files import h5_writing, write_h5
from ..store.layout import ENCODINGS_DIR, SHARDS_DIR, STORE_FILE
from ..store.models import (all_encoding_models, read_model_groups, write_encoding_models,
                            write_models_file)
from ..store.oserrors import storage_errors
from .._shared.threads import blas_threads, single_threaded_libraries
from .isolate import call_isolated
from .like import like_params, models_from_like
from .model_rows import training_rows
from .progress import Progress
from .runner import batched, limited, local_threads, run_tasks
from .tasks import features_of

__all__ = ["aggregate", "restore_encodings", "encode_shard"]


# Encodings the encode step builds (encodings/bovw is tf-idf): never replaced here.
RESERVED = ("bovw", "bovw_counts", "idf")
# Names of models: models/NAME of a version-1 store, never an encoding's group of models.
MODEL_NAMES = tuple(sorted({m for method in METHODS.values() for m in method.models}))


@dataclass
class Plan:
    """What a worker needs to encode a shard: plain data, picklable."""
    method: str
    name: str
    params: dict
    dim: int
    dtype: str
    sparse: bool
    units: str
    n_words: int = 0
    models: dict = field(default_factory=dict)

    @property
    def reads(self) -> str:
        return METHODS[self.method].reads


def _fmt_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000


def _shard_records(manifest, n_images, shard_size):
    n_shards = -(-n_images // shard_size) if n_images else 0
    shards = manifest.data.get("shards", {})
    records = []
    for number in range(n_shards):
        rec = shards.get(str(number))
        if rec is None:
            raise StoreError(f"{manifest.path.parent}: shard {number} is not in the manifest; "
                             f"rerun the encode step first")
        records.append(rec)
    if sum(r["count"] for r in records) != n_images:
        raise StoreError(f"{manifest.path.parent}: the manifest's shards do not add up to the "
                         f"{n_images} images of store.h5; rerun the encode step first")
    return records


def _same_images(a, b):
    # the digest without labels where both have it: relabelled images keep their rows
    digest = "content" if a.get("content") and b.get("content") else "items"
    return all(a.get(k) == b.get(k) for k in ("count", "first_key", "last_key", "first",
                                                digest))


@dataclass(frozen=True)
class _Request:
    """One :func:`aggregate` call, its options checked: what its steps share."""
    store_dir: Path
    method: str
    name: str
    params: dict
    replace: bool
    exist_ok: bool
    jobs: int
    source: object
    limit: object
    progress: bool

    @property
    def enc_dir(self) -> Path:
        return self.store_dir / ENCODINGS_DIR / self.name


@dataclass(frozen=True)
class _Held:
    """What the store holds that an aggregation depends on, read once under the lock."""
    config: object
    n_images: int
    n_words: int        # 0 without a codebook
    desc_dim: int
    total_desc: int     # descriptors of all images
    models: dict        # encoding name -> its models (sound ones), from store.h5


def aggregate(config, store_dir, method, name=None, options=None, jobs=1, *, replace=False,
              source=None, limit=None, exist_ok=False, progress=True, report=print,
              warn=None) -> Path:
    """Compute encoding ``method`` for every image of the store and add it as
    ``encodings/NAME`` (``name`` defaults to the method). Returns the path of store.h5.

    ``options`` are the method's (see ``features.encodings.methods``). ``replace``
    recomputes an encoding of that name; ``exist_ok`` returns at once when one with the
    same method and options is there (what ``features run --encodings`` does on a rerun).
    ``source`` (the store's source, with its ``limit``) re-extracts descriptors for stores
    kept without them.
    ``report`` receives the one-line size estimate and a line per model saying what it was
    learned from (the models' lines only with ``progress``); ``warn`` a line when a model gets fewer rows than it needs (default:
    ``features: warning: ...`` on stderr).
    """
    store_dir = Path(store_dir)
    name = name or method
    # a store encoded --like another: the other store's options for this encoding by default
    defaults = like_params(store_dir, method, name)
    if defaults is not None:
        defaults = {k: v for k, v in defaults.items() if k in METHODS[method].defaults}
    params = check_options(method, options, defaults)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ParameterError(f"name must be letters, digits, '_', '-', '.' or '+', got {name!r}",
                             "name")
    if name in RESERVED:
        raise StoreError(f"encodings/{name} is built by the encode step and cannot be replaced; "
                         f"choose another --name")
    if name in MODEL_NAMES:
        raise ParameterError(f"name {name!r} is the name of a model (a version-1 store keeps "
                             f"models/{name}); choose another --name", "name")
    request = _Request(store_dir, method, name, params, replace, exist_ok, jobs, source, limit,
                       progress)
    with storage_errors(store_dir), store_lock(store_dir, "aggregate"):
        return _aggregate(request, config, report, warn or _warn)


def _nothing(line):
    pass


def _warn(line):
    print(f"features: warning: {line}", file=sys.stderr)


def _aggregate(request, config, report, warn):
    """:func:`aggregate` under the store's lock: read, plan, models, shards, attach."""
    remove_stale_temporaries(request.store_dir)          # a killed run's copy of store.h5
    path, held = _read_store(request, config)
    if held is None:
        return path
    manifest = Manifest(request.store_dir)
    records = _shard_records(manifest, held.n_images, held.config.shard_size)
    plan = _plan(request, held)
    record = _earlier_run(request, manifest)
    estimate, what = _size(plan, held)
    _check_space(request, estimate - _done_bytes(request, record, records), what, report)
    # what each model was learned from is a detail of the way, left out without progress
    plan.models = _models(request, held, record, report if request.progress else _nothing,
                          warn)
    record = _start(request, plan, manifest, record)
    _encode_shards(plan, held.config, request.store_dir, request.enc_dir, records, record,
                   manifest, request.jobs, request.source, request.limit, request.progress)
    return _finish(request, record, records, manifest, plan.models)


def _read_store(request, config):
    """The path of store.h5 and what it holds (``_Held``; None when it already has
    encodings/NAME of this method and these options, and ``exist_ok``). Refuses an
    encoding of that name without ``replace``, and an encoding the store cannot give the
    input of."""
    with Store(request.store_dir) as store:
        h5 = store.h5
        config = config or store.config
        n_images = store.n_images
        if _keep_existing(h5.get("encodings/" + request.name), store.path, request):
            return store.path, None
        reads = METHODS[request.method].reads
        if "codebook/centroids" not in h5 and reads == "words":
            raise StoreError(f"{store.path} has no codebook; run `features codebook` and "
                             f"`features encode` first")
        has_descriptors = "descriptors" in h5
        held = _Held(
            config=config, n_images=n_images,
            n_words=int(h5["codebook/centroids"].shape[0]) if "codebook/centroids" in h5 else 0,
            desc_dim=int(h5["descriptors"].shape[1]) if has_descriptors else 128,
            total_desc=int(h5["offsets"][-1]) if n_images else 0,
            models=all_encoding_models(h5))
        path = store.path
    if reads == "descriptors" and not has_descriptors and request.source is None:
        raise StoreError(f"{request.store_dir} was kept without descriptors, which --method "
                         f"{request.method} needs: rerun with descriptors, or give --source to "
                         f"extract them again")
    return path, held


def _keep_existing(existing, path, request) -> bool:
    """Whether an encodings/NAME already in store.h5 (``existing``, or None) is kept: with
    ``exist_ok``, when it has the same method and options. Without ``replace`` it is never
    computed again."""
    if existing is None:
        return False
    same = (existing.attrs.get("method") == request.method
            and json.loads(existing.attrs.get("params", "{}")) == request.params)
    if request.exist_ok and same and not request.replace:
        return True
    if not request.replace:
        raise StoreError(f"{path} already has encodings/{request.name}; pass --replace "
                         f"to compute it again, or choose another --name")
    return False


def _plan(request, held) -> Plan:
    """What a worker computes: the encoding's width and type (the models are added once
    they are learned or read)."""
    method, params = request.method, request.params
    dim = dimension(method, params, held.n_words, held.desc_dim)
    sparse = METHODS[method].sparse
    dtype = "float32" if sparse else params["dtype"]
    return Plan(method, request.name, params, dim, dtype, sparse, held.config.frame_units,
                held.n_words)


def _size(plan, held):
    """The bytes the encoding takes (at most, for sparse rows) and a line saying so."""
    n_images, dim, params = held.n_images, plan.dim, plan.params
    if plan.sparse:
        map_dim = 2 * params["kernel_order"] + 1 if params["kernel_map"] else 1
        cells = dim // max(plan.n_words * map_dim, 1)
        n_grids = len(params.get("grids", "1x1").split(","))
        nnz = min(held.total_desc * n_grids, n_images * cells * plan.n_words) * map_dim
        estimate = nnz * 8 + (n_images + 1) * 8
        what = f"{n_images} x {dim} sparse float32, at most {_fmt_bytes(estimate)}"
    else:
        estimate = n_images * dim * np.dtype(plan.dtype).itemsize
        what = f"{n_images} x {dim} {plan.dtype} = {_fmt_bytes(estimate)}"
    return estimate, what


def _earlier_run(request, manifest):
    """The manifest's record of an earlier, unfinished run of this name, to resume; None
    when there is none, or when it is replaced."""
    # A record of an earlier, unfinished run of this name: resumed if it had the same
    # method and options, else it is another aggregation's and needs --replace.
    record = manifest.data.setdefault("aggregate", {}).get(request.name)
    if record is not None and (record["method"] != request.method
                               or record["params"] != request.params or request.replace):
        if not request.replace:
            raise StoreError(f"{request.store_dir} holds an unfinished aggregation "
                             f"{request.name!r} with other options; rerun it with the same "
                             f"options, or pass --replace")
        record = None
    return record


def _done_bytes(request, record, records) -> int:
    """The bytes of the shards a resumed run has finished."""
    done = 0
    if record is not None:
        for number, rec in enumerate(records):
            got = record["shards"].get(str(number))
            if got and _same_images(got, rec) and (request.enc_dir / got["file"]).exists():
                done += got.get("bytes", 0)
    return done


def _check_space(request, needed, what, report):
    """Reports the encoding's size, and refuses to start when the disk cannot hold the
    ``needed`` bytes left to write."""
    free = shutil.disk_usage(request.store_dir).free
    report(f"encodings/{request.name}: {what}")
    if needed > free:
        raise StoreError(f"not enough disk space for encodings/{request.name}: it needs "
                         f"{_fmt_bytes(needed)}, {_fmt_bytes(free)} free in "
                         f"{request.store_dir}")


def _start(request, plan, manifest, record):
    """The run's record (a new one, saved, unless an earlier run is resumed), its folder,
    and the file of the models it uses."""
    # Validation is over: from here on files are written. A new run gets a new token in its
    # file names, so the files a store.h5 in use points to are never overwritten (--replace).
    if record is None:
        record = {"method": plan.method, "params": plan.params, "dim": plan.dim,
                  "dtype": plan.dtype, "sparse": plan.sparse, "shards": {},
                  "state": "running", "token": os.urandom(4).hex()}
        manifest.data.setdefault("aggregate", {})[request.name] = record
        manifest.save()
    enc_dir = request.enc_dir
    enc_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(enc_dir)
    if plan.models:
        write_models_file(enc_dir / f"models-{record['token']}.h5", plan.models)
    return record


def _finish(request, record, records, manifest, models) -> Path:
    """All shards are in: store.h5 replaced by one holding encodings/NAME, the run recorded
    as done, and the files of earlier runs of this name removed."""
    path = _attach(request.store_dir, request.name, record, records, models)
    record["state"] = "done"
    manifest.save()
    _remove_unreferenced(request.enc_dir, record)
    return path


def _remove_unreferenced(enc_dir, record):
    """Files of earlier runs of this name (replaced, or recomputed shards)."""
    keep = {r["file"] for r in record["shards"].values()} | {f"models-{record['token']}.h5"}
    for path in Path(enc_dir).glob("*.h5"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- models

def _models(request, held, record, report, warn) -> dict:
    """The models encodings/NAME uses, in this order: a ``--like`` store's (never learned
    here); those a resumed run started with; another encoding's of the same sizes, seed
    and training size (learned from the same rows: the same models), unless ``replace``;
    else learned now (:func:`_learn_models`). Each encoding keeps its own copy."""
    method, params = request.method, request.params
    want = model_spec(method, params, held.desc_dim, held.config.seed)
    if not want:
        return {}
    reused = models_from_like(request.store_dir, method, request.name, params, held.desc_dim,
                              held.models.get(request.name, {}))
    if reused is not None:         # encoded --like another store: its models, never new ones
        for model, have in reused.items():
            _check_stored(model, have, want[model], request.store_dir,
                          hint=f"give the options of {have['attrs']['like']}'s encoding "
                               f"{have['attrs']['like_encoding']}",
                          where=f"{have['attrs']['like_encoding']}/")
            report(f"models/{request.name}/{model}: those of {have['attrs']['like']}'s "
                   f"encodings/{have['attrs']['like_encoding']}")
        return reused
    if record is not None:
        path = request.enc_dir / f"models-{record['token']}.h5"
        if path.exists():
            with open_confined(path, request.store_dir) as f:
                started = read_model_groups(f.get("models"))
            if set(started) == set(want) and not any(
                    shape_problem(m, started[m]["arrays"], want[m]) for m in want):
                return started
    if not request.replace:
        for other, models in sorted(held.models.items()):
            if other != request.name and all(_same_model(m, models.get(m), want[m])
                                              for m in want):
                for m in want:
                    report(f"models/{request.name}/{m}: those of encodings/{other}, "
                           f"{models[m]['attrs'].get('learned_from', 'learned earlier')}")
                return {m: models[m] for m in want}
    # learned in the job's own process: its BLAS on the cores --jobs gives
    with blas_threads(local_threads(request.jobs)):
        return _learn_models(request, held, want, report, warn)


def _same_model(model, have, spec) -> bool:
    """Whether a stored model is the one these sizes would learn now: same arrays' shapes,
    options and seed, learned from a training set of the size wanted now."""
    if have is None or shape_problem(model, have["arrays"], spec) is not None:
        return False
    attrs = have["attrs"]
    return (attrs.get("seed") == spec["seed"]
            and bool(attrs.get("whiten", False)) == bool(spec.get("whiten", False))
            and attrs.get("xy_weight") == spec.get("xy_weight")
            and attrs.get("rows_wanted") == rows_needed(model, spec)[1])


def _learn_models(request, held, want, report, warn):
    """Each model of ``want`` learned from the rows it wants (``features.encodings.training``),
    drawn by :func:`.model_rows.training_rows`; a line says what each was learned from, and
    a warning when that is fewer rows than the model needs."""
    seed, name = held.config.seed, request.name
    if "pca" in want and want["pca"]["dims"] > held.desc_dim:
        raise ParameterError(f"pca_dims {want['pca']['dims']} exceeds the descriptors' "
                             f"{held.desc_dim} dimensions", "pca_dims")
    needs = {m: rows_needed(m, spec) for m, spec in want.items()}
    xy_weight = want.get("gmm", {}).get("xy_weight")
    rows = training_rows(request.store_dir, max(w for _, w in needs.values()), seed,
                         source=request.source, limit=request.limit, jobs=request.jobs,
                         positions=xy_weight is not None)
    models = {}
    for model, spec in want.items():
        floor, wanted = needs[model]
        used = rows.take(wanted, seed)
        x = used.x
        sized = {"rows_wanted": wanted, "rows_floor": floor, **used.attrs()}
        if model == "kmeans-vlad":
            k = spec["centers"]
            centers = _learn(lambda: kmeans(x.astype(np.float32), k, seed=seed), name, model)
            models[model] = {"arrays": {"centers": np.asarray(centers, np.float32)},
                             "attrs": {"centers": k, "dim": held.desc_dim, "seed": seed,
                                       "iters": 25, **sized}}
            what = f"{k} centers x {held.desc_dim} dims"
        elif model == "pca":
            pca = _learn(lambda: fit_pca(x, spec["dims"], whiten=spec["whiten"], seed=seed),
                         name, model)
            models[model] = {"arrays": {"mean": pca.mean, "components": pca.components,
                                        "explained_variance": pca.explained_variance},
                             "attrs": {"dims": pca.dims, "dim": held.desc_dim,
                                       "whiten": bool(pca.whiten), "eps": float(pca.eps),
                                       "seed": seed, **sized}}
            what = f"{pca.dims} of {held.desc_dim} dims"
        else:
            y = project(x, models["pca"])
            if xy_weight is not None:
                # the GMM models descriptors and where they lie (features.encodings.positions)
                y = append_positions(y, used.xy, xy_weight)
            k = spec["components"]
            gmm = _learn(lambda: fit_gmm(y, k, seed=seed), name, model)
            models[model] = {"arrays": {"means": gmm.means, "covariances": gmm.covariances,
                                        "priors": gmm.priors},
                             "attrs": {"components": k, "dim": int(y.shape[1]), "seed": seed,
                                       "iterations": int(gmm.iterations),
                                       "log_likelihood": float(gmm.log_likelihood),
                                       "covariance": "diagonal",
                                       "initialization": "k-means", **sized,
                                       **({} if xy_weight is None
                                          else {"xy_weight": xy_weight})}}
            what = f"{k} components x {y.shape[1]} dims, {gmm.iterations} EM iterations"
        report(f"models/{name}/{model}: {what}, learned from {used.describe()}")
        if len(x) < floor:
            per, unit = floor // _units(model, spec), _UNIT[model]
            warn(f"models/{name}/{model} was learned from {len(x):,} descriptors, fewer than "
                 f"the {floor:,} it needs ({per} per {unit[0]}): it is poorly estimated (a "
                 f"store that samples more images, --sample-images, or a smaller {unit[1]})")
    return models


# model -> (what its size counts, the option that sets it)
_UNIT = {"kmeans-vlad": ("center", "--centers"), "pca": ("input dimension", "--pca-dims"),
         "gmm": ("component", "--components")}


def _units(model, spec) -> int:
    return int(spec["centers" if model == "kmeans-vlad" else "dim" if model == "pca"
                    else "components"])


def _learn(fit, name, what):
    try:
        return fit()
    except ValueError as e:
        raise StoreError(f"learning models/{name}/{what}: {e}") from None


def _check_stored(model, have, spec, store_dir, hint="pass --replace to learn new models",
                  where=""):
    problem = shape_problem(model, have["arrays"], spec)
    if problem is not None:
        sep = " " if problem.startswith("has ") else "/"
        raise StoreError(f"{store_dir}: models/{where}{model}{sep}{problem}; {hint}")


# ---------------------------------------------------------------------------- shards

def _encode_shards(plan, config, store_dir, enc_dir, records, record, manifest, jobs, source,
                   limit, progress):
    n_images = sum(r["count"] for r in records)
    bar = Progress(f"aggregate {plan.name}", n_images, enabled=progress)
    todo = []
    for number, rec in enumerate(records):
        got = record["shards"].get(str(number))
        if got and _same_images(got, rec) and (enc_dir / got["file"]).exists():
            bar.update(rec["count"])
        else:
            todo.append(number)

    def tasks():
        if source is not None:
            wanted = set(todo)
            for number, items in enumerate(batched(limited(source, limit), config.shard_size)):
                if number in wanted:
                    yield (plan, store_dir / SHARDS_DIR / records[number]["file"],
                           enc_dir / f"shard-{number:06d}-{record['token']}.h5", items, config)
        else:
            for number in todo:
                yield (plan, store_dir / SHARDS_DIR / records[number]["file"],
                       enc_dir / f"shard-{number:06d}-{record['token']}.h5", None, None)

    # the name the manifest keeps this run's record under (journaled shards go there)
    name = next(n for n, r in manifest.data["aggregate"].items() if r is record)
    for summary in run_tasks(encode_shard, tasks(), jobs):
        number = summary["first"] // config.shard_size
        # made from these images of the store: current while the store's shard is
        summary["items"] = records[number].get("items")
        summary["content"] = records[number].get("content")
        manifest.shard_done(number, summary, encoding=name)
        bar.update(summary["count"])
    bar.close()
    missing = [n for n in range(len(records)) if str(n) not in record["shards"]]
    if missing:
        raise StoreError(f"{store_dir}: the source did not give shard(s) "
                         f"{', '.join(map(str, missing[:5]))} again; give the store's own source")


def encode_shard(plan: Plan, shard_path, out_path, items=None, config=None,
                 parallel=False) -> dict:
    """Encode the images of one store shard and write their rows to ``out_path``
    atomically. ``items`` (with ``config``): the shard's source items, to extract their
    descriptors again."""
    if parallel:
        single_threaded_libraries()
    out_path = Path(out_path)
    with open_confined(shard_path, Path(shard_path).parent.parent) as s:     # STORE/shards/
        first, count = int(s.attrs["first"]), int(s.attrs["count"])
        keys = s["images/key"].asstr()[:]
        status = s["images/status"][:]
        widths, heights = s["images/width"][:], s["images/height"][:]
        offsets = s["offsets"][:]
        frames = s["frames"][:] if (plan.reads == "words" or plan.params.get("grids")
                                    or plan.params.get("xy_weight") is not None) else None
        words = s["words"][:] if plan.reads == "words" else None
        descriptors = None
        if plan.reads == "descriptors" and items is None:
            if "descriptors" not in s:
                raise StoreError(f"{shard_path} holds no descriptors")
            descriptors = s["descriptors"][:]
    if items is not None:
        frames, descriptors, offsets = _extract_again(config, items, keys, status, plan,
                                                      frames, offsets)
    def fill(f):
        f.attrs["first"] = first
        f.attrs["count"] = count
        if plan.sparse:
            _write_sparse(f, plan, words, frames, offsets, widths, heights)
        else:
            _write_dense(f, plan, descriptors, frames, offsets, widths, heights)

    write_h5(out_path, fill)      # one shard's rows, built in memory: a full disk is an OSError
    return {"file": out_path.name, "first": first, "count": count,
            "first_key": keys[0] if count else "", "last_key": keys[-1] if count else "",
            "bytes": out_path.stat().st_size}


def _extract_again(config, items, keys, status, plan, frames, offsets):
    if [it.key for it in items] != list(keys):
        raise StoreError("the source's images differ from the store's; give the store's own "
                         "source")
    parts_f, parts_d, lengths = [], [], []
    for item, st in zip(items, status):
        result, desc = (None, None) if st != 0 else features_of(config, item)
        if desc is None or not len(desc):
            lengths.append(0)
            continue
        parts_f.append(result.frames)
        parts_d.append(desc)
        lengths.append(len(desc))
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    desc = np.concatenate(parts_d) if parts_d else np.zeros((0, 128), np.uint8)
    fr = np.concatenate(parts_f) if parts_f else np.zeros((0, 4), np.float32)
    return fr, desc, offsets


def _write_sparse(f, plan, words, frames, offsets, widths, heights):
    write_csr(f, encode_rows(plan.method, plan.params, offsets=offsets, widths=widths,
                             heights=heights, words=words, frames=frames,
                             n_words=plan.n_words, units=plan.units))


def _write_dense(f, plan, descriptors, frames, offsets, widths, heights):
    n = len(offsets) - 1
    ds = create_dense(f, "encoding", n, plan.dim, plan.dtype)
    # Blocks of images keep the float32 rows and projected descriptors bounded.
    block = max(1, min(n, (64 << 20) // (plan.dim * 4)))
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = offsets[a], offsets[b]
        rows = encode_rows(plan.method, plan.params, offsets=offsets[a:b + 1] - lo,
                           widths=widths[a:b], heights=heights[a:b],
                           descriptors=descriptors[lo:hi],
                           frames=None if frames is None else frames[lo:hi],
                           models=plan.models, units=plan.units)
        ds[a:b] = rows.astype(plan.dtype, copy=False)


# ---------------------------------------------------------------------------- store.h5

def _attach(store_dir, name, record, records, models) -> Path:
    """Replace store.h5 by a copy holding encodings/NAME (and the models): copy, add, rename.

    In a worker process: HDF5 may crash the process that fails to write a file (a full
    disk), see ``features.store.h5files``."""
    try:
        return call_isolated(attach_task, store_dir, name, record, records, models,
                             what="adding the encoding to store.h5")
    finally:
        remove_stale_temporaries(store_dir)     # the copy of a worker that died


def attach_task(store_dir, name, record, records, models, *, skip=None, on_item=None,
                fault=None) -> Path:
    """:func:`_attach`'s work, as a worker task."""
    out = Path(store_dir) / STORE_FILE
    tmp = atomic_path(out)
    enc_dir = Path(store_dir) / ENCODINGS_DIR / name
    # what the encoding and its models add, at most: CSR rows are copied (about the size of
    # their files), dense ones are mapped; with room for HDF5's own structures
    adds = sum(p.stat().st_size for p in enc_dir.glob("*.h5")) if record.get("sparse") else 0
    with h5_writing(tmp, copy_from=out, reserve=adds + (256 << 10)) as f:
        add_encoding(f, name, record, records)
        # models/NAME/*, and the encoding's record of them by checksum (`baseline --val`,
        # `verify`)
        write_encoding_models(f, name, models)
    os.replace(tmp, out)
    return out


def restore_encodings(store_dir) -> list[str]:
    """Re-add to a rebuilt store.h5 the encodings (and their models) that aggregate
    finished, while the store's shards are the ones they were computed from. Called after
    the encode step rewrites store.h5. Returns the names re-added."""
    store_dir = Path(store_dir)
    manifest = Manifest(store_dir)
    agg = manifest.data.get("aggregate") or {}
    if not agg:
        return []
    with Store(store_dir) as s:
        n_images = s.n_images
        present = set(s.h5.get("encodings", {}).keys())
        config = s.config
    try:
        records = _shard_records(manifest, n_images, config.shard_size)
    except StoreError:
        return []
    names = []
    for name, record in agg.items():
        if record.get("state") != "done" or name in present:
            continue
        enc_dir = store_dir / ENCODINGS_DIR / name
        if len(record["shards"]) < len(records) or not all(
                _same_images(record["shards"].get(str(i), {}), r)
                and (enc_dir / record["shards"][str(i)]["file"]).exists()
                for i, r in enumerate(records)):
            record["state"] = "stale"     # a rerun of aggregate recomputes the changed shards
            continue
        models = {}
        models_file = enc_dir / f"models-{record.get('token')}.h5"
        if models_file.exists():
            with open_confined(models_file, store_dir) as f:
                models = read_model_groups(f.get("models"))
        _attach(store_dir, name, record, records, models)
        names.append(name)
    manifest.save()
    return names


# ---------------------------------------------------------------------------- reading


