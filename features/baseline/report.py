"""`features baseline --report DIR`: an HTML page with figures, and a markdown summary.

``DIR/index.html`` (open it in a browser; images beside it), ``DIR/summary.md``,
``DIR/results.json`` and the figures ``DIR/*.png`` (matplotlib, Agg backend):
error per encoding and classifier, accuracy against information gain (DARTS hedging),
per-class accuracy, the confusion among the most confused classes, and a strip of example
images per class with the best classifier's top guesses (thumbnails read from the source the
store was built from; left out, with the reason, when the source is gone).
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from ..exceptions import BaselineError
from .experiment import to_json
from .metrics import best_line, format_error

MAX_STRIP_CLASSES = 12
STRIP_IMAGES = 4


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _label(r):
    return f"{r['encoding']} / {r['classifier']}"


def _fig_errors(result, path):
    plt = _plt()
    rs = result["results"]
    x = np.arange(len(rs))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rs) + 2), 3.6), dpi=100)
    for name, shift, colour in (("top1", -0.2, "#c0504d"), ("top5", 0.2, "#4f81bd")):
        if rs[0][f"{name}_error"] is None:   # trivial with this few classes
            continue
        values = np.array([r[f"{name}_error"] for r in rs])
        ci = np.array([r[f"{name}_error_ci"] for r in rs])
        # the 95% intervals as error bars: a gap smaller than they are is not a result
        ax.bar(x + shift, values, 0.4, yerr=np.abs(ci.T - values), capsize=3,
               label=f"top-{name[-1]} error (95% interval)", color=colour)
    ax.set_xticks(x, [_label(r) for r in rs], rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("error")
    ax.set_title("Flat error per encoding and classifier")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_hedging(result, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for r in result["results"]:
        c = r["hedging"]["curve"]
        ax.plot(c["info_gain"], c["accuracy"], marker=".", label=_label(r))
    ax.set_xlabel("mean information gain (bits)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Hedging (DARTS): accuracy vs information gain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_per_class(best, names, path):
    plt = _plt()
    acc = np.array([np.nan if a is None else a for a in best["per_class_accuracy"]])
    order = np.argsort(np.nan_to_num(acc, nan=-1))[::-1]
    fig, ax = plt.subplots(figsize=(max(5, min(14, 0.35 * len(acc) + 2)), 3.6), dpi=100)
    if len(acc) <= 40:
        ax.bar(np.arange(len(acc)), np.nan_to_num(acc[order]), color="#9bbb59")
        ax.set_xticks(np.arange(len(acc)), [names[i][:18] for i in order], rotation=60,
                      ha="right", fontsize=7)
    else:  # too many classes to name: the sorted profile
        ax.plot(np.nan_to_num(acc[order]), color="#9bbb59")
        ax.set_xlabel("classes, best first")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Per-class accuracy ({_label(best)})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fig_confusion(best, cm, names, path, n=10):
    plt = _plt()
    involved = []
    for p in best["most_confused"]:
        for c in (p["true"], p["predicted"]):
            if c not in involved:
                involved.append(c)
    involved = involved[:n] or list(range(min(n, len(cm))))
    sub = cm[np.ix_(involved, involved)].astype(float)
    rows = sub.sum(1, keepdims=True)
    sub = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    im = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
    labels = [names[i][:16] for i in involved]
    ax.set_xticks(range(len(involved)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(involved)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion among the most confused classes")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _read_thumbnails(store, keys, side=96):
    """{key: gray uint8 thumbnail} read from the store's source; (thumbs, reason if none)."""
    from ..decode import decode_gray
    from ..exceptions import DecodeError, SourceError
    from ..sources import open_source
    job = {}
    manifest = Path(store.dir) / "manifest.json"
    if manifest.exists():
        job = json.loads(manifest.read_text()).get("job") or {}
    if not job.get("source"):
        return {}, "the store does not record its source"
    try:
        source = open_source(job["source"], kind=job.get("kind") or "auto")
    except (SourceError, OSError) as exc:
        return {}, f"source {job['source']} cannot be opened ({exc})"
    wanted, out = set(keys), {}
    for item in source:
        if item.key in wanted:
            try:
                out[item.key] = decode_gray(item.read(), side).gray
            except (DecodeError, OSError, AttributeError):
                pass
            if len(out) == len(wanted):
                break
    return out, None if out else "no example image could be read from the source"


def _fig_strip(result, best, path):
    plt = _plt()
    val = result["_val"]
    names = result["class_names"]
    guesses = best["_guesses"]
    keys = val.store.keys
    classes = list(range(min(MAX_STRIP_CLASSES, len(names))))
    picks = {}
    for c in classes:
        pos = np.flatnonzero(val.labels == c)[:STRIP_IMAGES]
        picks[c] = pos
    wanted = [str(keys[val.rows[p]]) for pos in picks.values() for p in pos]
    thumbs, reason = _read_thumbnails(val.store, wanted)
    if not thumbs:
        return reason
    fig, axes = plt.subplots(len(classes), STRIP_IMAGES,
                             figsize=(2.1 * STRIP_IMAGES, 2.3 * len(classes)), dpi=80,
                             squeeze=False)
    for r, c in enumerate(classes):
        for j in range(STRIP_IMAGES):
            ax = axes[r, j]
            ax.axis("off")
            if j >= len(picks[c]):
                continue
            p = picks[c][j]
            img = thumbs.get(str(keys[val.rows[p]]))
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            top = [names[g][:14] for g in guesses[p, :3]]
            ok = guesses[p, 0] == c
            ax.set_title("\n".join(top), fontsize=7, color="#207020" if ok else "#b02020")
        axes[r, 0].text(-0.1, 0.5, names[c][:16], transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(f"Examples per class with the top-3 guesses ({_label(best)}; "
                 f"green: right at top-1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def _table_rows(result):
    rows = []
    for r in result["results"]:
        hier = "-" if r["hierarchical_error"] is None else format_error(r, "hierarchical", 3)
        d90 = next((d for d in r["hedging"]["darts"] if d["target_accuracy"] == 0.9), None)
        hedge = "-" if d90 is None else f"{d90['accuracy']:.3f} / {d90['info_gain']:.2f} bits"
        rows.append([r["encoding"], r["classifier"], str(r["dims"]), format_error(r, "top1"),
                     format_error(r, "top5"), hier, f"{r['lambda']:g}", hedge])
    return rows


HEAD = ["encoding", "classifier", "dims", "top-1 error [95% interval]",
        "top-5 error [95% interval]", "hierarchical error [95% interval]",
        "lambda", "DARTS at 90% (val accuracy / gain)"]


def check_directory(directory):
    """Refuse a report folder that cannot be written before any training is done (the
    experiment may take hours); it is created when missing."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise BaselineError(f"report folder {d} exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BaselineError(f"cannot create the report folder {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise BaselineError(f"cannot write into the report folder {d}: permission denied")
    return d


def write_report(result, directory):
    """Write the report of an :func:`features.baseline.experiment.evaluate` result."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    best = next(r for r in result["results"]
                if (r["encoding"], r["classifier"]) == (result["best"]["encoding"],
                                                        result["best"]["classifier"]))
    verdict = best_line(result["best"]).replace("best:", "Best:", 1)
    names = result["class_names"]
    _fig_errors(result, d / "errors.png")
    _fig_hedging(result, d / "hedging.png")
    _fig_per_class(best, names, d / "per_class.png")
    _fig_confusion(best, best["_confusion"], names, d / "confusion.png")
    strip_missing = _fig_strip(result, best, d / "examples.png")
    (d / "results.json").write_text(json.dumps(to_json(result), indent=1))

    rows = _table_rows(result)
    confused = [f"{names[p['true']]} -> {names[p['predicted']]}: {p['count']} "
                f"({100 * p['fraction']:.0f}% of {names[p['true']]})"
                for p in best["most_confused"][:10]]
    md = [f"# Baseline: {result['store']}", "",
          f"{result['train_images']} training images (+{result['heldout_images']} held out "
          f"to choose lambda), {result['val_images']} scored ({result['split']}), "
          f"{len(result['classes'])} classes; hierarchy: {result['hierarchy']}.", "",
          "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    if best.get("trivial"):
        md += ["", f"Top-5 and hierarchical error are trivial: {best['trivial']}."]
    md += ["", f"**{verdict}**", "", "Most confused pairs (best classifier):", ""]
    md += [f"- {c}" for c in confused] or ["- none"]
    (d / "summary.md").write_text("\n".join(md) + "\n")

    esc = html.escape
    table = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    figs = [("errors.png", "Flat error per encoding and classifier"),
            ("hedging.png", "Accuracy against information gain (DARTS)"),
            ("per_class.png", "Per-class accuracy of the best classifier"),
            ("confusion.png", "Confusion among the most confused classes")]
    if strip_missing is None:
        figs.append(("examples.png", "Examples per class with the top guesses"))
    fig_html = "".join(f'<figure><img src="{f}" alt="{esc(t)}"><figcaption>{esc(t)}'
                       f'</figcaption></figure>' for f, t in figs)
    note = "" if strip_missing is None else \
        f"<p class='note'>No example images: {esc(strip_missing)}.</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Baseline: {esc(result['store'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: 4px 8px; text-align: right; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; vertical-align: top; }}
figure img {{ max-width: 720px; border: 1px solid #ddd; }}
.best {{ font-size: 1.2em; }}
</style></head><body>
<h1>Baseline experiments</h1>
<p>Store <code>{esc(result['store'])}</code>: {result['train_images']} training images
(+{result['heldout_images']} held out), {result['val_images']} scored ({esc(result['split'])}),
{len(result['classes'])} classes; hierarchy: {esc(result['hierarchy'])}.</p>
<p class="best" id="best">{esc(verdict)}</p>
<table id="results"><tr>{''.join(f'<th>{esc(h)}</th>' for h in HEAD)}</tr>{table}</table>
<h2>Most confused pairs</h2><ul>{''.join(f'<li>{esc(c)}</li>' for c in confused)}</ul>
{note}{fig_html}
<p>Machine-readable: <a href="results.json">results.json</a>; summary:
<a href="summary.md">summary.md</a>.</p>
</body></html>
"""
    (d / "index.html").write_text(page)
    return d / "index.html"
