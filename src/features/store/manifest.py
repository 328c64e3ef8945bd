"""``manifest.json``: the finished steps and shards of a store, so that a rerun resumes; and
the repair a damaged store needs.

A step's changes rewrite ``manifest.json`` atomically. A finished shard is appended to
``manifest.journal`` instead, one JSON line: rewriting the whole manifest after each of
S shards would write O(S^2) bytes (1,281 shards of 1,000 images at ILSVRC-2012 scale), the
journal writes each record once. Reading replays the journal's lines over the manifest;
the next rewrite folds them in and starts a new journal. Each rewrite draws a new random
token (``journal``) and each line carries the token of the rewrite it follows, so lines a
rewrite already holds (a crash between the rewrite and the journal's removal) are never
replayed over later changes, even when two objects of one store rewrite it in turn (a
count of rewrites would repeat). A last line cut short by a crash (no newline at its end,
even if what is there parses) is ignored, and folded away before anything is appended:
that shard is computed again. A killed job therefore leaves, at any moment, a manifest and
a journal that a rerun reads as the shards finished before the kill, or fewer.

Only shard records go to the journal: the configuration, the job and the steps are always
in ``manifest.json`` (what ``serve`` watches to see a new generation)."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from ..exceptions import StoreError
from ..presets import Config
from .atomic import atomic_file
from .layout import FORMAT, JOURNAL_FILE, MANIFEST_FILE, VERSION


class Manifest:
    """Finished steps and shards of one store: a step's change rewrites it atomically, a
    finished shard is a line appended to its journal (module doc)."""

    def __init__(self, directory):
        self.path = Path(directory) / MANIFEST_FILE
        self.journal = Path(directory) / JOURNAL_FILE
        self._torn = False          # the journal ends in a line cut short
        self.data = {"format": FORMAT, "version": VERSION, "config": None, "steps": {},
                     "shards": {}}
        if self.path.exists():
            fix = ("move it away (or delete it) and rerun the same command: the store is then "
                   "rebuilt from the start")
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                cause = getattr(e, "strerror", None) or type(e).__name__
                raise StoreError(f"{self.path}: unreadable manifest ({cause}); {fix}") from None
            problem, self._torn = _manifest_problem(data), False
            if not problem:
                problem, self._torn = _replay(self.journal, data)
            if problem:
                raise StoreError(f"{self.path}: not a features manifest ({problem}); {fix}")
            self.data = data

    def check_config(self, config):
        saved = _with_defaults(self.data.get("config"))
        new = json.loads(config.to_json())
        if saved == new:
            return
        if saved is not None and not self.data["shards"] and "codebook" not in self.data["steps"]:
            # Nothing was built from the old configuration but perhaps the descriptor sample
            # (for example a first run that stopped on a bad --words): the store takes the new
            # configuration, and keeps the sample only if it would come out the same.
            changed = {k for k in set(saved) | set(new) if saved.get(k) != new.get(k)}
            if not changed <= _NOT_IN_SAMPLE:
                self.data["steps"] = {}
            saved = None
        if saved is None:
            self.data["config"] = new
            self.save()
        else:
            changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k))
            raise StoreError(f"{self.path.parent} was started with another configuration "
                             f"(differs in: {', '.join(changed)}); use a new output directory")

    def check_job(self, source, limit):
        """A store is one job over one source: resuming it with another source or limit would
        mix images of two jobs, so it is refused."""
        job = {"source": str(getattr(source, "root", "")), "kind": getattr(source, "kind", ""),
               "limit": limit}
        saved = self.data.get("job")
        if saved is None:
            self.data["job"] = job
            self.save()
        elif saved != job:
            was = f"{saved['source']} ({saved['kind']}" + (
                f", --limit {saved['limit']})" if saved["limit"] else ")")
            raise StoreError(f"{self.path.parent} was started on {was}; rerun with the same "
                             f"source and limit to resume, or use a new output directory")

    def save(self):
        """Rewrite ``manifest.json`` with everything, the journal's shards folded in."""
        self.data["journal"] = secrets.token_hex(8)
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        self.journal.unlink(missing_ok=True)

    def shard_done(self, number: int, summary: dict, *, encoding: str | None = None):
        """Record a finished shard of the store (``encoding``: of that encoding of
        ``features aggregate``, whose record must exist): one line appended to the journal,
        on disk when this returns."""
        if self._torn:              # never append after a line cut short: fold it first
            self.save()
            self._torn = False
        at = ["shards"] if encoding is None else ["aggregate", encoding, "shards"]
        _place(self.data, at)[str(number)] = summary
        line = json.dumps({"journal": self.data.get("journal"), "at": at,
                           "number": int(number), "record": summary}, sort_keys=True)
        # one write of the whole line (a buffered file may split it) at the end of the file
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = (line + "\n").encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def drop_shards_from(self, number: int) -> list[str]:
        """Forget the shards numbered ``number`` and above; the names of their files."""
        gone = [k for k in self.data["shards"] if int(k) >= number]
        files = [str(self.data["shards"].pop(k).get("file")) for k in gone]
        if gone:
            self.save()
        return files

    def step_done(self, step: str, **info):
        self.data["steps"][step] = dict(info, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()

    def is_done(self, step: str) -> bool:
        return step in self.data["steps"]


# Options that do not change pass 1's descriptor sample.
def _with_defaults(saved):
    """A saved configuration with the fields added to the recipe since it was written, at
    their defaults (what stores did before those fields existed): an older store is resumed
    with the recipe it reads back as, not refused as another."""
    if saved is None:
        return None
    defaults = json.loads(Config().to_json())
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


_NOT_IN_SAMPLE = {"words", "kmeans_iters", "tfidf", "power", "store_descriptors", "shard_size",
                  "failure_budget"}

_SHARD_FIELDS = {"file": str, "first": int, "count": int, "failed": int}


def _manifest_problem(data) -> str | None:
    """What is wrong with the shape of a manifest, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format is {data.get('format')!r}"
    if not isinstance(data.get("config"), (dict, type(None))):
        return "config is not an object"
    for part in ("steps", "shards"):
        if not isinstance(data.get(part), dict):
            return f"{part} is not an object"
    for number, record in data["shards"].items():
        if not number.isdigit() or not isinstance(record, dict):
            return f"shard {number!r} is not a shard record"
        for k, t in _SHARD_FIELDS.items():
            if not isinstance(record.get(k), t):
                return f"shard {number} has no valid {k!r}"
    return None


def _place(data, at) -> dict:
    """The dict of ``data`` that the keys ``at`` lead to."""
    for key in at:
        data = data[key]
    return data


def _replay(journal, data) -> tuple[str | None, bool]:
    """Apply the journal's shard records that follow this rewrite of the manifest to
    ``data``: (what is wrong with the journal or None, whether its last line is cut short)."""
    try:
        text = journal.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, False
    except OSError as e:
        return f"unreadable journal {journal.name} ({e.strerror})", False
    except ValueError:
        return f"unreadable journal {journal.name} (not text)", False
    # the text after the last newline is a line cut short, even if it parses: appending
    # to it would damage the next line
    lines = text.split("\n")
    torn = lines.pop() != ""
    generation = data.get("journal")
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
            if entry["journal"] != generation:
                continue                  # already folded into the manifest
            _place(data, entry["at"])[str(int(entry["number"]))] = entry["record"]
        except (ValueError, KeyError, TypeError):
            return f"damaged line {i + 1} of {journal.name}", False
    return _manifest_problem(data), torn


def repair_hint(directory) -> str:
    """The commands that rebuild a store's damaged or missing files, from its manifest."""
    directory = Path(directory)
    job = {}
    try:
        job = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8")).get("job") or {}
    except (OSError, ValueError, AttributeError):
        pass
    source = job.get("source") or "SOURCE"
    extra = (f" --kind {job['kind']}" if job.get("kind") else "") + (
        f" --limit {job['limit']}" if job.get("limit") else "")
    return (f"rerun `features encode {source} -o {directory}{extra}` and "
            f"`features index {directory}` to recompute it")
