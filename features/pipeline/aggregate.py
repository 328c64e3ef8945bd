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
- ``models/kmeans-vlad/centers``, ``models/pca/{mean,components}`` (+ ``explained_variance``,
  ``whiten`` and ``eps`` attributes), ``models/gmm/{means,covariances,priors}``, learned from
  the store's descriptor sample (``sample.npy``), seeded with the store's seed, so a rerun
  learns the same models. Each encoding also keeps the models it used in
  ``STORE/encodings/NAME/models-TOKEN.h5``.

An image that failed, or has no descriptors, gets an all-zero row (an empty CSR row);
``images/status`` says why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codebook import kmeans
from ..encodings.fisher import fisher_vector_batch
from ..encodings.gmm import fit_gmm
from ..encodings.kernel_map import HomogeneousKernelMap
from ..encodings.methods import METHODS, check_options, dimension
from ..encodings.pca import fit_pca
from ..encodings.spm import parse_grids, spatial_pyramid
from ..encodings.vlad import vlad_batch
from ..exceptions import ParameterError, StoreError
from ..store import Manifest, Store, store_lock
from ..store.atomic import atomic_path, remove_stale_temporaries
from ..store.confined import open_confined
from ..store.encodings import add_encoding, create_dense, write_csr
from ..store.h5files import h5_writing, write_h5
from ..store.layout import ENCODINGS_DIR, SAMPLE_FILE, SHARDS_DIR, STORE_FILE
from ..store.models import read_models, write_models, write_models_file
from ..store.oserrors import storage_errors
from .._shared.threads import single_threaded_libraries
from .isolate import call_isolated
from .like import like_params, models_from_like
from .progress import Progress
from .runner import batched, limited, run_tasks
from .tasks import features_of

__all__ = ["aggregate", "restore_encodings", "encode_shard"]


# Encodings the encode step builds (encodings/bovw is tf-idf): never replaced here.
RESERVED = ("bovw", "bovw_counts", "idf")

# Rows of the models' training sets: enough for their sizes, bounded for time.
PCA_ROWS = 200_000
GMM_ROWS_PER_COMPONENT = 1000
KMEANS_ROWS_PER_CENTER = 1000


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
    return all(a.get(k) == b.get(k) for k in ("count", "first_key", "last_key", "first",
                                                "items"))


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
    models: dict        # models/* of store.h5


def aggregate(config, store_dir, method, name=None, options=None, jobs=1, *, replace=False,
              source=None, limit=None, exist_ok=False, progress=True, report=print) -> Path:
    """Compute encoding ``method`` for every image of the store and add it as
    ``encodings/NAME`` (``name`` defaults to the method). Returns the path of store.h5.

    ``options`` are the method's (see ``features.encodings.methods``). ``replace``
    recomputes an encoding of that name; ``exist_ok`` returns at once when one with the
    same method and options is there (what ``features run --encodings`` does on a rerun).
    ``source`` (the store's source, with its ``limit``) re-extracts descriptors for stores
    kept without them.
    ``report`` receives the one-line size estimate.
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
    request = _Request(store_dir, method, name, params, replace, exist_ok, jobs, source, limit,
                       progress)
    with storage_errors(store_dir), store_lock(store_dir, "aggregate"):
        return _aggregate(request, config, report)


def _aggregate(request, config, report):
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
    plan.models = _models(request.method, request.params, request.store_dir, held.models,
                          held.desc_dim, request.replace, held.config.seed)
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
            models=read_models(h5))
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

def _sample(store_dir, rows, seed):
    path = Path(store_dir) / SAMPLE_FILE
    if not path.exists():
        raise StoreError(f"{store_dir} has no descriptor sample ({SAMPLE_FILE}) to learn "
                         f"models from; run `features extract` first")
    sample = np.load(path, mmap_mode="r")
    if len(sample) > rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(sample), rows, replace=False))
        return np.asarray(sample[pick])
    return np.asarray(sample)


def _models(method, params, store_dir, stored, desc_dim, replace, seed) -> dict:
    """The models the method needs: those in store.h5 when they fit the options, else
    learned from the descriptor sample. Stored models of another size are refused."""
    if not METHODS[method].models:
        return {}
    reused = models_from_like(store_dir, method, stored)
    if reused is not None:         # encoded --like another store: its models, never new ones
        for model, have in reused.items():
            _check_stored(model, have, _model_spec(method, params, desc_dim, seed)[model],
                          store_dir, hint=f"give the options of {have['attrs']['like']}'s "
                                          f"encoding")
        return reused
    want = _model_spec(method, params, desc_dim, seed)
    models = {}
    for model, spec in want.items():
        have = stored.get(model)
        if have is not None and not replace:
            _check_stored(model, have, spec, store_dir)
            models[model] = have
    missing = [m for m in want if m not in models]
    if not missing:
        return models
    return _learn_models(method, params, store_dir, models, missing, desc_dim, seed)


def _model_spec(method, params, desc_dim, seed):
    if method == "vlad":
        want = {"kmeans-vlad": {"centers": params["centers"], "dim": desc_dim, "seed": seed}}
    else:
        want = {"pca": {"dims": params["pca_dims"], "dim": desc_dim, "whiten": params["whiten"],
                        "seed": seed},
                "gmm": {"components": params["components"], "dim": params["pca_dims"],
                        "seed": seed}}
    return want


def _learn_models(method, params, store_dir, models, missing, desc_dim, seed):
    if "kmeans-vlad" in missing:
        k = params["centers"]
        x = _sample(store_dir, KMEANS_ROWS_PER_CENTER * k, seed).astype(np.float32)
        centers = _learn(lambda: kmeans(x, k, seed=seed), "kmeans-vlad")
        models["kmeans-vlad"] = {"arrays": {"centers": np.asarray(centers, np.float32)},
                                 "attrs": {"centers": k, "dim": desc_dim, "seed": seed,
                                           "iters": 25, "rows": len(x)}}
    if "pca" in missing or "gmm" in missing:
        rows = max(PCA_ROWS, GMM_ROWS_PER_COMPONENT * params["components"])
        x = _sample(store_dir, rows, seed)
        if "pca" in missing:
            if params["pca_dims"] > desc_dim:
                raise ParameterError(f"pca_dims {params['pca_dims']} exceeds the descriptors' "
                                     f"{desc_dim} dimensions", "pca_dims")
            pca = _learn(lambda: fit_pca(x[:PCA_ROWS], params["pca_dims"],
                                         whiten=params["whiten"], seed=seed), "pca")
            models["pca"] = {"arrays": {"mean": pca.mean, "components": pca.components,
                                        "explained_variance": pca.explained_variance},
                             "attrs": {"dims": pca.dims, "dim": desc_dim,
                                       "whiten": bool(pca.whiten), "eps": float(pca.eps),
                                       "seed": seed, "rows": min(len(x), PCA_ROWS)}}
        if "gmm" in missing:
            y = _project(x, models["pca"])
            k = params["components"]
            y = y[:GMM_ROWS_PER_COMPONENT * k]
            gmm = _learn(lambda: fit_gmm(y, k, seed=seed), "gmm")
            models["gmm"] = {"arrays": {"means": gmm.means, "covariances": gmm.covariances,
                                        "priors": gmm.priors},
                             "attrs": {"components": k, "dim": int(y.shape[1]), "seed": seed,
                                       "rows": len(y), "iterations": int(gmm.iterations),
                                       "log_likelihood": float(gmm.log_likelihood),
                                       "covariance": "diagonal",
                                       "initialization": "k-means"}}
    return models


def _learn(fit, what):
    try:
        return fit()
    except ValueError as e:
        raise StoreError(f"learning models/{what}: {e}") from None


def _check_stored(model, have, spec, store_dir, hint="pass --replace to learn new models"):
    a = have["arrays"]
    if model == "kmeans-vlad":
        shape, want = a["centers"].shape, (spec["centers"], spec["dim"])
        label = "centers"
    elif model == "pca":
        shape, want = a["components"].shape, (spec["dims"], spec["dim"])
        label = "components"
    else:
        shape, want = a["means"].shape, (spec["components"], spec["dim"])
        label = "means"
        if a["covariances"].shape != shape or a["priors"].shape != (shape[0],):
            raise StoreError(f"{store_dir}: models/gmm has covariances {a['covariances'].shape} "
                             f"and priors {a['priors'].shape} for means {shape}")
    if shape != want:
        raise StoreError(f"{store_dir}: models/{model}/{label} is {shape[0]} x {shape[1]}, the "
                         f"options need {want[0]} x {want[1]}; {hint}")


def _project(x, pca_model):
    a = pca_model["arrays"]
    y = (np.asarray(x, np.float32) - a["mean"]) @ a["components"].T
    if pca_model["attrs"].get("whiten"):
        y /= np.sqrt(a["explained_variance"] + pca_model["attrs"]["eps"]).astype(np.float32)
    return np.ascontiguousarray(y, np.float32)


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

    for summary in run_tasks(encode_shard, tasks(), jobs):
        number = summary["first"] // config.shard_size
        # made from these images of the store: current while the store's shard is
        summary["items"] = records[number].get("items")
        record["shards"][str(number)] = summary
        manifest.save()
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
        frames = s["frames"][:] if plan.reads == "words" or plan.params.get("grids") \
            else None
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
    p = plan.params
    hkm = HomogeneousKernelMap(p["kernel_map"], p["kernel_order"]) if p["kernel_map"] else None
    csr = spatial_pyramid(words, frames, offsets, widths, heights, plan.n_words,
                          p.get("grids", "1x1"), weights=p.get("weights", "lazebnik"),
                          normalization=p["normalization"], kernel_map=hkm, units=plan.units)
    write_csr(f, csr)


def _cell_order(frames, offsets, widths, heights, grids, units):
    """Descriptor order that groups each image's descriptors by pyramid cell, and the offsets
    of the (image, cell) segments: a pyramid of per-cell encodings is then one batch call."""
    grids = parse_grids(grids)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    image = np.repeat(np.arange(n, dtype=np.int64), counts)
    if units == "pixels":
        fx = frames[:, 0] / np.maximum(widths, 1)[image]
        fy = frames[:, 1] / np.maximum(heights, 1)[image]
    else:
        fx, fy = frames[:, 0], frames[:, 1]
    n_cells = sum(r * c for r, c in grids)
    # A descriptor belongs to one cell per grid, so it is listed once per grid.
    keys, rows = [], []
    at = 0
    for rows_, cols in grids:
        r = np.clip(np.floor(fy * rows_), 0, rows_ - 1).astype(np.int64)
        c = np.clip(np.floor(fx * cols), 0, cols - 1).astype(np.int64)
        keys.append(image * n_cells + at + r * cols + c)
        rows.append(np.arange(len(image)))
        at += rows_ * cols
    keys = np.concatenate(keys)
    rows = np.concatenate(rows)
    order = np.argsort(keys, kind="stable")
    seg_offsets = np.zeros(n * n_cells + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n * n_cells), out=seg_offsets[1:])
    return rows[order], seg_offsets, n_cells


def _write_dense(f, plan, descriptors, frames, offsets, widths, heights):
    n = len(offsets) - 1
    ds = create_dense(f, "encoding", n, plan.dim, plan.dtype)
    grids = plan.params.get("grids")
    # Blocks of images keep the float32 rows and projected descriptors bounded.
    block = max(1, min(n, (64 << 20) // (plan.dim * 4)))
    for a in range(0, n, block):
        b = min(n, a + block)
        x = descriptors[offsets[a]:offsets[b]]
        local = offsets[a:b + 1] - offsets[a]
        rows = np.zeros((b - a, plan.dim), np.float32)
        if plan.method == "vlad":
            m = plan.models["kmeans-vlad"]["arrays"]
            vlad_batch(x, local, m["centers"], out=rows)
        else:
            y = _project(x, plan.models["pca"]) if len(x) else np.zeros(
                (0, plan.models["pca"]["arrays"]["components"].shape[0]), np.float32)
            g = plan.models["gmm"]["arrays"]
            if grids:
                order, seg, n_cells = _cell_order(frames[offsets[a]:offsets[b]], local,
                                                  widths[a:b], heights[a:b], grids, plan.units)
                cell_rows = rows.reshape((b - a) * n_cells, -1)
                fisher_vector_batch(y[order], seg, g["means"], g["covariances"], g["priors"],
                                    improved=True, out=cell_rows)
                # Each cell's vector is improved (signed sqrt, L2); the whole pyramid is then
                # L2-normalized so that every image has unit norm.
                norms = np.linalg.norm(rows, axis=1, keepdims=True)
                np.divide(rows, norms, out=rows, where=norms > 0)
            else:
                fisher_vector_batch(y, local, g["means"], g["covariances"], g["priors"],
                                    improved=True, out=rows)
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
        if models:
            write_models(f.require_group("models"), models)
        # the models this encoding was computed with, by checksum (`baseline --val`)
        f["encodings/" + name].attrs["models"] = json.dumps(
            {m: str(f["models/" + m].attrs["checksum"]) for m in sorted(models)},
            sort_keys=True)
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
                models = read_models(f)
        _attach(store_dir, name, record, records, models)
        names.append(name)
    manifest.save()
    return names


# ---------------------------------------------------------------------------- reading


