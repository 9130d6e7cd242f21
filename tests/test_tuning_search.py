"""tuning.search on fake timings: no hardware is timed here (the `bench=` and `clock=` are fakes)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.space import TuningSpace
from tuning.search import WrongAnswer, search


class FakeClock:
    """Time advances only when the fake bench says a sample took that long."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def toy_space(xs=range(1, 9), ys=range(1, 5), restrictions=(), default=None) -> TuningSpace:
    return TuningSpace(
        params={"x": tuple(xs), "y": tuple(ys)},
        default=default or (lambda shape, limits: {"x": 1, "y": 1}),
        restrictions=tuple(restrictions),
    )


def fake_bench(times, clock=None, calls=None, fail=(), cost=None):
    """bench(config) -> times(config); advances the fake clock by `cost` (or the time)."""
    def bench(config):
        key = (config["x"], config["y"])
        if calls is not None:
            calls.append(key)
        if key in fail:
            raise RuntimeError("does not compile")
        t = times(key)
        if clock is not None:
            clock.now += t if cost is None else cost
        return t
    return bench


def bowl(key):
    """A smooth cost with its unique minimum at x=6, y=3."""
    x, y = key
    return 1.0 + 0.1 * (x - 6) ** 2 + 0.2 * (y - 3) ** 2


def test_exhaustive_search_finds_the_optimum():
    result = search(toy_space(), (1, 1, 1), {}, fake_bench(bowl), budget_s=math.inf)
    assert result.strategy == "exhaustive"
    assert result.best == {"x": 6, "y": 3}
    assert result.best_time_s == pytest.approx(1.0)
    assert result.default == {"x": 1, "y": 1}
    assert result.default_time_s == pytest.approx(bowl((1, 1)))
    assert result.gain == pytest.approx(bowl((1, 1)))
    assert result.space_size == 32 and not result.failures


def test_halving_search_finds_the_optimum_of_a_large_space():
    space = toy_space(xs=range(1, 41), ys=range(1, 21))          # 800 configs
    clock = FakeClock()
    result = search(space, (1, 1, 1), {}, fake_bench(bowl, clock, cost=0.001), budget_s=100.0,
                    clock=clock, exhaustive_limit=48)
    assert result.strategy == "halving"
    assert result.space_size == 800
    assert result.best == {"x": 6, "y": 3}
    assert not result.out_of_budget


def two_changes(key):
    """Flat but for a winner two parameter steps from the default (1, 1), whose first step
    alone gains a little: a needle for random sampling, a path for a climb."""
    return {(1, 1): 10.0, (2, 1): 9.5, (2, 2): 1.0}.get(key, 10.0)


def test_the_climb_finds_a_winner_two_steps_from_the_default_that_sampling_misses():
    space = toy_space(xs=range(1, 41), ys=range(1, 21))          # 800 configs
    results = {}
    for climb_share in (0.0, 0.5):
        clock = FakeClock()
        results[climb_share] = search(space, (1, 1, 1), {}, fake_bench(two_changes, clock, cost=0.01),
                                      budget_s=1.0, clock=clock, climb_share=climb_share)
    assert results[0.0].best == {"x": 1, "y": 1}  # ~40 random draws of 800 miss it
    assert results[0.5].best == {"x": 2, "y": 2} and results[0.5].gain == pytest.approx(10.0)
    assert sum(t.status != "skipped" for t in results[0.5].trials) < 100


def test_one_slow_sample_does_not_abandon_a_candidate():
    # On the H200 one sample in a few of a small call came out 2-4x slow. The climb's first
    # step here (2, 1) takes such a sample first; abandoned on it, the winner behind it is lost.
    seen = set()

    def spiky(key):
        if key == (2, 1) and key not in seen:
            seen.add(key)
            return 40.0
        if key in ((1, 2), (2, 3), (3, 2)):  # the winner's other neighbours: clearly slow
            return 25.0
        return two_changes(key)

    clock = FakeClock()
    result = search(toy_space(xs=range(1, 41), ys=range(1, 21)), (1, 1, 1), {},
                    fake_bench(spiky, clock, cost=0.01), budget_s=1.0, clock=clock, warmup=0)
    assert result.best == {"x": 2, "y": 2}


def test_lucky_single_samples_do_not_keep_the_best_out_of_the_showdown():
    # A search short of time leaves most candidates with one sample. On the H200, split-K
    # candidates sampled once at 7.5-9.6 us (10-12 us afterwards) filled the showdown, and the
    # best unsplit candidate (8.3 us in every sample) was not in it. Here five candidates are
    # that lucky once (0.5, then 2.0); the best takes 0.8 every time; one sample each.
    lucky = {(2, 2), (3, 1), (4, 4), (7, 2), (8, 1)}
    seen = set()

    def times(key):
        if key in lucky:
            first = key not in seen
            seen.add(key)
            return 0.5 if first else 2.0
        return {(1, 1): 1.0, (6, 3): 0.8}.get(key, 1.5)

    def run(**kw):
        seen.clear()
        return search(toy_space(), (1, 1, 1), {}, fake_bench(times), budget_s=math.inf,
                      repeats=1, warmup=0, **kw)

    assert run(polish=0).best == {"x": 1, "y": 1}    # three lucky ones lose the showdown
    result = run()
    assert result.best == {"x": 6, "y": 3}
    assert result.best_time_s == pytest.approx(0.8)


def test_neighbours_move_one_parameter_a_step():
    space = toy_space(xs=(1, 2, 4, 8), ys=("a", "b"))
    assert space.neighbours({"x": 2, "y": "a"}, {}) == [{"x": 1, "y": "a"}, {"x": 4, "y": "a"},
                                                       {"x": 2, "y": "b"}]
    # a default between the candidates steps to the nearest either side
    assert space.neighbours({"x": 3, "y": "b"}, {}) == [{"x": 2, "y": "b"}, {"x": 4, "y": "b"},
                                                       {"x": 3, "y": "a"}]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 10.0), min_size=12, max_size=12), st.integers(0, 11))
def test_exhaustive_search_returns_the_argmin_of_any_timing_table(values, default_index):
    """With exact (noise-free) timings, the chosen config is the fastest one, and never slower
    than the default."""
    keys = list(itertools.product(range(4), range(3)))
    table = dict(zip(keys, values, strict=True))
    dx, dy = keys[default_index]
    space = toy_space(xs=range(4), ys=range(3),
                      default=lambda shape, limits: {"x": dx, "y": dy})
    result = search(space, (1, 1, 1), {}, fake_bench(table.__getitem__), budget_s=math.inf,
                    min_gain=0.0, abandon_factor=math.inf)
    assert result.best_time_s == min(values)
    assert table[(result.best["x"], result.best["y"])] == min(values)
    assert result.best_time_s <= result.default_time_s


def test_restrictions_are_respected_and_restricted_configs_never_run():
    calls = []
    def odd_x_only(config, shape, limits):
        return config["x"] % 2 == 1
    def y_within_limit(config, shape, limits):
        return config["y"] <= limits["max_y"]
    space = toy_space(restrictions=[odd_x_only, y_within_limit])
    result = search(space, (1, 1, 1), {"max_y": 2}, fake_bench(bowl, calls=calls),
                    budget_s=math.inf)
    assert calls, "the bench was never called"
    assert all(x % 2 == 1 and y <= 2 for x, y in calls)
    assert {(t.config["x"], t.config["y"]) for t in result.trials} == {
        (x, y) for x in (1, 3, 5, 7) for y in (1, 2)}
    # The best allowed config, not the unrestricted optimum (6, 3).
    assert result.best in ({"x": 5, "y": 2}, {"x": 7, "y": 2})


def test_prune_shrinks_the_search_but_not_what_may_run():
    space = TuningSpace(params={"x": (1, 2, 3)}, default=lambda shape, limits: {"x": 2},
                        prune=(lambda c, shape, limits: c["x"] != 3,))
    assert [c["x"] for c in space.configs((1, 1, 1), {})] == [1, 2]
    assert space.allows({"x": 3}, (1, 1, 1), {})   # a stored x=3 is still usable


def test_budget_is_respected():
    clock = FakeClock()
    calls = []
    space = toy_space(xs=range(1, 41), ys=range(1, 21))
    result = search(space, (1, 1, 1), {}, fake_bench(bowl, clock, calls=calls, cost=1.0),
                    budget_s=20.0, clock=clock)
    assert result.out_of_budget
    # A started sample (and its warm-up) and the showdown's first round (the default and three
    # contenders) may overrun the deadline; nothing more.
    assert clock.now <= 20.0 + 6.0
    assert len(calls) <= 26
    skipped = [t for t in result.trials if t.status == "skipped"]
    assert len(skipped) > 700
    assert result.trials[0].is_default and result.trials[0].samples


def test_budget_of_an_exhaustive_search():
    clock = FakeClock()
    result = search(toy_space(), (1, 1, 1), {}, fake_bench(bowl, clock, cost=1.0),
                    budget_s=10.0, clock=clock, warmup=0, repeats=2)
    assert clock.now <= 10.0 + 6.0
    assert result.out_of_budget
    assert any(t.status == "skipped" for t in result.trials)


def test_a_clearly_slower_candidate_is_abandoned():
    def times(key):
        return 10.0 if key == (2, 1) else 1.0 + 0.01 * key[0]
    calls = []
    result = search(toy_space(xs=(1, 2, 3), ys=(1,)), (1, 1, 1), {},
                    fake_bench(times, calls=calls), budget_s=math.inf, warmup=1, repeats=7,
                    abandon_after=2, abandon_factor=2.0)
    slow = next(t for t in result.trials if t.config == {"x": 2, "y": 1})
    assert slow.status == "abandoned"
    assert len(slow.samples) == 2
    assert calls.count((2, 1)) == 1 + 2                    # warm-up + two samples
    assert calls.count((3, 1)) == 1 + 7 + 7                # warm-up, search, showdown
    assert not slow.showdown
    assert result.best == {"x": 1, "y": 1}


def test_the_showdown_undoes_a_lucky_search():
    """A candidate that looked fast during the search (a burst of luck, or of noise elsewhere)
    but is slow when timed interleaved with the default does not win."""
    calls = []
    def times(key):
        if key == (2, 1):
            return 0.5 if calls.count((2, 1)) <= 1 + 5 else 1.5
        return 1.0
    result = search(toy_space(xs=(1, 2), ys=(1,)), (1, 1, 1), {},
                    fake_bench(times, calls=calls), budget_s=math.inf, repeats=5)
    lucky = next(t for t in result.trials if t.config == {"x": 2, "y": 1})
    assert lucky.time_s == 0.5 and lucky.showdown == [1.5] * 5
    assert result.best == result.default and result.best_time_s == 1.0
    # Interleaved: default, candidate, default, candidate, ...
    assert calls[-10:] == [(1, 1), (2, 1)] * 5


def test_failures_score_as_infinitely_slow_and_are_reported():
    def verify(config):
        if config == {"x": 6, "y": 3}:
            raise WrongAnswer("3 of 12 results differ")
    result = search(toy_space(), (1, 1, 1), {}, fake_bench(bowl, fail={(5, 3)}), verify=verify,
                    budget_s=math.inf)
    by_status = {t.status: t for t in result.failures}
    assert set(by_status) == {"wrong", "failed"}
    assert by_status["wrong"].config == {"x": 6, "y": 3}
    assert "differ" in by_status["wrong"].error
    assert by_status["failed"].config == {"x": 5, "y": 3}
    assert "does not compile" in by_status["failed"].error
    assert all(t.time_s == math.inf for t in result.failures)
    assert result.best not in ({"x": 6, "y": 3}, {"x": 5, "y": 3})
    assert result.best_time_s == min(bowl(k) for k in itertools.product(range(1, 9), range(1, 5))
                                     if k not in ((6, 3), (5, 3)))


def test_a_winner_within_noise_of_the_default_does_not_replace_it():
    def times(key):
        return 0.99 if key == (2, 1) else 1.0
    result = search(toy_space(xs=(1, 2), ys=(1,)), (1, 1, 1), {}, fake_bench(times),
                    budget_s=math.inf, min_gain=0.02)
    assert result.best == result.default == {"x": 1, "y": 1}
    assert result.gain == 1.0


def test_a_default_that_breaks_the_restrictions_is_an_error():
    space = toy_space(restrictions=[lambda c, shape, limits: c["x"] > 1])
    with pytest.raises(ValueError, match="default"):
        search(space, (1, 1, 1), {}, fake_bench(bowl), budget_s=1.0)


def test_candidate_hash_changes_with_the_candidates_not_the_shape():
    a = toy_space()
    b = toy_space(xs=range(1, 10))
    assert a.candidate_hash({}) == toy_space().candidate_hash({})
    assert a.candidate_hash({}) != b.candidate_hash({})
    v2 = TuningSpace(params=a.params, default=a.default, version="2")
    assert v2.candidate_hash({}) != a.candidate_hash({})


def test_a_gpu_style_space_plugs_in_unchanged():
    """A space shaped like a tiled WGSL GEMM's: workgroup tile BM x BN, per-invocation TM x TN,
    restricted by the adapter's limits (given to the restrictions as `limits`)."""
    limits = {"max_compute_workgroup_storage_size": 16384,
              "max_compute_invocations_per_workgroup": 256}

    def divides(c, shape, limits):
        return c["bm"] % c["tm"] == 0 and c["bn"] % c["tn"] == 0

    def invocations(c, shape, limits):
        return (c["bm"] // c["tm"]) * (c["bn"] // c["tn"]) <= \
            limits["max_compute_invocations_per_workgroup"]

    def storage(c, shape, limits):   # int8 A and B K-slices of BK, as u32
        return (c["bm"] + c["bn"]) * c["bk"] <= limits["max_compute_workgroup_storage_size"]

    space = TuningSpace(
        params={"bm": (16, 32, 64, 128), "bn": (16, 32, 64, 128), "bk": (16, 32, 64),
                "tm": (1, 2, 4, 8), "tn": (1, 2, 4, 8)},
        default=lambda shape, limits: {"bm": 64, "bn": 64, "bk": 32, "tm": 4, "tn": 4},
        restrictions=(divides, invocations, storage),
        fingerprint=lambda: "gpu|Fake Adapter|driver 1.0|Vulkan",
    )
    seen = []

    def bench(c):
        seen.append(c)
        # Fastest at 128 x 64 with 8 x 4 per invocation and BK=32.
        return 1.0 + abs(c["bm"] - 128) / 64 + abs(c["bn"] - 64) / 64 + abs(c["tm"] - 8) / 8 \
            + abs(c["tn"] - 4) / 8 + abs(c["bk"] - 32) / 64

    clock = FakeClock()
    def timed(c):
        clock.now += 0.001
        return bench(c)
    result = search(space, (256, 1024, 4096), limits, timed, budget_s=100.0, clock=clock)
    assert result.strategy == "halving"
    assert result.best == {"bm": 128, "bn": 64, "bk": 32, "tm": 8, "tn": 4}
    assert all(divides(c, None, limits) and invocations(c, None, limits)
               and storage(c, None, limits) for c in seen)
    # A smaller adapter rules the winner out (storage 192 x 64 > 8192).
    small = {**limits, "max_compute_workgroup_storage_size": 8192}
    assert not space.allows({"bm": 128, "bn": 64, "bk": 64, "tm": 8, "tn": 4}, (1, 1, 1), small)


def test_a_failing_default_leaves_the_best_working_candidate():
    result = search(toy_space(xs=(1, 2, 3), ys=(1,)), (1, 1, 1), {},
                    fake_bench(bowl, fail={(1, 1)}), budget_s=math.inf)
    assert result.best == {"x": 3, "y": 1}
    assert result.default_time_s == math.inf
    assert [t.config for t in result.failures] == [{"x": 1, "y": 1}]


def test_nothing_runs():
    result = search(toy_space(xs=(1, 2), ys=(1,)), (1, 1, 1), {},
                    fake_bench(bowl, fail={(1, 1), (2, 1)}), budget_s=math.inf)
    assert result.best == result.default
    assert result.best_time_s == result.default_time_s == math.inf
    assert len(result.failures) == 2


def test_gpu_configurations_step_one_field_at_a_time():
    from gemm.wgsl import tiles

    start = tiles.Tiled(16, 64, 8, 4, 4)
    steps = tiles.neighbours(start)
    assert tiles.Tiled(16, 64, 16, 4, 4) in steps and tiles.Tiled(16, 64, 8, 4, 4, direct=True) in steps
    for cfg in steps:
        changed = [f for f in ("bm", "bn", "bk", "tm", "tn", "ks", "direct")
                   if getattr(cfg, f) != getattr(start, f)]
        assert len(changed) == 1, cfg
    assert tiles.SmallM(16, 16, direct=True) in tiles.neighbours(tiles.SmallM(16, 16))


class DriftingMachine:
    """timed(config, share) on a machine whose speed changes: every call is `slowdown` x slower
    from the `after`-th timed batch on (a GPU whose clock fell), or, with `step_at`, only that
    one batch sees the new speed's start (a clock step during a sample)."""

    def __init__(self, times, slowdown=3.5, after=math.inf, step_inside=()):
        self.times, self.slowdown, self.after = times, slowdown, after
        self.step_inside = set(step_inside)
        self.batches = 0

    def timed(self, config, share):
        self.batches += 1
        key = (config["x"], config["y"])
        slow = self.batches > self.after or self.batches in self.step_inside
        return self.times(key) * (self.slowdown if slow else 1.0)


def test_referenced_samples_compare_configurations_across_a_clock_change():
    from tuning.bench import Referenced

    default = {"x": 1, "y": 1}
    machine = DriftingMachine(bowl, after=10)
    sampler = Referenced(default)
    before = [sampler.sample(machine.timed, {"x": 6, "y": 3}) for _ in range(2)]
    assert machine.batches < 10
    after = [sampler.sample(machine.timed, {"x": 6, "y": 3}) for _ in range(5)]
    assert machine.batches > 10
    # The same configuration samples alike on both sides of a 3.5x slowdown, at its true speed
    # relative to the reference (bowl: 1.0 against the default's 3.7).
    assert before + after == pytest.approx([1.0] * 7)
    assert sampler.sample(machine.timed, default) == pytest.approx(bowl((1, 1)))


def test_a_sample_whose_reference_halves_disagree_is_taken_again():
    from tuning.bench import Referenced

    # Batches: 1-3 the base, then (before, candidate, after); the clock steps inside the first
    # sample (its "after" half is slow), so that sample is no measure, and the second counts.
    machine = DriftingMachine(bowl, step_inside={6})
    sampler = Referenced({"x": 1, "y": 1})
    assert sampler.sample(machine.timed, {"x": 6, "y": 3}) == pytest.approx(1.0)
    assert machine.batches == 3 + 6


def test_the_search_finds_the_optimum_on_a_machine_that_slows_midway():
    from tuning.bench import Referenced

    space = toy_space()
    # The optimum comes late in the exhaustive order, after the machine became 3.5x slower:
    # timed raw, it samples 2.8x slower than the best seen before the slowdown and is
    # abandoned; against the reference it wins.
    raw_machine = DriftingMachine(bowl, after=40)
    raw = search(space, (1, 1, 1), {}, lambda c: raw_machine.timed(c, 1.0), budget_s=math.inf)
    assert raw.best != {"x": 6, "y": 3}
    machine = DriftingMachine(bowl, after=40 * 3)   # three batches per referenced sample
    sampler = Referenced(space.default((1, 1, 1), {}))
    result = search(space, (1, 1, 1), {}, lambda c: sampler.sample(machine.timed, c),
                    budget_s=math.inf)
    assert result.best == {"x": 6, "y": 3}


@pytest.mark.parametrize("xs", [range(1, 9), range(1, 41)], ids=["exhaustive", "halving"])
def test_candidates_are_announced_before_they_start(xs):
    """prefetch hears of every candidate the search starts (but the default, the first) before
    it starts, so a kernel can be built in the background meanwhile, and of nothing at the end."""
    clock = FakeClock()
    events = []

    def prefetch(configs):
        events.extend(("announced", (c["x"], c["y"])) for c in configs)
        events.append(("call", len(configs)))

    def verify(config):
        events.append(("started", (config["x"], config["y"])))

    result = search(toy_space(xs=xs), (1, 1, 1), {}, fake_bench(bowl, clock, cost=0.01),
                    verify=verify,
                    prefetch=prefetch, budget_s=3.0, clock=clock)
    started = [key for what, key in events if what == "started"]
    assert len(started) > 10 and started[0] == (1, 1)
    for key in started[1:]:
        assert events.index(("announced", key)) < events.index(("started", key)), key
    # Once the search is over, nothing is wanted any more (the bench withdraws what it queued).
    assert [e for e in events if e[0] == "call"][-1] == ("call", 0)
    assert result.best == {"x": 6, "y": 3}
