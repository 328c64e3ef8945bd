"""The `features baseline` command (argument checks and printing only)."""
from __future__ import annotations

import json
import sys

from ..exceptions import BaselineError
from .experiment import evaluate, to_json


def run_baseline(args):
    from ..store import Store
    if args.epochs < 1:
        raise BaselineError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.val_fraction < 1:
        raise BaselineError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    from ..pipeline.progress import Progress
    quiet = args.quiet or args.json
    log = None if quiet else (lambda m: print(m, file=sys.stderr))
    progress = None if quiet else (lambda label: Progress(label, unit="examples"))
    classifiers = (args.classifier,) if args.classifier else ("svm", "logreg")
    with Store(args.store) as store:
        val = Store(args.val) if args.val else None
        try:
            result = evaluate(store, val, encoding=args.encoding, classifiers=classifiers,
                              hierarchy=args.hierarchy, seed=args.seed,
                              val_fraction=args.val_fraction,
                              train_per_class=args.train_per_class, epochs=args.epochs, log=log,
                              progress=progress)
            if args.report:
                from .report import write_report
                result["report"] = str(write_report(result, args.report))
        finally:
            if val is not None:
                val.close()
    if args.json:
        print(json.dumps(to_json(result), indent=1))
        return 0
    print(f"{result['train_images']} training images (+{result['heldout_images']} held out), "
          f"{result['val_images']} scored, {len(result['classes'])} classes; "
          f"hierarchy: {result['hierarchy']}")
    print(f"{'encoding':<16} {'classifier':<8} {'top-1':>7} {'top-5':>7} {'hier.':>6} "
          f"{'lambda':>8}")
    for r in result["results"]:
        hier = "-" if r["hierarchical_error"] is None else f"{r['hierarchical_error']:.3f}"
        print(f"{r['encoding']:<16} {r['classifier']:<8} {r['top1_error']:7.4f} "
              f"{r['top5_error']:7.4f} {hier:>6} {r['lambda']:8.0e}")
    b = result["best"]
    print(f"best: {b['encoding']} / {b['classifier']} (top-1 error {b['top1_error']:.4f})")
    if "report" in result:
        print(f"report: {result['report']}")
    return 0
