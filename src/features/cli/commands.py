"""The commands: each ``cmd_NAME(args) -> exit status`` calls the pipeline step or the app
it names and prints its result. Errors are raised, never printed here (see ``main``)."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from ..exceptions import ParameterError, StoreError

EXIT_DAMAGED, EXIT_ERROR, EXIT_FAILURE_BUDGET, EXIT_QUERIES_FAILED = 1, 2, 3, 4


def _config(args):
    from ..presets import get_preset
    overrides = dict(words=args.words, max_side=args.max_side, step=args.step,
                     sample_images=args.sample_images, sample_per_image=args.sample_per_image,
                     points_per_word=args.points_per_word,
                     tree_branching=args.tree_branching, tree_depth=args.tree_depth,
                     seed=args.seed, shard_size=args.shard_size,
                     failure_budget=args.failure_budget)
    if args.no_descriptors:
        overrides["store_descriptors"] = False
    return get_preset(args.preset or "sift", **overrides)


# the recipe options of `run` (the configuration fields they set)
_RECIPE_OPTIONS = ("preset", "words", "max_side", "step", "points_per_word", "sample_per_image",
                   "sample_images", "seed", "shard_size", "failure_budget", "tree_branching",
                   "tree_depth")


def _check_like_recipe(args):
    """``run --like STORE`` encodes with STORE's recipe: a recipe option given that differs
    from it would be ignored, so it is refused (one line naming the option and STORE's
    value); an option equal to STORE's is fine."""
    from ..store import Store
    with Store(args.like) as other:
        config = other.config
    for name in _RECIPE_OPTIONS:
        given = getattr(args, name)
        if given is not None and given != getattr(config, name):
            raise ParameterError(f"{name} {given} contradicts the recipe of {args.like}, "
                                 f"which --like reuses ({name} {getattr(config, name)}); "
                                 f"leave it out", name)
    if args.no_descriptors and config.store_descriptors:
        raise ParameterError(f"no_descriptors contradicts the recipe of {args.like}, which "
                             f"--like reuses (it keeps the descriptors); leave it out",
                             "no_descriptors")


def _stored_config(out):
    from ..presets import Config
    from ..store import Manifest
    manifest = Manifest(out)
    if not manifest.path.exists() or manifest.data.get("config") is None:
        raise StoreError(f"{out} is not a features store (no manifest.json); "
                        f"start with `features run` or `features extract`")
    return Config.from_json(json.dumps(manifest.data["config"]))


def _source(args):
    from ..sources import open_source
    source = open_source(args.source, kind=args.kind, labels=args.labels, synsets=args.synsets)
    if source.kind in ("ilsvrc-val", "ilsvrc-val-tar") and args.labels is None:
        # its labels are in a separate file: without it every image is unlabelled, which a
        # baseline finds out only much later
        print(f"features: warning: {args.source} is an ILSVRC val set without --labels: its "
              f"images get no label (-1); give the ground truth with --labels", file=sys.stderr)
    return source


def _check_job(args):
    if args.jobs < 1:
        raise ParameterError(f"jobs must be >= 1, got {args.jobs}", "jobs")
    if args.limit is not None and args.limit < 1:
        raise ParameterError(f"limit must be >= 1, got {args.limit}", "limit")


@contextlib.contextmanager
def _workers(args):
    """The ``jobs`` the pipeline steps take: a process count, or a Dask cluster."""
    if not getattr(args, "cluster", None):
        yield args.jobs
        return
    from ..pipeline.cluster import Cluster
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
    from .. import pipeline
    _check_job(args)
    if args.like:
        _check_like_recipe(args)
    config, source = _config(args), _source(args)
    encodings = [m.strip() for m in (args.encodings or "").split(",") if m.strip()]
    with _workers(args) as jobs:
        summary = pipeline.run(config, source, args.out, jobs=jobs, limit=args.limit,
                               progress=not args.quiet, encodings=encodings, like=args.like)
    if args.like:
        config = _stored_config(args.out)
    return _finish(summary, config, args.out)


def cmd_extract(args):
    from .. import pipeline
    _check_job(args)
    config, source = _config(args), _source(args)
    with _workers(args) as jobs:
        path = pipeline.sample_descriptors(config, source, args.out, jobs=jobs,
                                           limit=args.limit, progress=not args.quiet)
    print(f"codebook sample: {path}")
    return 0


def cmd_codebook(args):
    from .. import pipeline
    config = _stored_config(args.store)
    sample = Path(args.store) / pipeline.SAMPLE_FILE
    if not sample.exists():
        raise StoreError(f"{args.store} has no descriptor sample; run `features extract` first")
    path = pipeline.train_codebook(config, sample, args.store, jobs=args.jobs,
                                   progress=not args.quiet)
    print(f"codebook: {path}")
    return 0


def cmd_encode(args):
    from .. import pipeline
    _check_job(args)
    config = _stored_config(args.out)
    codebook = Path(args.out) / pipeline.CODEBOOK_FILE
    if not codebook.exists():
        raise StoreError(f"{args.out} has no codebook; run `features codebook` first")
    source = _source(args)
    with _workers(args) as jobs:
        summary = pipeline.encode_images(config, source, codebook, args.out, jobs=jobs,
                                         limit=args.limit, progress=not args.quiet)
    return _finish(summary, config, args.out)


def _search_params(args) -> dict:
    """The search parameters of ``--search-params``, ``--nprobe`` and ``--k-factor``."""
    from ..index import parse_params
    params = parse_params(args.search_params or "")
    for name in ("nprobe", "k_factor"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return parse_params(params)


def _shown_params(params, before="; ") -> str:
    """``; searched with nprobe=8``, or nothing for an index without parameters (exact)."""
    shown = ",".join(f"{k}={v:g}" for k, v in sorted(params.items()))
    return f"{before}searched with {shown}" if shown else ""


def cmd_index(args):
    from .. import pipeline
    from ..index import index_record
    if args.jobs < 1:
        raise ParameterError(f"jobs must be >= 1, got {args.jobs}", "jobs")
    params = _search_params(args)
    with _workers(args) as jobs:
        path = pipeline.build_index(args.store, args.encoding, args.index, force=args.force,
                                    jobs=jobs, search_params=params,
                                    hamming=args.hamming, progress=not args.quiet)
    record = index_record(args.store) or {}
    print(f"index: {path} ({record.get('factory')}, {record.get('rows')} images, "
          f"{record.get('encoding')}{_shown_params(record.get('params') or {})}"
          + (f", Hamming embedding of {record['hamming']} bits" if record.get("hamming")
             else "") + ")")
    return 0


def cmd_search(args):
    from ..search import Searcher
    from ..search.batch import expand_queries, search_each
    if args.k < 1:
        raise ParameterError(f"k must be >= 1, got {args.k}", "k")
    if args.expand < 0:
        raise ParameterError(f"expand must be >= 0, got {args.expand}", "expand")
    if args.shortlist < 1:
        raise ParameterError(f"shortlist must be >= 1, got {args.shortlist}", "shortlist")
    params = _search_params(args)
    results, answered, failed = [], 0, 0
    with Searcher(args.store, params=params) as searcher:
        for r in search_each(searcher, expand_queries(args.query), k=args.k,
                             rerank=args.rerank or args.expand > 0, expand=args.expand,
                             shortlist=args.shortlist):
            if "error" in r:
                failed += 1
                print(f"features: error: {r['error']}", file=sys.stderr, flush=True)
            else:
                answered += 1
            if args.json:
                results.append(r)
            elif "error" not in r:
                _print_results(r)
    if args.json:
        print(json.dumps(results, indent=1))
    if failed and answered + failed > 1:
        print(f"features: {failed} of {answered + failed} queries could not be answered",
              file=sys.stderr)
    return EXIT_QUERIES_FAILED if failed else 0


def _print_results(r):
    print(f"query: {r['query']}")
    for rank, hit in enumerate(r["results"], 1):
        extra = f"  inliers {hit['inliers']}" if "inliers" in hit else ""
        label = hit.get("class", hit["label"])
        print(f"  {rank:3d}. {hit['score']:.4f}  {hit['key']}  (label {label}){extra}")
    sys.stdout.flush()


def cmd_serve(args):
    from ..serve import serve
    if not args.max_body_mb > 0:
        raise ParameterError(f"max_body_mb must be > 0, got {args.max_body_mb}", "max_body_mb")
    if not args.upload_memory_mb > 0:
        raise ParameterError(f"upload_memory_mb must be > 0, got {args.upload_memory_mb}",
                             "upload_memory_mb")
    limits = dict(threads=args.threads, max_body=max(1, int(args.max_body_mb * 1024 * 1024)),
                  timeout=args.timeout, max_concurrent=args.max_concurrent,
                  max_connections=args.max_connections,
                  header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                  upload_memory=max(1, int(args.upload_memory_mb * 1024 * 1024)))
    if args.max_pixels is not None:
        limits["max_pixels"] = args.max_pixels
    limits["search_params"] = _search_params(args)
    limits["index_memory"] = args.index_memory
    return serve(args.store, args.host, args.port, **limits)


def cmd_info(args):
    from ..pipeline.info import store_info
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"store:        {info['store']}")
    print(f"images:       {info['images']} ({info['failed']} failed)")
    print(f"descriptors:  {info['descriptors']}")
    tree = info.get("tree")
    print(f"preset:       {info['config']['preset']}, {info['words']} words"
          + (f" (vocabulary tree: {tree['branching']} branches, {tree['depth']} levels, "
             f"{tree['nodes']} nodes)" if tree else ""))
    print(f"classes:      {info['classes']}")
    for name, e in sorted(info["encoding_details"].items()):
        print(f"encoding:     {name}: {e['method'] or '?'}, {e['layout']}, {e['dim']} dims, "
              f"{e['dtype']}, {e['bytes'] / 1e6:.1f} MB")
        for model, m in sorted(info["models"].get(name, {}).items()):
            shape = " x ".join(map(str, m["shape"])) if m["shape"] else "missing"
            print(f"  model:      {m['path']}: {shape}, learned from "
                  f"{m['learned_from'] or 'an unrecorded number of descriptors'}")
    ix = info.get("index_info")
    print("index:        " + (f"{ix['vectors']} images, {ix['factory'] or '?'} on "
                              f"{ix['encoding'] or '?'}"
                              f"{_shown_params(ix.get('params') or {}, ', ')}, "
                              f"{ix['bytes'] / 1e6:.1f} MB"
                              + (f" + refine rows {ix['refine_bytes'] / 1e6:.1f} MB"
                                 if ix.get("refine_bytes") else "")
                              if ix else "none"))
    print(f"size on disk: {info['bytes'] / 1e6:.1f} MB")
    return 0


def _aggregate_options(args):
    names = ("grids", "kernel_map", "kernel_order", "normalization", "weights", "components",
             "pca_dims", "whiten", "xy_weight", "centers", "dtype")
    values = {k: getattr(args, k, None) for k in names}
    return {k: v for k, v in values.items() if v is not None and v is not False}


def cmd_aggregate(args):
    from ..pipeline.aggregate import aggregate
    if args.jobs < 1:
        raise ParameterError(f"jobs must be >= 1, got {args.jobs}", "jobs")
    config = _stored_config(args.store)
    source = limit = None
    if args.source:
        from ..store import Manifest
        source = _source(args)
        limit = (Manifest(args.store).data.get("job") or {}).get("limit")
    with _workers(args) as jobs:
        path = aggregate(config, args.store, args.method, args.name, _aggregate_options(args),
                         jobs, replace=args.replace, source=source, limit=limit,
                         progress=not args.quiet)
    print(f"encodings/{args.name or args.method}: {path}")
    return 0


def cmd_baseline(args):
    from ..baseline.cli import run_baseline
    return run_baseline(args)


def cmd_verify(args):
    from ..pipeline.verify import verify_store
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
    from ..demo import run_demo
    return run_demo(args.out, jobs=args.jobs, progress=not args.quiet)
