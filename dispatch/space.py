"""Tuning spaces: what an implementation lets the autotuner vary, declared as data.

A kernel module declares one `TuningSpace` next to its code (KernelTuner's `tune_params` plus
`restrictions`, Triton's list of configs): named parameters with their candidate values,
restrictions that rule combinations out, and a heuristic default per shape. Nothing here knows
what a CPU tile or a GPU workgroup is, so the autotuner, the store and `dispatch.select` treat
every backend alike.

Terms:
  config   a dict {parameter: value} of JSON scalars (int, str, bool): what the store records.
  limits   a dict of what the device allows (for a CPU path the thread budget; for a GPU path
           e.g. the adapter's workgroup storage and invocation limits). Restrictions and
           candidate lists may depend on them.
  params   what the implementation's entry point consumes, made from a config by `realize`
           (e.g. the tile name "4x4" becomes the Tile object numba specialises on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Config = dict[str, Any]
Limits = Mapping[str, Any]
# A parameter's candidates: a tuple of values, or a function of the device limits giving one
# (e.g. thread counts up to the thread budget).
Candidates = tuple | Callable[[Limits], tuple]
# A restriction: (config, shape, limits) -> True when the config may run on that shape.
Restriction = Callable[[Config, tuple, Limits], bool]


def _identity(config: Config) -> dict[str, Any]:
    return dict(config)


def _no_limits(threads=None) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class TuningSpace:
    """params:       parameter name -> candidate values (or a function of the limits).
    default:      (shape, limits) -> the heuristic config for that shape. It need not lie on
                  the candidate grid (e.g. "an even share of the panels per thread"), but it
                  must satisfy the restrictions.
    restrictions: predicates a config must pass to run correctly (tile divisibility, storage
                  within the device's limit, ...); checked for tuned configs at lookup too.
    prune:        predicates that only shrink the search (two spellings of one configuration,
                  threads left idle, ...): a config failing them still runs correctly.
    version:      the kernel version: change it when a kernel change can change which config
                  wins; store entries of another version are never used.
    limits:       (threads=None) -> the device limits for a call (the CPU paths resolve the
                  thread budget here; a GPU path returns its adapter's limits).
    realize:      config -> the params the entry point consumes.
    fingerprint:  () -> the identity of the device the implementation runs on (see
                  dispatch.fingerprint); tuned results are valid only there.
    operand_dtype: (dtype of the call) -> the dtype named in the store key. A config is tuned
                  for what the kernels see, so calls that differ only in a cost outside the
                  kernel (e.g. quantizing float A while packing it) may share entries.
    neighbours_of: config -> the configs one step away from it, for the search's climb (see
                  tuning.search). None: one parameter moved to the next candidate value either
                  side (the `neighbours` method). A space whose one parameter names a whole
                  configuration (the GPU's) gives its own, in its configurations' terms.
    precompile:   (config, shape) -> a Future, or None: start building the config's kernels
                  for the shape in the background, for a search about to time it
                  (tuning.search's prefetch); cancel() withdraws one not yet started. None
                  (the field): kernels are built when first called.
    """

    params: Mapping[str, Candidates]
    default: Callable[[tuple, Limits], Config]
    restrictions: tuple[Restriction, ...] = ()
    prune: tuple[Restriction, ...] = ()
    version: str = "1"
    limits: Callable[..., dict[str, Any]] = _no_limits
    realize: Callable[[Config], dict[str, Any]] = _identity
    fingerprint: Callable[[], str] | None = None
    operand_dtype: Callable[[Any], str] = str
    neighbours_of: Callable[[Config], list[Config]] | None = None
    precompile: Callable[[Config, tuple], Any] | None = None

    def candidates(self, limits: Limits) -> dict[str, tuple]:
        """Every parameter's candidate values under these limits."""
        return {name: tuple(c(limits) if callable(c) else c) for name, c in self.params.items()}

    def allows(self, config: Config, shape: tuple, limits: Limits) -> bool:
        """Whether `config` names only known parameters and passes every restriction on shape.
        (Values off the candidate grid are allowed: the heuristic default may lie between.)"""
        if set(config) != set(self.params):
            return False
        try:
            return all(rule(config, shape, limits) for rule in self.restrictions)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return False

    def configs(self, shape: tuple, limits: Limits) -> Iterator[Config]:
        """The candidate grid for one shape: every combination that passes the restrictions."""
        cands = self.candidates(limits)
        names = list(cands)
        for values in itertools.product(*(cands[n] for n in names)):
            config = dict(zip(names, values, strict=True))
            if self.allows(config, shape, limits) and all(
                    rule(config, shape, limits) for rule in self.prune):
                yield config

    def neighbours(self, config: Config, limits: Limits) -> list[Config]:
        """Configs one step from `config`: the space's own rule, or each parameter moved to the
        neighbouring candidate value (a value between candidates, as a default may hold, moves
        to the nearest candidate either side). Not checked against the restrictions."""
        if self.neighbours_of is not None:
            return list(self.neighbours_of(config))
        return steps(config, self.candidates(limits))

    def candidate_hash(self, limits: Limits) -> str:
        """A short hash of the version and the candidate values (not of the restrictions, which
        are code). The store records it: an entry tuned over another candidate set is still
        usable if its config is allowed, but `i8gemm tune` re-tunes it (a candidate was added,
        so the old winner may no longer be the best)."""
        text = json.dumps([self.version, self.candidates(limits)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def steps(config: Mapping[str, Any], candidates: Mapping[str, tuple]) -> list[dict]:
    """Each parameter of `config` moved to the neighbouring value of its candidates, either
    side: one new config per step, in parameter order. A numeric value between candidates (as a
    default may hold) steps to the nearest candidate either side; other values off the list
    do not step."""
    found = []
    for name, cands in candidates.items():
        value = config.get(name)
        if value in cands:
            i = cands.index(value)
            moves = [cands[j] for j in (i - 1, i + 1) if 0 <= j < len(cands)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = [c for c in cands if isinstance(c, (int, float)) and not isinstance(c, bool)]
            moves = [max((c for c in numbers if c < value), default=None),
                     min((c for c in numbers if c > value), default=None)]
        else:
            moves = []
        found += [{**config, name: v} for v in moves if v is not None]
    return found


def config_text(config: Mapping[str, Any]) -> str:
    """A config as one short line: 'tile=4x4 threads=2 m_block=all'."""
    return " ".join(f"{k}={v}" for k, v in config.items())


def hashable_config(config: Mapping[str, Any]) -> tuple | None:
    """A (realized) config as a hashable key -- its sorted items -- or None when a value is
    unhashable: what a kept plan of a call with the autotuner's `_params` is keyed by."""
    items = tuple(sorted(config.items()))
    try:
        hash(items)
    except TypeError:
        return None
    return items
