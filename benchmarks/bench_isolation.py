"""What the crash isolation of the batch job costs: the encode step (pass 2 + merge) of
the `sbow` recipe, `--jobs 1`, with the code before isolation (work in the job's own
process) against the code with it (work in a worker process that announces each image),
on the same ImageNet-like JPEGs and codebook, alternating runs, medians.

Each run is a fresh process calling `encode_images` twice on empty stores: the first call
includes starting the fork server that workers come from (once per process), the second
does not.

    python benchmarks/bench_isolation.py --before /path/to/checkout-before [--images 600]
        [--rounds 3]

``--before`` is a checkout of the code before isolation with its kernels compiled
(`pip install -e` or `python setup.py build_ext --inplace` there).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / "src"
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, shutil, sys, time
from pathlib import Path
from features.pipeline import encode_images
from features.presets import get_preset
from features.sources import open_source

def main():
    base, work, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    config = get_preset("sbow", words=1000, sample_images=200)
    source = open_source(sys.argv[4])
    times = []
    for call in range(2):
        out = work / f"call{call}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copy(base / "manifest.json", out / "manifest.json")
        shutil.copy(base / "codebook.npy", out / "codebook.npy")
        start = time.perf_counter()
        encode_images(config, source, out / "codebook.npy", out, jobs=1, limit=limit,
                      progress=False)
        times.append(time.perf_counter() - start)
    print(json.dumps(times))

if __name__ == "__main__":
    main()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="checkout of the code before isolation")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=str(HERE / "_work" / "isolation"))
    ap.add_argument("--out", default=str(HERE / "results" / "isolation"))
    args = ap.parse_args()

    from corpus import make_corpus
    work = Path(args.work)
    train = make_corpus(work / "corpus", args.images)
    base = work / "base"
    if not (base / "codebook.npy").exists():
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-m", "features", "extract", str(train), "-o", str(base),
                        "--preset", "sbow", "--limit", str(args.images), "--sample-images",
                        "200", "-q"], env=env, check=True)
        subprocess.run([sys.executable, "-m", "features", "codebook", str(base)], env=env,
                       check=True, stdout=subprocess.DEVNULL)
    script = work / "child.py"
    script.write_text(CHILD)
    before = Path(args.before).resolve()
    if (before / "src" / "features").is_dir():       # a checkout made after the move to src/
        before = before / "src"
    variants = {"before (in-process)": before, "isolated": ROOT}
    runs = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            env = dict(os.environ, PYTHONPATH=str(variants[name]), OMP_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, str(script), str(base), str(work / "runs"),
                                   str(args.images), str(train)], env=env, check=True,
                                  capture_output=True, text=True, cwd=str(work))
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    shutil.rmtree(work / "runs", ignore_errors=True)

    rows = {}
    for name, values in runs.items():
        first = statistics.median(v[0] for v in values)
        second = statistics.median(v[1] for v in values)
        rows[name] = {"first_call_s": first, "second_call_s": second,
                      "images_per_s_second_call": args.images / second,
                      "runs": values}
    b, i = rows["before (in-process)"], rows["isolated"]
    result = {"images": args.images, "rounds": args.rounds, "variants": rows,
              "ratio_second_call": b["second_call_s"] / i["second_call_s"],
              "startup_cost_s": (i["first_call_s"] - i["second_call_s"])
              - (b["first_call_s"] - b["second_call_s"]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Crash isolation: cost on the encode step (`sbow`, `--jobs 1`, {args.images} "
             f"images, median of {args.rounds} alternating rounds)", "",
             f"`python benchmarks/bench_isolation.py --before CHECKOUT --images {args.images} "
             f"--rounds {args.rounds}`; load average during the run: "
             f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared).", "",
             "| code | first call (s) | second call (s) | images/s (second call) |",
             "|---|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['first_call_s']:.2f} | {row['second_call_s']:.2f} | "
                     f"{row['images_per_s_second_call']:.1f} |")
    spread = {name: (min(v[1] for v in row["runs"]), max(v[1] for v in row["runs"]))
              for name, row in rows.items()}
    lines += ["", f"Throughput ratio (isolated / before, second call): "
                  f"{result['ratio_second_call']:.3f}; second calls ranged "
                  + "; ".join(f"{n}: {a:.1f}-{b:.1f} s" for n, (a, b) in spread.items())
                  + f". One-time cost of starting the fork server, per process: "
                  f"{result['startup_cost_s']:.2f} s."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
