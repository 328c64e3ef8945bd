"""``features verify STORE``: the store half (:mod:`features.store.verify`) and the index
half (:mod:`features.index.verify`) of the check, as one result."""
from __future__ import annotations

from pathlib import Path

from ..index.verify import check_index
from ..store.manifest import repair_hint
from ..store.verify import Damage, check_store


def verify_store(directory) -> dict:
    """Check a store; returns ``{"store", "sound", "damage": [{"path", "problem"}],
    "checked"}`` (and ``"repair"``, the commands that rebuild what is damaged)."""
    directory = Path(directory)
    bad = Damage()
    ok_with_features = check_store(directory, bad)
    check_index(directory, ok_with_features, bad, bad.checked)
    result = {"store": str(directory), "sound": not bad.found, "damage": bad.found,
              "checked": bad.checked}
    if bad.found:
        result["repair"] = repair_hint(directory)
    return result
