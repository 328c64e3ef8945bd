"""Progress lines for long steps: count, rate, ETA (and failures so far, for images).

Rendered here rather than with tqdm: on a terminal the line is redrawn in place (as tqdm
does), and when stderr is a file (a SLURM or systemd log, where ILSVRC-scale jobs run) it
is one whole line every few seconds, where tqdm would write its redraws, carriage
returns and all, into the file. The images' line also carries the failures so far.

The layers below the pipeline (k-means, the index builder) and the baseline's training
never print: they take a callback ``progress(done, total)``, and a :class:`Progress` is
one. Whether progress is shown at all is the caller's choice (``-q`` turns it off).
"""
from __future__ import annotations

import sys
import time

# Seconds between two lines when the stream is not a terminal (a log file).
LOG_INTERVAL = 5.0
TTY_INTERVAL = 0.2


def _fmt_duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Prints to stderr: redrawn in place on a terminal, one line every
    :data:`LOG_INTERVAL` seconds otherwise, and a last line with the time taken.

    ``unit`` names what is counted (plural); ``failures`` adds the failed count to the
    line. Calling the object, ``bar(done, total)``, sets the count: the callback that the
    lower layers take.
    """

    def __init__(self, label, total=None, *, unit="images", failures=None, stream=None,
                 enabled=True, interval=None):
        self.label, self.total, self.unit = label, total, unit
        self.failures = unit == "images" if failures is None else failures
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (
            TTY_INTERVAL if self.tty else LOG_INTERVAL)
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()
        self._started = False

    def update(self, n=1, failed=0):
        self.done += n
        self.failed += failed
        self._started = True
        self._maybe_print()

    def __call__(self, done, total=None):
        """Set the count (and the total, when the caller learns it only now)."""
        self.done = done
        if total is not None:
            self.total = total
        self._started = True
        self._maybe_print()

    def _maybe_print(self):
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._print(self.line(now), final=False)

    def _rate(self, rate):
        if rate >= 1 or rate == 0:
            return f"{rate:.1f} {self.unit}/s"
        # slow steps (a k-means iteration at ILSVRC scale): seconds per unit reads better
        return f"{1 / rate:.1f} s/{self.unit[:-1] if self.unit.endswith('s') else self.unit}"

    def line(self, now=None, final=False):
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total and not final:
            eta = f", ETA {_fmt_duration((self.total - self.done) / rate)}"
        failed = f", {self.failed} failed" if self.failures else ""
        return f"{self.label}: {self.done}{total} {self.unit}, {self._rate(rate)}{eta}{failed}"

    def close(self):
        """The last line (when anything was counted); returns the seconds taken."""
        elapsed = time.monotonic() - self.start
        if self.enabled and (self._started or self.total is not None):
            self._print(f"{self.line(final=True)} in {_fmt_duration(elapsed)}", final=True)
        return elapsed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _print(self, text, final):
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
