"""The search over one implementation's tuning space for one shape.

Contract: `search(space, shape, limits, bench, verify=..., budget_s=...)` times candidate configs
and returns the fastest it found, with every trial reported. It knows nothing about kernels or
hardware: `bench(config) -> seconds` is one timed sample and `verify(config)` raises if the
config fails to build or gives a wrong answer, so the logic is tested with fake timings.

- The heuristic default is always measured first. The search ends in a showdown: the best
  `showdown` candidates and the default are sampled afresh in interleaved rounds (noise hits
  them alike; a lucky sample in the search does not decide), and the winner must beat the
  default there by `min_gain` to be chosen (noise alone should not replace a default).
- Each candidate is verified, warmed up, then sampled; its score is the median of its samples.
- A candidate whose verify or bench raises scores as infinitely slow ("failed"); one whose
  verify raises `WrongAnswer` is "wrong". Both are reported, never chosen.
- A candidate whose fastest sample after `abandon_after` samples exceeds `abandon_factor` x
  the best so far is abandoned (no more samples spent on it).
- Small spaces (<= exhaustive_limit configs) are searched exhaustively. Larger ones by random
  sampling with successive halving, in brackets: candidates in random order get one sample
  each for 60% of the time left; the best third (with earlier brackets' survivors) get more
  samples, and so on until `repeats`; then the next bracket, until candidates or the time
  before the climb run out. The climb (`climb_share` of the search's time) then samples the
  untried neighbours (`space.neighbours`: one parameter a step away) of the default, then of
  the best candidate not yet climbed from, and so on (a best-first search, as tinygrad's BEAM
  searches from the default); time it leaves goes to more brackets; the survivors are halved
  again.
- `prefetch(configs)`, if given, is told the candidates the search will start next, each call
  in place of the last (the one starting and the next `lookahead` of the random order; a climb
  centre's untried neighbours; none once the search is over), so that their kernels can be
  built in the background while others are timed (the GPU's compiles took 5-10x a sample's
  time).
- Before the showdown, the `polish` best so far get `polish_samples` samples each (in
  `polish_share` of the time), so that the showdown's contenders are the best by a median, not
  by one lucky sample.
- The budget is wall time (the injectable `clock`): `showdown_share` of it is kept for the
  showdown, `polish_share` before it for the polish. A sample that has started is finished,
  and the showdown's first round always runs, so a search may overrun by a few samples.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from dispatch.space import Config, TuningSpace


class WrongAnswer(AssertionError):
    """A candidate computed a result different from the reference."""


@dataclasses.dataclass
class Trial:
    config: Config
    samples: list[float] = dataclasses.field(default_factory=list)
    status: str = "pending"    # ok | abandoned | failed | wrong | skipped (out of budget)
    error: str = ""
    is_default: bool = False
    showdown: list[float] = dataclasses.field(default_factory=list)

    @property
    def time_s(self) -> float:
        """The search's score: the median of its samples (inf if it failed)."""
        if self.status in ("failed", "wrong") or not self.samples:
            return math.inf
        return statistics.median(self.samples)

    def showdown_time_s(self) -> float:
        """The median of its interleaved showdown samples."""
        if self.status in ("failed", "wrong") or not self.showdown:
            return math.inf
        return statistics.median(self.showdown)


@dataclasses.dataclass
class SearchResult:
    shape: tuple
    best: Config
    best_time_s: float
    default: Config
    default_time_s: float
    trials: list[Trial]
    space_size: int
    strategy: str              # "exhaustive" or "halving"
    out_of_budget: bool        # the budget cut the search short (candidates left untimed)

    @property
    def gain(self) -> float:
        return self.default_time_s / self.best_time_s if self.best_time_s > 0 else math.nan

    @property
    def failures(self) -> list[Trial]:
        return [t for t in self.trials if t.status in ("failed", "wrong")]


def search(space: TuningSpace, shape: tuple, limits: Mapping[str, Any],
           bench: Callable[[Config], float], *, verify: Callable[[Config], None] | None = None,
           budget_s: float = 10.0, warmup: int = 1, repeats: int = 5, abandon_after: int = 2,
           abandon_factor: float = 2.0, exhaustive_limit: int = 48, min_gain: float = 0.02,
           showdown: int = 3, showdown_share: float = 0.15, climb_share: float = 0.5,
           polish: int = 8, polish_samples: int = 3, polish_share: float = 0.1,
           seed: int = 0,
           clock: Callable[[], float] = time.perf_counter,
           progress: Callable[[int, int], None] | None = None,
           prefetch: Callable[[list[Config]], None] | None = None, lookahead: int = 8
           ) -> SearchResult:
    start = clock()
    deadline = start + budget_s
    end_of_polish = start + budget_s * (1 - showdown_share)
    end_of_search = end_of_polish - budget_s * polish_share
    default = space.default(shape, limits)
    if not space.allows(default, shape, limits):
        raise ValueError(f"the heuristic default {default} breaks the space's restrictions "
                         f"for shape {shape}")
    others = [c for c in space.configs(shape, limits) if c != default]
    trials = [Trial(default, is_default=True)] + [Trial(c) for c in others]
    runner = _Runner(bench, verify, warmup, clock)

    def announce(upcoming: list[Trial]) -> None:
        if prefetch is not None:
            prefetch([t.config for t in upcoming])

    if len(trials) <= exhaustive_limit:
        strategy = "exhaustive"
        best = math.inf
        for i, trial in enumerate(trials):
            if i and clock() > end_of_search:
                break
            announce(trials[i:i + 1 + lookahead])
            runner.start(trial)
            while trial.status == "ok" and len(trial.samples) < repeats:
                if len(trial.samples) >= abandon_after and _clearly_slower(trial, best,
                                                                           abandon_factor):
                    trial.status = "abandoned"
                    break
                if trial.samples and clock() > end_of_search and not trial.is_default:
                    break
                runner.sample(trial)
            best = min(best, trial.time_s)
            if progress:
                progress(i + 1, len(trials))
        finalists = [t for t in trials if t.status == "ok"]
    else:
        strategy = "halving"
        rng = random.Random(seed)
        rest = trials[1:]
        rng.shuffle(rest)
        trials = [trials[0]] + rest
        pending = list(trials)
        finalists: list[Trial] = []
        best = math.inf

        def brackets(deadline) -> None:
            """Brackets until the candidates or the time run out: a first rung (one sample each,
            in random order, for 60% of the time left), then halving among its survivors and
            those of earlier brackets."""
            nonlocal best, finalists
            while pending and clock() <= deadline:
                rung_deadline = clock() + (deadline - clock()) * 0.6
                started = 0
                while pending and (not started or clock() <= rung_deadline):
                    announce(pending[:1 + lookahead])
                    trial = pending.pop(0)
                    started += 1
                    best = _first_sample(runner, trial, best, abandon_factor, finalists, abandon_after)
                    if progress:
                        progress(len(trials) - len(pending), len(trials))
                finalists = _halve(runner, finalists, repeats, deadline, clock)

        brackets(clock() + (end_of_search - clock()) * (1 - climb_share))
        # The climb: from the default (the heuristic's guess: its neighbours are the near
        # misses), then from the best candidate not yet climbed from, and so on, time the untried
        # neighbours (one parameter a step away). Configurations that win by two changes at once
        # (a deeper K-slice and direct A on the GPU: either alone gained 2-12%, both together
        # 1.6x at 32 x 512 x 512) are a few of thousands, which random sampling rarely draws.
        by_key = {_key(t.config): t for t in trials}
        climbed: set = set()
        while clock() <= end_of_search:
            open_ = [t for t in finalists if t.status == "ok" and _key(t.config) not in climbed]
            if not open_:
                break
            centre = trials[0] if trials[0] in open_ else min(open_, key=lambda t: t.time_s)
            climbed.add(_key(centre.config))
            # Its untried neighbours (invalid or pruned ones are no trials; timed ones not pending).
            steps = [by_key.get(_key(config)) for config in space.neighbours(centre.config, limits)]
            steps = [trial for trial in steps if trial is not None and trial.status == "pending"]
            announce(steps)
            for trial in steps:
                if trial.status != "pending":
                    continue  # a neighbour listed twice
                if clock() > end_of_search:
                    break
                pending.remove(trial)
                best = _first_sample(runner, trial, best, abandon_factor, finalists, abandon_after)
                if progress:
                    progress(len(trials) - len(pending), len(trials))
        # Nothing left to climb to before the time is up: back to sampling what is left.
        brackets(end_of_search)
        finalists = _halve(runner, finalists, repeats, end_of_search, clock)

    if prefetch is not None:
        prefetch([])   # nothing more to build
    for trial in trials:
        if trial.status == "pending":
            trial.status = "skipped"
    default_trial = trials[0]
    # The polish: the best few so far get `polish_samples` samples each before the showdown
    # takes its contenders from them. A search short of time leaves most candidates with one
    # sample, and the best single samples are the lucky ones: on the H200 at 32 x 512 x 512,
    # split-K candidates sampled once at 7.5-9.6 us (10-12 us afterwards) took the showdown's
    # places, and the best unsplit one (8.3 us, sample after sample) was not among them.
    ranked = sorted((t for t in finalists if not t.is_default and t.status == "ok"),
                    key=lambda t: t.time_s)
    _top_up(runner, ranked[:polish], polish_samples, end_of_polish, clock)
    # The showdown: the best few and the default, sampled afresh in interleaved rounds, so the
    # final choice is not a lucky sample (the winner's curse) or a burst of machine noise that
    # hit one candidate's consecutive samples.
    ranked = sorted((t for t in finalists if not t.is_default), key=lambda t: t.time_s)
    contenders = [t for t in [default_trial, *ranked[:showdown]] if t.status == "ok"]
    rounds = 0
    while contenders and rounds < repeats:
        estimate = sum(t.showdown[-1] if t.showdown else t.time_s for t in contenders)
        if rounds and clock() + estimate > deadline:
            break
        for trial in contenders:
            runner.sample(trial, into=trial.showdown)
        contenders = [t for t in contenders if t.status == "ok"]
        rounds += 1
    # No contender (nothing ran): the default stands, at infinite time.
    winner = min(contenders, key=Trial.showdown_time_s, default=default_trial)
    if default_trial.status == "ok" and \
            winner.showdown_time_s() > default_trial.showdown_time_s() * (1 - min_gain):
        winner = default_trial
    return SearchResult(
        shape=tuple(shape), best=winner.config, best_time_s=winner.showdown_time_s(),
        default=default, default_time_s=default_trial.showdown_time_s(), trials=trials,
        space_size=len(trials),
        strategy=strategy,
        out_of_budget=clock() > deadline or any(t.status == "skipped" for t in trials))


def _key(config: Config) -> tuple:
    return tuple(sorted(config.items()))


def _clearly_slower(trial: Trial, best: float, abandon_factor: float) -> bool:
    """Even its fastest sample is over abandon_factor x the best so far. (The fastest, not the
    median: the machine's noise only ever slows a sample, and on the H200 one sample in a few
    of a small call came out 2-4x slow, which abandoned good candidates on their first.)"""
    return not trial.is_default and min(trial.samples) > abandon_factor * best


def _first_sample(runner, trial: Trial, best: float, abandon_factor: float,
                  finalists: list[Trial], abandon_after: int) -> float:
    """Start a candidate and sample it once: a finalist unless it failed, or unless it is
    still clearly slower than the best so far after `abandon_after` samples (abandoned).
    Returns the new best time."""
    runner.start(trial)
    if trial.status == "ok":
        runner.sample(trial)
        while (trial.status == "ok" and len(trial.samples) < abandon_after
               and _clearly_slower(trial, best, abandon_factor)):
            runner.sample(trial)
        if trial.status == "ok" and _clearly_slower(trial, best, abandon_factor):
            trial.status = "abandoned"
        elif trial.status == "ok":
            if len(trial.samples) % 2 == 0:  # a slow sample and a fast one: a third decides
                runner.sample(trial)
            finalists.append(trial)
    return min(best, trial.time_s)


def _halve(runner, finalists: list[Trial], repeats: int, deadline, clock) -> list[Trial]:
    """Successive halving: keep the best third (and the default), sample the kept more, until
    two are left or they have `repeats` samples; then top every one kept up to `repeats`."""
    samples = 1
    while len(finalists) > 2 and samples < repeats and clock() <= deadline:
        finalists.sort(key=lambda t: t.time_s)
        keep = max(2, math.ceil(len(finalists) / 3))
        finalists = finalists[:keep] + [t for t in finalists[keep:] if t.is_default]
        samples = min(repeats, samples * 2 + 1)
        _top_up(runner, finalists, samples, deadline, clock)
    _top_up(runner, finalists, repeats, deadline, clock)
    return finalists


def _top_up(runner, finalists, samples, deadline, clock) -> None:
    """Bring every finalist to `samples` samples, round-robin so noise hits them alike."""
    while clock() <= deadline:
        behind = [t for t in finalists if t.status == "ok" and len(t.samples) < samples]
        if not behind:
            return
        for trial in behind:
            runner.sample(trial)


class _Runner:
    def __init__(self, bench, verify, warmup, clock):
        self.bench, self.verify, self.warmup, self.clock = bench, verify, warmup, clock

    def start(self, trial: Trial) -> None:
        """Verify and warm up a candidate; a failure marks it and ends its trial."""
        try:
            if self.verify is not None:
                self.verify(trial.config)
            for _ in range(self.warmup):
                self.bench(trial.config)
        except WrongAnswer as exc:
            trial.status, trial.error = "wrong", str(exc) or "wrong answer"
            return
        except Exception as exc:  # any failure to build or run scores as infinitely slow
            trial.status, trial.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        trial.status = "ok"

    def sample(self, trial: Trial, into: list[float] | None = None) -> None:
        try:
            (trial.samples if into is None else into).append(float(self.bench(trial.config)))
        except Exception as exc:
            trial.status, trial.error = "failed", f"{type(exc).__name__}: {exc}"
