"""The `features` command: a thin layer over the pipeline steps."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

EXIT_DAMAGED, EXIT_ERROR, EXIT_FAILURE_BUDGET = 1, 2, 3


class UserError(Exception):
    pass


def _config_options(p):
    g = p.add_argument_group("recipe (defaults come from the preset)")
    g.add_argument("--preset", default="sift", help="sift, phow or sbow (default: sift)")
    g.add_argument("--words", type=int, help="codebook size")
    g.add_argument("--max-side", type=int, help="resize images to this max side (never enlarged)")
    g.add_argument("--step", type=int, help="dense SIFT grid step in pixels")
    g.add_argument("--points-per-word", type=int,
                   help="codebook sample size per word: k-means runs on words x this many "
                        "descriptors (128)")
    g.add_argument("--sample-per-image", type=int,
                   help="at most this many descriptors from each sampled image (200)")
    g.add_argument("--sample-images", type=int,
                   help="images sampled for the codebook (default: enough for the sample "
                        "size at --sample-per-image each)")
    g.add_argument("--seed", type=int, help="random seed of sampling and k-means")
    g.add_argument("--shard-size", type=int, help="images per shard file")
    g.add_argument("--failure-budget", type=float,
                   help="fraction of failed images above which the job exits non-zero (0.01)")
    g.add_argument("--no-descriptors", action="store_true",
                   help="do not keep raw descriptors in the store")


def _job_options(p):
    p.add_argument("-o", "--out", required=True, metavar="STORE", help="store directory")
    p.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--cluster", metavar="ADDR",
                   help="run the tasks on Dask: a scheduler address (tcp://host:8786) or "
                        "local:N for a local cluster of N single-threaded workers")
    p.add_argument("--limit", type=int, help="only the first N images of the source")
    p.add_argument("--kind", default="auto",
                   help="source kind, when auto-detection is not what you want: tree, flat, "
                        "list, ilsvrc-train, ilsvrc-val, tar, ilsvrc-train-tar, ilsvrc-val-tar, "
                        "tiny-imagenet, tiny-imagenet-val, tiny-imagenet-test, split-tree")
    p.add_argument("--labels", help="ground-truth labels file for sources that need one")
    p.add_argument("--synsets", help="synset names file (meta.mat or a mapping text file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _config(args):
    from .presets import get_preset
    overrides = dict(words=args.words, max_side=args.max_side, step=args.step,
                     sample_images=args.sample_images, sample_per_image=args.sample_per_image,
                     points_per_word=args.points_per_word,
                     seed=args.seed, shard_size=args.shard_size,
                     failure_budget=args.failure_budget)
    if args.no_descriptors:
        overrides["store_descriptors"] = False
    return get_preset(args.preset, **overrides)


def _stored_config(out):
    from .presets import Config
    from .store import Manifest
    manifest = Manifest(out)
    if not manifest.path.exists() or manifest.data.get("config") is None:
        raise UserError(f"{out} is not a features store (no manifest.json); "
                        f"start with `features run` or `features extract`")
    return Config.from_json(json.dumps(manifest.data["config"]))


def _source(args):
    from .sources import open_source
    return open_source(args.source, kind=args.kind, labels=args.labels, synsets=args.synsets)


def _check_job(args):
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")


@contextlib.contextmanager
def _workers(args):
    """The ``jobs`` the pipeline steps take: a process count, or a Dask cluster."""
    if not getattr(args, "cluster", None):
        yield args.jobs
        return
    from .cluster import Cluster
    with Cluster(args.cluster, store=getattr(args, "out", None) or args.store) as cluster:
        yield cluster


def _finish(summary, config, out):
    print(f"{summary.images} images, {summary.failed} failed "
          f"({100 * summary.failure_rate:.2f}%), store: {out}")
    if summary.failed:
        print(f"failures listed in {Path(out) / 'failures.tsv'}")
    if summary.failure_rate > config.failure_budget:
        print(f"features: failures exceed the budget of {100 * config.failure_budget:g}%",
              file=sys.stderr)
        return EXIT_FAILURE_BUDGET
    return 0


def cmd_run(args):
    from . import pipeline
    _check_job(args)
    config, source = _config(args), _source(args)
    encodings = [m.strip() for m in (args.encodings or "").split(",") if m.strip()]
    with _workers(args) as jobs:
        summary = pipeline.run(config, source, args.out, jobs=jobs, limit=args.limit,
                               progress=not args.quiet, encodings=encodings, like=args.like)
    if args.like:
        config = _stored_config(args.out)
    return _finish(summary, config, args.out)


def cmd_extract(args):
    from . import pipeline
    _check_job(args)
    config, source = _config(args), _source(args)
    with _workers(args) as jobs:
        path = pipeline.sample_descriptors(config, source, args.out, jobs=jobs,
                                           limit=args.limit, progress=not args.quiet)
    print(f"codebook sample: {path}")
    return 0


def cmd_codebook(args):
    from . import pipeline
    config = _stored_config(args.store)
    sample = Path(args.store) / pipeline.SAMPLE_FILE
    if not sample.exists():
        raise UserError(f"{args.store} has no descriptor sample; run `features extract` first")
    print(f"codebook: {pipeline.train_codebook(config, sample, args.store)}")
    return 0


def cmd_encode(args):
    from . import pipeline
    _check_job(args)
    config = _stored_config(args.out)
    codebook = Path(args.out) / pipeline.CODEBOOK_FILE
    if not codebook.exists():
        raise UserError(f"{args.out} has no codebook; run `features codebook` first")
    source = _source(args)
    with _workers(args) as jobs:
        summary = pipeline.encode_images(config, source, codebook, args.out, jobs=jobs,
                                         limit=args.limit, progress=not args.quiet)
    return _finish(summary, config, args.out)


def cmd_index(args):
    from . import pipeline
    from .index import index_record
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    with _workers(args) as jobs:
        path = pipeline.build_index(args.store, args.encoding, args.index, force=args.force,
                                    jobs=jobs)
    record = index_record(args.store) or {}
    print(f"index: {path} ({record.get('factory')}, {record.get('rows')} images, "
          f"{record.get('encoding')})")
    return 0


def cmd_search(args):
    from .search import Searcher
    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    if args.expand < 0:
        raise UserError(f"--expand must be >= 0, got {args.expand}")
    results = []
    with Searcher(args.store) as searcher:
        for q in args.query:
            query = searcher.query(q)
            results.append({"query": q, "results": searcher.search(
                query, args.k, args.rerank or args.expand > 0, expand=args.expand)})
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(f"query: {r['query']}")
        for rank, hit in enumerate(r["results"], 1):
            extra = f"  inliers {hit['inliers']}" if "inliers" in hit else ""
            label = hit.get("class", hit["label"])
            print(f"  {rank:3d}. {hit['score']:.4f}  {hit['key']}  (label {label}){extra}")
    return 0


def cmd_serve(args):
    from .serve import serve
    if not args.max_body_mb > 0:
        raise UserError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    limits = dict(threads=args.threads, max_body=max(1, int(args.max_body_mb * 1024 * 1024)),
                  timeout=args.timeout, max_concurrent=args.max_concurrent)
    if args.max_pixels is not None:
        limits["max_pixels"] = args.max_pixels
    return serve(args.store, args.host, args.port, **limits)


def cmd_info(args):
    from .info import store_info
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"store:        {info['store']}")
    print(f"images:       {info['images']} ({info['failed']} failed)")
    print(f"descriptors:  {info['descriptors']}")
    print(f"preset:       {info['config']['preset']}, {info['words']} words")
    print(f"classes:      {info['classes']}")
    for name, e in sorted(info["encoding_details"].items()):
        print(f"encoding:     {name}: {e['method'] or '?'}, {e['layout']}, {e['dim']} dims, "
              f"{e['dtype']}, {e['bytes'] / 1e6:.1f} MB")
    ix = info.get("index_info")
    print("index:        " + (f"{ix['vectors']} images, {ix['factory'] or '?'} on "
                              f"{ix['encoding'] or '?'}, {ix['bytes'] / 1e6:.1f} MB"
                              + (f" + refine rows {ix['refine_bytes'] / 1e6:.1f} MB"
                                 if ix.get("refine_bytes") else "")
                              if ix else "none"))
    print(f"size on disk: {info['bytes'] / 1e6:.1f} MB")
    return 0


def _aggregate_options(args):
    names = ("grids", "kernel_map", "kernel_order", "normalization", "weights", "components",
             "pca_dims", "whiten", "centers", "dtype")
    values = {k: getattr(args, k, None) for k in names}
    return {k: v for k, v in values.items() if v is not None and v is not False}


def cmd_aggregate(args):
    from .aggregate import aggregate
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    config = _stored_config(args.store)
    source = limit = None
    if args.source:
        from .store import Manifest
        source = _source(args)
        limit = (Manifest(args.store).data.get("job") or {}).get("limit")
    with _workers(args) as jobs:
        path = aggregate(config, args.store, args.method, args.name, _aggregate_options(args),
                         jobs, replace=args.replace, source=source, limit=limit,
                         progress=not args.quiet)
    print(f"encodings/{args.name or args.method}: {path}")
    return 0


def cmd_baseline(args):
    from .baseline.cli import run_baseline
    return run_baseline(args)


def cmd_verify(args):
    from .integrity import verify_store
    result = verify_store(args.store)
    if args.json:
        print(json.dumps(result, indent=1))
    elif result["sound"]:
        c = result["checked"]
        print(f"{args.store}: sound ({c['images']} images, {c['shards']} shards, "
              f"{c['descriptors']} descriptors"
              + (f", {c['index_vectors']} index vectors)" if c["index_vectors"] is not None
                 else ")"))
    else:
        print(f"{args.store}: damaged")
        for d in result["damage"]:
            print(f"  {d['path']}: {d['problem']}")
        print(f"to repair: {result['repair']}")
    return 0 if result["sound"] else EXIT_DAMAGED


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(args.out, jobs=args.jobs, progress=not args.quiet)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are bad input like any other: one line and exit status 2."""

    def error(self, message):
        print(f"features: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def build_parser():
    p = _Parser(prog="features", description=(
        "Classic-vision features for image collections: SIFT, bag of visual words, "
        "an HDF5 store and FAISS search."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help):
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "all steps: sample, codebook, encode, index")
    sp.add_argument("source", help="image folder, ImageNet layout, archive or list file")
    sp.add_argument("--encodings", help="comma-separated encodings to add after encode, with "
                                        "their defaults: bovw, spm, vlad, fisher")
    sp.add_argument("--like", metavar="STORE",
                    help="encode with the recipe and codebook of STORE (e.g. val images like "
                         "the train store); learns no codebook")
    _job_options(sp)
    _config_options(sp)
    sp = add("extract", cmd_extract, "pass 1: sample descriptors for the codebook")
    sp.add_argument("source")
    _job_options(sp)
    _config_options(sp)
    sp = add("codebook", cmd_codebook, "learn the codebook from the sample (k-means)")
    sp.add_argument("store")
    sp = add("encode", cmd_encode, "pass 2: extract, quantize and encode every image")
    sp.add_argument("source")
    _job_options(sp)
    sp = add("aggregate", cmd_aggregate, "add an encoding (bovw, spm, vlad, fisher) to a store")
    sp.add_argument("store")
    sp.add_argument("--method", required=True, choices=("bovw", "spm", "vlad", "fisher"))
    sp.add_argument("--name", help="encodings/NAME in store.h5 (default: the method)")
    sp.add_argument("--replace", action="store_true", help="recompute an existing encoding")
    sp.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    sp.add_argument("--cluster", metavar="ADDR", help="run the tasks on Dask (as `features run`)")
    sp.add_argument("--source", help="the store's source, to extract descriptors again when "
                                     "the store was kept without them (vlad, fisher)")
    sp.add_argument("--kind", default="auto", help="source kind (see `features run --help`)")
    sp.add_argument("--labels", help=argparse.SUPPRESS)
    sp.add_argument("--synsets", help=argparse.SUPPRESS)
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    g = sp.add_argument_group("method options (defaults from the literature)")
    g.add_argument("--grids", help="spm, fisher: pyramid grids RxC (R bands by C columns), "
                                   "e.g. 1x1,2x2,4x4 (spm default) or 1x1,3x1")
    g.add_argument("--weights", choices=("lazebnik", "uniform"),
                   help="spm: grid weights (default lazebnik: 1/4, 1/4, 1/2 for 3 grids)")
    g.add_argument("--normalization", choices=("l1", "l2", "none"),
                   help="bovw, spm: row normalization (default l1)")
    g.add_argument("--kernel-map", choices=("chi2", "intersection", "js"),
                   help="bovw, spm: homogeneous kernel map applied last")
    g.add_argument("--kernel-order", type=int, help="bovw, spm: kernel map order (default 1)")
    g.add_argument("--centers", type=int, help="vlad: k-means centers (default 64)")
    g.add_argument("--components", type=int, help="fisher: GMM components (default 256)")
    g.add_argument("--pca-dims", type=int, help="fisher: PCA dimensions (default 64)")
    g.add_argument("--whiten", action="store_true", help="fisher: whiten after PCA")
    g.add_argument("--dtype", choices=("float16", "float32"),
                   help="vlad, fisher: stored type (default float32 for vlad, float16 "
                        "for fisher)")
    sp = add("index", cmd_index, "build the FAISS search index (kept when current)")
    sp.add_argument("store")
    sp.add_argument("--encoding", default="bovw", help="stored encoding to index (bovw)")
    sp.add_argument("--index", metavar="STRING",
                    help="a FAISS index factory string (default: exact below "
                         "50,000 images, IVF-PQ with a refine stage above)")
    sp.add_argument("--force", action="store_true", help="rebuild even when current")
    sp.add_argument("--jobs", type=int, default=1,
                    help="local worker processes filling the index shard by shard (default 1)")
    sp.add_argument("--cluster", metavar="ADDR", help="fill it on Dask (as `features run`)")
    sp = add("search", cmd_search, "nearest images of an image file or an image key")
    sp.add_argument("store")
    sp.add_argument("query", nargs="+", help="an image file or the key of an image in the store")
    sp.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    sp.add_argument("--rerank", action="store_true", help="geometric re-ranking of a shortlist")
    sp.add_argument("--expand", type=int, default=0, metavar="N",
                    help="average query expansion with the N best verified results "
                         "(implies --rerank)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("serve", cmd_serve, "HTTP API and web page for query-by-image search")
    sp.add_argument("store")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free port)")
    sp.add_argument("--threads", type=int, default=2,
                    help="worker threads for decoding, extraction and search (2)")
    sp.add_argument("--max-concurrent", type=int, default=64,
                    help="requests admitted at once, running or queued; more get 503 (64)")
    sp.add_argument("--timeout", type=float, default=30.0,
                    help="seconds a request may take before it gets 503 (30)")
    sp.add_argument("--max-body-mb", type=float, default=16.0,
                    help="largest accepted upload in MiB; larger gets 413 (16)")
    sp.add_argument("--max-pixels", type=int,
                    help="largest accepted image in pixels; larger gets 400 (the decoder's "
                         "limit: 178,956,970)")
    sp = add("info", cmd_info, "what a store holds")
    sp.add_argument("store")
    sp.add_argument("--json", action="store_true")
    sp = add("baseline", cmd_baseline,
             "train and score linear classifiers on a store's encodings (ImageNet metrics)")
    sp.add_argument("store", help="the training store (and the val images, without --val)")
    sp.add_argument("--val", metavar="STORE", help="a val store encoded --like the train store")
    sp.add_argument("--encoding", help="only this encoding (default: every encoding)")
    sp.add_argument("--classifier", choices=["svm", "logreg"],
                    help="only this classifier (default: both)")
    sp.add_argument("--train-per-class", type=int, metavar="N", help="at most N per class")
    sp.add_argument("--val-fraction", type=float, default=0.2,
                    help="without --val or splits: fraction of each class that scores (0.2)")
    sp.add_argument("--epochs", type=int, default=10, help="SGD passes (default 10)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--hierarchy", metavar="META_MAT",
                    help="a devkit meta.mat (default: the shipped WordNet 3.0 nouns)")
    sp.add_argument("--report", metavar="DIR", help="write an HTML report and a markdown summary")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp = add("verify", cmd_verify, "check every part of a store (exit 0 sound, 1 damaged)")
    sp.add_argument("store")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("demo", cmd_demo, "build a small copy-detection set from shipped photos and run it")
    sp.add_argument("-o", "--out", default="features-demo", help="output folder (features-demo)")
    sp.add_argument("--jobs", type=int, default=1)
    sp.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    # HDF5 handles that failed to write (a full disk) report "Exception ignored" when
    # garbage-collected; the failure itself is reported below as one line.
    sys.unraisablehook = lambda _: None
    from .decode import DecodeError
    from .search import QueryError
    from .sources import SourceError
    from .store import StoreError
    try:
        return args.func(args)
    except (UserError, SourceError, StoreError, QueryError, DecodeError, ValueError,
            FileNotFoundError, PermissionError) as e:
        print(f"features: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        # Anything else the system refused (a damaged file HDF5 or FAISS cannot read): still
        # one line, never a traceback.
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"features: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("features: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
