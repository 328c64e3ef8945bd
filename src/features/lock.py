"""Moved to :mod:`features.store.lock`; this path keeps working."""
from .store.lock import LOCK_FILE, StoreLocked, lock_holder, store_lock  # noqa: F401
