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
# Figures are drawn for the page at their natural size: at most FIGURE_MAX_PX wide (the
# page shows them unscaled in a 1280-pixel window) and no text smaller than MIN_FONT_PT
# (11 pixels at DPI).
DPI = 100
FIGURE_MAX_PX = 1000
MIN_FONT_PT = 8
FONT_PT = 9
# Class names are wrapped, never cut, at this many characters a line.
WRAP = 18


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _label(r):
    return f"{r['encoding']} / {r['classifier']}"


def _best_of(result):
    """The result that ``result["best"]`` names (the experiment ranked them)."""
    b = result["best"]
    return next(r for r in result["results"]
                if (r["encoding"], r["classifier"]) == (b["encoding"], b["classifier"]))


def _wrap(name, width=WRAP):
    import textwrap
    return "\n".join(textwrap.wrap(name, width, break_long_words=False)) or name


def _figure(plt, width_in, height_in, **kw):
    """A figure in constrained layout (titles, labels and colorbars placed without
    overlapping), never wider than the page shows unscaled."""
    width_in = min(width_in, FIGURE_MAX_PX / DPI)
    return plt.subplots(figsize=(width_in, height_in), dpi=DPI, layout="constrained", **kw)


def data_limits(values, lo=0.0, hi=1.0):
    """Axis limits around `values` (a margin of a tenth of their spread, at least 0.01, more
    above for the printed values), kept within [lo, hi]."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return lo, hi
    span = max(float(v.max() - v.min()), 0.02)
    return max(lo, float(v.min()) - 0.12 * span), min(hi, float(v.max()) + 0.25 * span)


def fig_errors(result):
    """Top-1 and top-5 error per encoding and classifier: one panel each, points with their
    values, each y axis around its own values (so the differences compared are visible;
    points rather than bars, as a bar's length from a baseline other than 0 would mislead)."""
    plt = _plt()
    rs = result["results"]
    best = _best_of(result)
    x = np.arange(len(rs))
    panels = [(ax_field, name, color) for ax_field, name, color in
              (("top1", "top-1 error", "#c0504d"), ("top5", "top-5 error", "#4f81bd"))
              if rs[0][f"{ax_field}_error"] is not None]     # top-5 is trivial with <= 5 classes
    fig, axes = _figure(plt, 2.5 + 0.9 * len(rs), 2.6 * len(panels) + 0.2,
                        nrows=len(panels), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (field, name, color) in zip(axes, panels):
        values = np.array([r[f"{field}_error"] for r in rs], dtype=float)
        ci = np.array([r[f"{field}_error_ci"] for r in rs], dtype=float)
        # the 95% intervals drawn with the points: a gap smaller than they are is not a
        # result (the verdict under the table says which are noise by the paired test)
        ax.errorbar(x, values, yerr=np.abs(ci.T - values), fmt="o", color=color,
                    markersize=7, capsize=4, clip_on=False)
        b = rs.index(best)
        ax.plot([x[b]], [values[b]], "o", markersize=12, markerfacecolor="none",
                markeredgecolor="#222222", label="best", clip_on=False)
        for xi, v in zip(x, values):
            ax.annotate(f"{v:.3f}", (xi, v), textcoords="offset points", xytext=(8, 0),
                        ha="left", va="center", fontsize=FONT_PT)
        ax.set_ylim(*data_limits(np.concatenate([values, ci.ravel()])))
        ax.set_ylabel(f"{name}\n(95% interval)")
        ax.grid(axis="y", color="#dddddd")
        ax.set_axisbelow(True)
        ax.margins(x=0.5 / max(len(rs), 1))
    axes[0].legend(loc="best", fontsize=FONT_PT)
    axes[-1].set_xticks(x, [_label(r) for r in rs], rotation=25 if len(rs) > 4 else 0,
                        ha="right" if len(rs) > 4 else "center")
    axes[0].set_title("Flat error per encoding and classifier (y axes around the values)")
    return fig


def fig_hedging(result):
    plt = _plt()
    fig, ax = _figure(plt, 6.5, 4.4)
    for r in result["results"]:
        c = r["hedging"]["curve"]
        ax.plot(c["info_gain"], c["accuracy"], marker=".", label=_label(r))
    ax.set_xlabel("mean information gain (bits)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Hedging (DARTS): accuracy vs information gain")
    ax.legend(fontsize=FONT_PT)
    return fig


def fig_per_class(best, names):
    plt = _plt()
    acc = np.array([np.nan if a is None else a for a in best["per_class_accuracy"]])
    order = np.argsort(np.nan_to_num(acc, nan=-1))[::-1]
    if len(acc) <= 40:  # a bar per class, named in full, best at the top
        fig, ax = _figure(plt, 7.5, 1.3 + 0.3 * len(acc))
        y = np.arange(len(acc))
        ax.barh(y, np.nan_to_num(acc[order]), color="#9bbb59")
        ax.set_yticks(y, [names[i] for i in order], fontsize=FONT_PT)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("top-1 accuracy")
        ax.grid(axis="x", color="#dddddd")
        ax.set_axisbelow(True)
    else:  # too many classes to name: the sorted profile
        fig, ax = _figure(plt, 7.5, 3.8)
        ax.plot(np.nan_to_num(acc[order]), color="#9bbb59")
        ax.set_xlabel("classes, best first")
        ax.set_ylim(0, 1)
        ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Per-class accuracy ({_label(best)})")
    return fig


def fig_confusion(best, cm, names, n=10):
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
    fig, ax = _figure(plt, 8, 7)
    im = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
    labels = [_wrap(names[i]) for i in involved]
    ax.set_xticks(range(len(involved)), labels, rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=FONT_PT)
    ax.set_yticks(range(len(involved)), labels, fontsize=FONT_PT)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion among the most confused classes (fraction of each true class)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _read_thumbnails(store, keys, side=96):
    """{key: gray uint8 thumbnail} read from the store's source; (thumbs, reason if none)."""
    from ..decode import decode_gray
    from ..exceptions import DecodeError, SourceError, StoreError
    from ..sources import open_source
    from ..store import Manifest
    try:
        job = Manifest(store.dir).data.get("job") or {}
    except StoreError:
        return {}, "the store's manifest cannot be read"
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


def fig_strip(result, best):
    """Example images per class with the best classifier's top-3 guesses; (figure, None), or
    (None, why not) when no image can be read from the source."""
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
        return None, reason
    fig, axes = _figure(plt, 1.6 + 2.1 * STRIP_IMAGES, 0.5 + 2.5 * len(classes),
                        nrows=len(classes), ncols=STRIP_IMAGES, squeeze=False)
    for r, c in enumerate(classes):
        for j in range(STRIP_IMAGES):
            ax = axes[r, j]
            # no axis lines or ticks, but the axes stay on: the row's class name is the first
            # one's y label, which constrained layout makes room for
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(picks[c]):
                continue
            p = picks[c][j]
            img = thumbs.get(str(keys[val.rows[p]]))
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            top = [f"{k + 1}. {_wrap(names[g], 22)}".replace("\n", "\n    ")
                   for k, g in enumerate(guesses[p, :3])]
            ok = guesses[p, 0] == c
            ax.set_title("\n".join(top), fontsize=MIN_FONT_PT, loc="left",
                         color="#207020" if ok else "#b02020")
        axes[r, 0].set_ylabel(_wrap(names[c], 16), rotation=0, ha="right", va="center",
                              fontsize=FONT_PT, labelpad=8)
    fig.suptitle(f"Examples per class with the top-3 guesses ({_label(best)}; "
                 f"green: right at top-1, red: wrong)")
    return fig, None


def build_figures(result):
    """The report's figures by file name (matplotlib figures, not yet saved), and why the
    example strip is missing (None when it is there)."""
    best = _best_of(result)
    names = result["class_names"]
    figs = {"errors.png": fig_errors(result), "hedging.png": fig_hedging(result),
            "per_class.png": fig_per_class(best, names),
            "confusion.png": fig_confusion(best, best["_confusion"], names)}
    strip, missing = fig_strip(result, best)
    if strip is not None:
        figs["examples.png"] = strip
    return figs, missing


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
    best = _best_of(result)
    verdict = best_line(result["best"]).replace("best:", "Best:", 1)
    names = result["class_names"]
    plt = _plt()
    figures, strip_missing = build_figures(result)
    for name, fig in figures.items():
        fig.savefig(d / name)
        plt.close(fig)
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
figure {{ max-width: calc(100% - 2em); }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}
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
