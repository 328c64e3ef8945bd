"""The `features baseline` command (argument checks and printing only)."""
from __future__ import annotations

import importlib.util
import json
import sys

from ..exceptions import BaselineError
from .experiment import evaluate, to_json
from .metrics import best_line, format_error


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
    if args.report:
        # the report's figures need matplotlib: said before the experiment, which can take hours
        if importlib.util.find_spec("matplotlib") is None:
            raise BaselineError("--report needs matplotlib: pip install '.[baseline]'")
        from .report import check_directory
        check_directory(args.report)
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
    print(result["leak_check"])
    print(f"{'encoding':<16} {'classifier':<8} {'top-1 error [95% interval]':<26} "
          f"{'top-5 error [95% interval]':<26} {'hier.':>6} {'lambda':>8}")
    for r in result["results"]:
        hier = "-" if r["hierarchical_error"] is None else f"{r['hierarchical_error']:.3f}"
        print(f"{r['encoding']:<16} {r['classifier']:<8} {format_error(r, 'top1'):<26} "
              f"{format_error(r, 'top5'):<26} {hier:>6} {r['lambda']:8.0e}")
    first = result["results"][0]
    if first.get("trivial"):
        print(f"top-5 and hierarchical error are trivial: {first['trivial']}")
    print(best_line(result["best"]))
    if "report" in result:
        print(f"report: {result['report']}")
    return 0

