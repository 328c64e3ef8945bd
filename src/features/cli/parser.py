"""The argument parser of the `features` command."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import commands as c
from .commands import EXIT_ERROR


def _cores() -> int:
    """The cores this process may use, as joblib counts them (CPU affinity and a
    container's CPU quota), for ``--jobs -1``."""
    from joblib import cpu_count
    return max(1, int(cpu_count()))


def jobs_count(text) -> int:
    """``--jobs``: N >= 1 worker processes, or, as in joblib and scikit-learn, -1 for all
    cores, -2 for all but one, and so on."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n >= 1:
        return n
    cores = _cores()
    if n == 0 or n < -cores:
        raise argparse.ArgumentTypeError(
            f"{n} is not a worker count: give N >= 1, or -1 for all {cores} cores, -2 for "
            f"all but one, down to -{cores}")
    return cores + 1 + n


JOBS_HELP = "worker processes: N, or -1 for all cores, -2 for all but one (default 1)"


def _common_options() -> argparse.ArgumentParser:
    """The options every command takes (the parent parser of each command's)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr: only results and errors")
    return p


def _config_options(p):
    g = p.add_argument_group("recipe (defaults come from the preset)")
    # no default here: `run --like` tells a preset given from none
    g.add_argument("--preset", help="sift, sift-fast, phow or sbow (default: sift)")
    g.add_argument("--words", type=int, help="codebook size")
    g.add_argument("--tree-branching", type=int, metavar="B",
                   help="learn the words as a vocabulary tree (hierarchical k-means, for "
                        "large vocabularies such as --words 100000) with B children per node")
    g.add_argument("--tree-depth", type=int, metavar="L",
                   help="levels of the vocabulary tree (default: the fewest that hold --words)")
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
    p.add_argument("--jobs", type=jobs_count, default=1, help=JOBS_HELP)
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


def _search_param_options(p, when):
    g = p.add_argument_group(f"search parameters ({when})")
    g.add_argument("--nprobe", type=int, metavar="N",
                   help="inverted lists an IVF index scans per query: more is slower and "
                        "finds more of the true neighbours")
    g.add_argument("--k-factor", type=float, metavar="F",
                   help="a refine stage re-scores F times k candidates")
    g.add_argument("--search-params", metavar="STRING",
                   help="any FAISS search parameters, e.g. nprobe=8,k_factor=4 "
                        "(--nprobe and --k-factor win over the same names here)")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are bad input like any other: one line and exit status 2."""

    def error(self, message):
        print(f"features: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def build_parser():
    p = _Parser(prog="features", description=(
        "Classic-vision features for image collections: SIFT, bag of visual words, "
        "an HDF5 store and FAISS search."))
    p.add_argument("--version", action="version", version=f"features {__version__}",
                   help="print the version and exit")
    common = _common_options()
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="the step or the app to run (`features COMMAND --help`)")

    def add(name, func, help):
        sp = sub.add_parser(name, help=help, description=help, parents=[common])
        # the command's own parser: an error naming a parameter shows the flag that sets it
        sp.set_defaults(func=func, parser=sp)
        return sp

    sp = add("run", c.cmd_run, "all steps: sample, codebook, encode, index")
    sp.add_argument("source", help="image folder, ImageNet layout, archive or list file")
    sp.add_argument("--encodings", help="comma-separated encodings to add after encode, with "
                                        "their defaults: bovw, spm, vlad, fisher; with "
                                        "--like, also names of STORE's encodings")
    sp.add_argument("--like", metavar="STORE",
                    help="encode with the recipe and codebook of STORE (e.g. val images like "
                         "the train store); learns no codebook")
    _job_options(sp)
    _config_options(sp)
    sp = add("extract", c.cmd_extract, "pass 1: sample descriptors for the codebook")
    sp.add_argument("source", help="image folder, ImageNet layout, archive or list file")
    _job_options(sp)
    _config_options(sp)
    sp = add("codebook", c.cmd_codebook, "learn the codebook from the sample (k-means)")
    sp.add_argument("store", help="the store directory (after `features extract`)")
    sp.add_argument("--jobs", type=jobs_count, default=1,
                    help="threads of the k-means products: N, or -1 for all cores, -2 for "
                         "all but one (default 1)")
    sp = add("encode", c.cmd_encode, "pass 2: extract, quantize and encode every image")
    sp.add_argument("source", help="the source given to `features extract`")
    _job_options(sp)
    sp = add("aggregate", c.cmd_aggregate, "add an encoding (bovw, spm, vlad, fisher) to a store")
    sp.add_argument("store", help="the store directory")
    sp.add_argument("--method", required=True, choices=("bovw", "spm", "vlad", "fisher"),
                    help="the encoding: bovw, spm, vlad or fisher")
    sp.add_argument("--name", help="encodings/NAME in store.h5 (default: the method)")
    sp.add_argument("--replace", action="store_true", help="recompute an existing encoding")
    sp.add_argument("--jobs", type=jobs_count, default=1, help=JOBS_HELP)
    sp.add_argument("--cluster", metavar="ADDR", help="run the tasks on Dask (as `features run`)")
    sp.add_argument("--source", help="the store's source, to extract descriptors again when "
                                     "the store was kept without them (vlad, fisher)")
    sp.add_argument("--kind", default="auto", help="source kind (see `features run --help`)")
    sp.add_argument("--labels", help="with --source: its labels file (as `features run`)")
    sp.add_argument("--synsets", help="with --source: its synset names file (as `features run`)")
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
    g.add_argument("--xy-weight", type=float, metavar="W",
                   help="fisher: append each descriptor's position in its image, W x (x / width "
                        "- 0.5, y / height - 0.5), to its PCA-reduced values before the GMM "
                        "(spatial augmentation; default: none)")
    g.add_argument("--dtype", choices=("float16", "float32"),
                   help="vlad, fisher: stored type (default float32 for vlad, float16 "
                        "for fisher)")
    sp = add("index", c.cmd_index, "build the search index (kept when current)")
    sp.add_argument("store", help="the store directory")
    sp.add_argument("--encoding", default="bovw", help="stored encoding to index (bovw)")
    sp.add_argument("--index", metavar="STRING",
                    help="a FAISS index factory string, or Inverted for an inverted file "
                         "(default: an inverted file over more than 16,384 words; else "
                         "exact below 50,000 images, IVF-PQ with a refine stage above)")
    sp.add_argument("--hamming", type=int, metavar="BITS",
                    help="with --index Inverted: Hamming embedding, a signature of BITS "
                         "(32 or 64) bits per descriptor that weighs each word match by "
                         "how near the two descriptors lie (12 bytes per descriptor; the "
                         "store must keep its SIFT descriptors)")
    sp.add_argument("--force", action="store_true", help="rebuild even when current")
    sp.add_argument("--jobs", type=jobs_count, default=1,
                    help="worker processes filling the index shard by shard: N, or -1 for "
                         "all cores, -2 for all but one (default 1)")
    sp.add_argument("--cluster", metavar="ADDR", help="fill it on Dask (as `features run`)")
    _search_param_options(sp, "the defaults recorded for searches; a current index is kept "
                              "and only its defaults change")
    sp = add("search", c.cmd_search,
             "nearest images of image files, image keys or folders of images (exit 0: every "
             "query answered, 4: some could not be, each said on stderr)")
    sp.add_argument("store", help="the store directory (with an index)")
    sp.add_argument("query", nargs="+",
                    help="an image file, the key of an image in the store, or a folder "
                         "(each image file below it is a query)")
    sp.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    sp.add_argument("--rerank", action="store_true", help="geometric re-ranking of a shortlist")
    sp.add_argument("--shortlist", type=int, default=100, metavar="N",
                    help="the best N results that --rerank verifies (default 100); a longer "
                         "one finds copies ranked lower, at the cost of verifying them")
    sp.add_argument("--expand", type=int, default=0, metavar="N",
                    help="average query expansion with the N best verified results "
                         "(implies --rerank)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    _search_param_options(sp, "default: those recorded by `features index`")
    sp = add("serve", c.cmd_serve, "HTTP API and web page for query-by-image search")
    sp.add_argument("store", help="the store directory (with an index)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free port)")
    sp.add_argument("--threads", type=int, default=2,
                    help="worker threads for decoding, extraction and search (2)")
    sp.add_argument("--max-concurrent", type=int, default=64,
                    help="requests admitted at once, running or queued; more get 503 (64)")
    sp.add_argument("--max-connections", type=int, default=1024,
                    help="connections open at once, idle ones included; the next one gets "
                         "503 and is closed (1024)")
    sp.add_argument("--timeout", type=float, default=30.0,
                    help="seconds a request may take before it gets 503 (30)")
    sp.add_argument("--max-body-mb", type=float, default=16.0,
                    help="largest accepted upload in MiB; larger gets 413 (16)")
    sp.add_argument("--max-pixels", type=int,
                    help="largest accepted image in pixels; larger gets 400 (the decoder's "
                         "limit: 178,956,970)")
    sp.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds a connection has to send a request's headers (after "
                         "opening or after its previous answer) before it is closed (10)")
    sp.add_argument("--body-timeout", type=float, default=20.0,
                    help="seconds an upload's body has to arrive; later gets 408 (20)")
    sp.add_argument("--upload-memory-mb", type=float, default=256.0,
                    help="MiB of upload bodies held in memory at once, all requests "
                         "together; an upload that does not fit gets 503 (256)")
    sp.add_argument("--index-memory", choices=["auto", "copy", "map"], default="auto",
                    help="copy the index files into the server's memory (nothing done to "
                         "the files on disk can then stop it; costs their size) or map "
                         "them; auto: copy when they take at most a quarter of memory (auto)")
    _search_param_options(sp, "of every request unless it gives its own; default: those "
                              "recorded by `features index`")
    sp = add("info", c.cmd_info, "what a store holds")
    sp.add_argument("store", help="the store directory")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("baseline", c.cmd_baseline,
             "train and score linear classifiers on a store's encodings (ImageNet metrics)")
    sp.set_defaults(on_interrupt="nothing was kept: a rerun trains and scores from the start")
    sp.add_argument("store", help="the training store (and the val images, without --val)")
    sp.add_argument("--val", metavar="STORE", help="a val store encoded --like the train store")
    sp.add_argument("--encoding", help="only this encoding (default: every encoding)")
    sp.add_argument("--classifier", choices=["svm", "logreg"],
                    help="only this classifier (default: both)")
    sp.add_argument("--train-per-class", type=int, metavar="N", help="at most N per class")
    sp.add_argument("--val-fraction", type=float, default=0.2,
                    help="without --val or splits: fraction of each class that scores (0.2)")
    sp.add_argument("--epochs", type=int, default=10, help="SGD passes (default 10)")
    sp.add_argument("--seed", type=int, default=0,
                    help="random seed of the splits and of SGD (default 0)")
    sp.add_argument("--hierarchy", metavar="META_MAT",
                    help="a devkit meta.mat (default: the shipped WordNet 3.0 nouns)")
    sp.add_argument("--report", metavar="DIR", help="write an HTML report and a markdown summary")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("verify", c.cmd_verify, "check every part of a store (exit 0 sound, 1 damaged)")
    sp.add_argument("store", help="the store directory")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("demo", c.cmd_demo, "build a small copy-detection set from shipped photos and run it")
    sp.add_argument("-o", "--out", default="features-demo", help="output folder (features-demo)")
    sp.add_argument("--jobs", type=jobs_count, default=1, help=JOBS_HELP)
    return p
