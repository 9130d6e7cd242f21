"""The tuning store, write side: record tuned entries, clear the store.

The file format and the reading side live in dispatch.store (dispatch reads it at run time).

Concurrency: every write takes an exclusive lock on a lock file beside the store
(`tuning.json.lock`, fcntl.flock), re-reads the store under the lock, merges its new entries in
(a new entry replaces an old one with the same key; every other entry is kept), writes a
temporary file in the same folder and renames it over the store (os.replace: atomic). So two
processes tuning at once lose nothing, and a reader -- which takes no lock -- sees either the old
file or the new one, never half of one. A store file that is corrupt, truncated, empty or not
ours was ignored by the reader (with one warning); a write replaces it with a valid file. On a
platform without fcntl (Windows) writes are still atomic, but concurrent writers are not
merged: the last one to rename wins.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dispatch
from dispatch import store as reader

from .search import SearchResult

try:
    import fcntl
except ImportError:  # Windows: see the module docstring
    fcntl = None


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(reader.lock_path(path), "a+b") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_for_update(path: Path) -> dict[tuple, dict]:
    try:
        return reader.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, reader.StoreError):
        return {}  # unusable: the reader warned about it; this write replaces it


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def record(entries: Iterable[Mapping[str, Any]], path: Path | None = None) -> Path:
    """Merge `entries` into the store (under the lock; see the module docstring) and make this
    process's dispatch read the new store."""
    path = reader.store_path() if path is None else Path(path)
    new = {reader.entry_key(e): dict(e) for e in entries}
    with _locked(path):
        current = _read_for_update(path)
        current.update(new)
        _write_atomically(path, reader.dumps(current))
    dispatch.refresh()
    return path


def clear(path: Path | None = None) -> int:
    """Empty the store (all machines' entries); returns how many entries it held."""
    path = reader.store_path() if path is None else Path(path)
    with _locked(path):
        count = len(_read_for_update(path))
        _write_atomically(path, reader.dumps({}))
    dispatch.refresh()
    return count


def make_entry(op: str, impl: dispatch.Implementation, dtype: Any, limits: Mapping[str, Any],
               result: SearchResult, *, time_s: float | None = None,
               default_time_s: float | None = None) -> dict[str, Any]:
    """A store entry for a search result (times: the search's, unless re-timed ones are given)."""
    space = impl.tuning_space
    entry = reader.lookup_key(op, impl.qualified_name, space, dtype, limits, result.shape)
    entry.update({
        "config": dict(result.best),
        "time_s": result.best_time_s if time_s is None else time_s,
        "default_config": dict(result.default),
        "default_time_s": result.default_time_s if default_time_s is None else default_time_s,
        "candidate_hash": space.candidate_hash(limits),
        "shape": list(result.shape),
        "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    return entry
