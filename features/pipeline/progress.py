"""Progress lines for long steps: count, images/s, ETA, failures so far."""
from __future__ import annotations

import sys
import time


def _fmt_duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Prints to stderr: redrawn in place on a terminal, one line every few seconds otherwise."""

    def __init__(self, label, total=None, *, stream=None, enabled=True, interval=None):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()

    def update(self, n=1, failed=0):
        self.done += n
        self.failed += failed
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._print(self.line(now), final=False)

    def line(self, now=None):
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f", ETA {_fmt_duration((self.total - self.done) / rate)}"
        return (f"{self.label}: {self.done}{total} images, {rate:.1f} images/s{eta}, "
                f"{self.failed} failed")

    def close(self):
        elapsed = time.monotonic() - self.start
        if self.enabled:
            self._print(f"{self.line()} in {_fmt_duration(elapsed)}", final=True)
        return elapsed

    def _print(self, text, final):
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
