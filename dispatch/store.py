"""The tuning store, read side: where it lives, its file format, and the run-time lookup.

The store is one JSON file (writing it is `tuning.store`'s job):
    {"format": "i8gemm-tuning-store", "schema": 1, "entries": [entry, ...]}
Each entry holds its key -- op, implementation ("cpu:avx512vnni"), fingerprint (see
dispatch.fingerprint), dtype (the kernels' operand dtype), limits (e.g. "threads=2": a config
tuned for two threads says nothing about sixteen), m_bucket (M rounded up to a power of two),
k, n and version (the kernel version) -- and its value: config, time_s, default_config,
default_time_s, candidate_hash, shape (the M, K, N actually timed).

Lookup order for a call (op, implementation, dtype, limits, M, K, N) on this machine:
  1. the exact key (M's bucket);
  2. the same K and N with the nearest M bucket (by |log2| distance; ties go to the smaller);
  3. the implementation's heuristic default.
An entry is used only if its fingerprint and kernel version are this machine's and this
library's, and its config passes the space's restrictions for the call's shape. A file that is
missing is an empty store; one that is corrupt, truncated, empty or not ours is ignored with one
warning (per file, per process) and replaced by the next write.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import cpu
from .space import Config, TuningSpace

FORMAT = "i8gemm-tuning-store"
SCHEMA = 1
KEY_FIELDS = ("op", "implementation", "fingerprint", "dtype", "limits", "version", "k", "n",
              "m_bucket")
ENV_VAR = "I8GEMM_TUNING_STORE"


def store_path() -> Path:
    """I8GEMM_TUNING_STORE if set, else tuning.json in the user cache directory."""
    override = cpu.setting(ENV_VAR)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("i8gemm", appauthor=False)) / "tuning.json"


def m_bucket(m: int) -> int:
    """M rounded up to a power of two: 1, 2, 4, 8, ..."""
    return 1 << max(0, int(m) - 1).bit_length()


def limits_text(limits: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={limits[k]}" for k in sorted(limits))


def entry_key(entry: Mapping[str, Any]) -> tuple:
    return tuple(entry[f] for f in KEY_FIELDS)


class StoreError(ValueError):
    """The store file exists but cannot be used (corrupt, truncated, empty or foreign)."""


def _valid_entry(e: Any) -> bool:
    if not isinstance(e, dict) or not isinstance(e.get("config"), dict):
        return False
    try:
        return (all(isinstance(e[f], str) for f in KEY_FIELDS[:6])
                and all(isinstance(e[f], int) and e[f] >= 1 for f in KEY_FIELDS[6:]))
    except KeyError:
        return False


def parse(text: str) -> dict[tuple, dict]:
    """The entries of a store file's text, by key; StoreError if it is not a store file.
    Malformed entries inside an otherwise valid file are dropped (an older writer's leftovers)."""
    if not text.strip():
        raise StoreError("the file is empty")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"not an i8gemm tuning store (no \"format\": \"{FORMAT}\")")
    if doc.get("schema") != SCHEMA or not isinstance(doc.get("entries"), list):
        raise StoreError(f"unknown schema {doc.get('schema')!r} (this library reads {SCHEMA})")
    return {entry_key(e): e for e in doc["entries"] if _valid_entry(e)}


def dumps(entries: Mapping[tuple, dict]) -> str:
    ordered = sorted(entries.values(), key=lambda e: tuple(str(e[f]) for f in KEY_FIELDS))
    return json.dumps({"format": FORMAT, "schema": SCHEMA, "entries": ordered}, indent=1)


_WARNED: set[str] = set()


def read(path: Path | None = None) -> dict[tuple, dict]:
    """Every entry of the store file (all machines), or {} if it is missing or unusable (the
    latter with one warning)."""
    path = store_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        _warn_once(path, f"cannot be read ({exc})")
        return {}
    try:
        return parse(text)
    except StoreError as exc:
        _warn_once(path, str(exc))
        return {}


def _warn_once(path: Path, problem: str) -> None:
    if str(path) in _WARNED:
        return
    _WARNED.add(str(path))
    warnings.warn(f"i8gemm tuning store {path}: {problem}; ignoring it (heuristic defaults are "
                  "used, and the next `i8gemm tune` replaces it)", RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# Run-time lookup. The file is read once (at the first decision that needs it); `refresh()`
# reads it again. dispatch.select caches each decision, so this runs once per call shape.

_INDEX: dict[tuple, dict[int, dict]] | None = None


def _index() -> dict[tuple, dict[int, dict]]:
    global _INDEX
    if _INDEX is None:
        index: dict[tuple, dict[int, dict]] = {}
        for key, entry in read().items():
            index.setdefault(key[:-1], {})[key[-1]] = entry
        _INDEX = index
    return _INDEX


def refresh() -> None:
    """Forget the store read into memory (after it was written, or I8GEMM_TUNING_STORE moved)."""
    global _INDEX
    _INDEX = None


def lookup_key(op: str, implementation: str, space: TuningSpace, dtype: Any,
               limits: Mapping[str, Any], shape: tuple) -> dict[str, Any]:
    """The store key of a call, as a dict of KEY_FIELDS."""
    m, k, n = shape
    fingerprint = space.fingerprint() if space.fingerprint else "unknown"
    return {"op": op, "implementation": implementation, "fingerprint": fingerprint,
            "dtype": space.operand_dtype(dtype), "limits": limits_text(limits),
            "version": space.version, "k": int(k), "n": int(n), "m_bucket": m_bucket(m)}


def lookup(op: str, implementation: str, space: TuningSpace, dtype: Any,
           limits: Mapping[str, Any], shape: tuple) -> tuple[Config, str]:
    """(config, source) for a call; source is "tuned", "nearest" (another M bucket) or
    "default"."""
    key = lookup_key(op, implementation, space, dtype, limits, shape)
    by_bucket = _index().get(tuple(key[f] for f in KEY_FIELDS[:-1]))
    if by_bucket:
        want = key["m_bucket"]
        exact = by_bucket.get(want)
        if exact is not None and space.allows(exact["config"], shape, limits):
            return dict(exact["config"]), "tuned"
        others = sorted((b for b in by_bucket if b != want),
                        key=lambda b: (abs(b.bit_length() - want.bit_length()), b))
        for b in others:
            config = by_bucket[b]["config"]
            if space.allows(config, shape, limits):
                return dict(config), "nearest"
    return space.default(shape, limits), "default"


def entries_for_this_machine(entries: Mapping[tuple, dict], fingerprints: set[str],
                             versions: set[str]) -> int:
    return sum(1 for e in entries.values()
               if e["fingerprint"] in fingerprints and e["version"] in versions)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def describe() -> str:
    """Where the store is, for `i8gemm info`."""
    path = store_path()
    how = f" ({ENV_VAR})" if cpu.setting(ENV_VAR) else ""
    return f"{path}{how}" + ("" if path.exists() else " (not yet written)")
