"""The capacity search as a pure function (issue 20), its trial verdict and ``capacity.json``.

Fast tier: no socket, no process, no sleeping. Trials are callbacks with a known threshold; the
budget's clock is a counter the trials advance.
"""

from __future__ import annotations

import ast
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import harness.capacity
from harness.capacity import Budget, CapacitySearch, Trial, between, search_capacity
from harness.results import CellResult, GeneratorStats, Latency, ResultError, ServerStats
from harness.results.capacity import Capacity, CapacityEntry, CapacityResults, load_capacity, write_capacity
from harness.verdict import judge

ROOT = Path(__file__).resolve().parent.parent
ENOUGH = Budget(trials=200)


def threshold(limit: int, *, invalid_from: int | None = None) -> Callable[[int], Trial]:
    """A server that holds every load up to ``limit``; a generator that cannot offer ``invalid_from`` or more."""
    def trial(load: int) -> Trial:
        if invalid_from is not None and load >= invalid_from:
            return Trial(load, "invalid", "a Locust process used 97% of a core")
        return Trial(load, "pass", "p99 2 ms") if load <= limit else Trial(load, "fail", "p99 40 ms")
    return trial


def loads(capacity: Capacity) -> list[int]:
    return [t.load for t in capacity.trials]


def significant(load: int) -> int:
    return len(str(load).rstrip("0"))


# -- the search -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [1, 2, 7, 137, 1000, 4321, 99_999])
@pytest.mark.parametrize("start", [1, 100, 10_000])
def test_a_sharp_threshold_is_found_within_the_resolution_below_it(limit: int, start: int) -> None:
    found = search_capacity(threshold(limit), start=start, budget=ENOUGH)
    assert found.limited_by == "server" and found.confirmed and not found.lower_bound
    assert found.holds is not None and found.fails is not None
    assert found.holds <= limit < found.fails
    assert found.fails <= found.holds * 1.1 or found.fails == found.holds + 1  # as narrow as whole loads allow
    assert Counter(loads(found))[found.holds] == 2  # its trial, then one confirmation
    assert all(significant(load) <= 2 for load in loads(found)), loads(found)  # "4,200", not "4,321"
    assert found.reason.startswith(f"holds {found.holds:,}; at {found.fails:,}: p99 40 ms")


def test_a_finer_resolution_and_more_confirmations_are_kept() -> None:
    found = search_capacity(threshold(4321), start=100, budget=ENOUGH, resolution=0.01, confirm=3)
    assert found.holds is not None and found.fails is not None
    assert found.holds <= 4321 < found.fails <= found.holds * 1.01
    assert Counter(loads(found))[found.holds] == 4


def test_a_start_above_the_threshold_brackets_downward() -> None:
    found = search_capacity(threshold(700), start=10_000, budget=ENOUGH, unit="msg/s")
    tried = loads(found)
    # halved until one held (no failure confirmed on the way down), then the failure above it confirmed, then bisected
    assert tried[:8] == [10_000, 5_000, 2_500, 1_200, 600, 1_200, 800, 800]
    assert found.holds is not None and found.fails is not None and found.holds <= 700 < found.fails <= found.holds * 1.1
    assert found.limited_by == "server"
    never = search_capacity(threshold(0), start=100, budget=ENOUGH, unit="users")
    assert (never.holds, never.fails, never.limited_by, loads(never)[-1]) == (None, 1, "server", 1)
    assert never.reason == "fails already at 1 users: p99 40 ms"


@pytest.mark.parametrize(("noisy_load", "on_try", "noisy_verdict", "holds", "fails", "verdicts"), [
    # the highest load that held fails its confirmation, and passes a third time: noisy, so neither held nor
    # failed; the answer drops below it (noise only ever makes it lower)
    (1000, 2, "fail", 800, 1100, ["pass", "fail", "pass"]),
    # a load above the limit passes once, by luck: its confirmation and a third trial fail it
    (1100, 1, "pass", 1000, 1100, ["pass", "fail", "fail"]),
])
def test_a_noisy_threshold_is_decided_over_three_trials(noisy_load: int, on_try: int, noisy_verdict: str,
                                                        holds: int, fails: int, verdicts: list[str]) -> None:
    seen: Counter[int] = Counter()
    sharp = threshold(1000)

    def trial(load: int) -> Trial:
        seen[load] += 1
        return Trial(load, noisy_verdict, "noise") if (load, seen[load]) == (noisy_load, on_try) else sharp(load)  # type: ignore[arg-type]

    found = search_capacity(trial, start=100, budget=ENOUGH)
    assert (found.holds, found.fails, found.limited_by, found.confirmed) == (holds, fails, "server", True)
    assert [t.verdict for t in found.trials if t.load == noisy_load] == verdicts
    assert [t.verdict for t in found.trials if t.load == holds] == ["pass", "pass"]
    assert [t.verdict for t in found.trials if t.load == fails].count("fail") == 2  # a limit failed twice
    assert ("noisy at 1,000" in found.reason) == (noisy_load == 1000)


def test_one_unlucky_failure_below_the_limit_does_not_set_it() -> None:
    """A trial at 800 misses once (98.9% of the rate achieved, say) though the server holds up to 1,000."""
    seen: Counter[int] = Counter()

    def trial(load: int) -> Trial:
        seen[load] += 1
        return Trial(load, "fail", "achieved 98.9%") if (load, seen[load]) == (800, 1) else threshold(1000)(load)

    found = search_capacity(trial, start=100, budget=ENOUGH)
    assert [t.verdict for t in found.trials if t.load == 800] == ["fail", "pass", "pass"]  # noisy, not the limit
    assert found.limited_by == "server" and found.holds is not None and found.fails is not None
    assert 800 < found.holds <= 1000 < found.fails <= found.holds * 1.1
    assert "noisy" not in found.reason  # 800 lies below the answer: no longer worth a word
    seen.clear()
    never_confirmed = search_capacity(trial, start=100, budget=ENOUGH, confirm=0)  # the old rule: one failure decides
    assert never_confirmed.fails == 800


@pytest.mark.parametrize("seed", range(40))
def test_under_any_noise_the_answer_held_every_trial_and_the_limit_failed_twice(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(1, 50_000)

    def trial(load: int) -> Trial:
        held = (load <= limit) != (rng.random() < 0.15)  # one trial in seven goes the wrong way
        return Trial(load, "pass" if held else "fail", "noise")

    found = search_capacity(trial, start=rng.choice([1, 100, 10_000]), budget=ENOUGH)
    assert found.limited_by == "server", found.reason
    at: dict[int, list[str]] = {}
    for t in found.trials:
        at.setdefault(t.load, []).append(t.verdict)
    assert found.fails is not None and at[found.fails].count("fail") == 2
    if found.holds is not None:
        assert found.holds < found.fails and at[found.holds] == ["pass", "pass"]
    assert all(len(verdicts) <= 3 for verdicts in at.values())  # 2N + 1 trials at most


def test_an_invalid_trial_gives_a_lower_bound_never_a_server_failure() -> None:
    found = search_capacity(threshold(5000, invalid_from=1500), start=100, budget=ENOUGH, unit="msg/s")
    assert (found.holds, found.fails, found.limited_by, found.confirmed) == (800, None, "generator", True)
    assert found.lower_bound
    assert loads(found) == [100, 200, 400, 800, 1600, 800]  # nothing at or above the generator's ceiling again
    assert found.reason == "≥ 800 msg/s: at 1,600 msg/s the generator was the bottleneck (a Locust process used 97% of a core)"


def test_an_invalid_trial_inside_the_bracket_keeps_the_server_failure_above_it() -> None:
    def trial(load: int) -> Trial:
        if 1200 <= load < 1600:
            return Trial(load, "invalid", "the machine had 0.4% idle CPU")
        return threshold(1500)(load)

    found = search_capacity(trial, start=100, budget=ENOUGH)
    assert (found.holds, found.fails, found.limited_by) == (1000, 1600, "generator")


def test_a_server_failure_below_the_generator_ceiling_is_the_server_limit() -> None:
    seen: Counter[int] = Counter()

    def trial(load: int) -> Trial:  # 800 passes once by luck; the generator cannot offer 1,500
        seen[load] += 1
        return Trial(load, "pass", "luck") if (load, seen[load]) == (800, 1) else threshold(700, invalid_from=1500)(load)

    found = search_capacity(trial, start=100, budget=ENOUGH)
    assert loads(found)[:6] == [100, 200, 400, 800, 1600, 800]
    assert found.limited_by == "server" and found.fails is not None and found.holds is not None
    assert found.holds <= 700 < found.fails <= 800 and found.fails <= found.holds * 1.1


def test_an_invalid_first_trial_or_confirmation_halves_down_to_a_load_the_generator_offers() -> None:
    found = search_capacity(threshold(5000, invalid_from=2000), start=3000, budget=ENOUGH)
    assert (loads(found), found.holds, found.fails, found.limited_by) == ([3000, 1500, 1500], 1500, None, "generator")
    seen: Counter[int] = Counter()

    def trial(load: int) -> Trial:
        seen[load] += 1
        return Trial(load, "invalid", "late sends") if (load, seen[load]) == (800, 2) else threshold(5000, invalid_from=1500)(load)

    confirmed_below = search_capacity(trial, start=100, budget=ENOUGH)
    assert (confirmed_below.holds, confirmed_below.fails, confirmed_below.limited_by) == (400, None, "generator")
    assert loads(confirmed_below)[-3:] == [1600, 800, 400]  # 800 held once, then was not offered: 400 is confirmed


def test_the_budget_running_out_stops_before_a_trial_that_would_not_fit() -> None:
    now = 0

    def clock() -> int:
        return now

    def trial(load: int) -> Trial:
        nonlocal now
        now += 30 * 10**9  # every trial takes 30 s
        return threshold(1000)(load)

    found = search_capacity(trial, start=100, budget=Budget(seconds=100, clock=clock))
    assert loads(found) == [100, 200, 400]  # a fourth would end at 120 s
    assert (found.holds, found.fails, found.limited_by, found.confirmed) == (400, None, "budget", False)
    assert [t.seconds for t in found.trials] == [30.0, 30.0, 30.0]
    assert found.reason.startswith("the budget of 100 s ran out") and "holds 400 (not confirmed)" in found.reason
    counted = search_capacity(threshold(1000), start=100, budget=Budget(trials=6))
    assert len(counted.trials) == 6 and counted.limited_by == "budget" and counted.fails == 1600


def test_a_server_that_holds_every_load_up_to_the_descriptor_limit() -> None:
    found = search_capacity(threshold(10**9), start=100, budget=ENOUGH, max_load=3000, unit="users")
    assert loads(found) == [100, 200, 400, 800, 1600, 3000, 3000]
    assert (found.holds, found.fails, found.limited_by, found.confirmed) == (3000, None, "fd-limit", True)
    assert found.lower_bound
    at_the_limit = search_capacity(threshold(2999), start=100, budget=ENOUGH, max_load=3000)
    assert at_the_limit.limited_by == "server" and at_the_limit.fails is not None and at_the_limit.fails <= 3000


@pytest.mark.parametrize("bad", [
    lambda: CapacitySearch(0), lambda: CapacitySearch(200, max_load=100), lambda: CapacitySearch(100, resolution=0),
    lambda: CapacitySearch(100, confirm=-1), lambda: Budget(), lambda: Budget(seconds=0), lambda: Budget(trials=0),
])
def test_bad_search_settings_are_refused(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        bad()


def test_a_search_stopped_early_says_what_it_knew_and_refuses_a_trial_at_another_load() -> None:
    search = CapacitySearch(100, unit="users")
    assert search.next_load() == 100
    with pytest.raises(ValueError, match="asked for 100"):
        search.record(Trial(150, "pass", "ok"))
    search.record(Trial(100, "pass", "ok"))
    with pytest.raises(ValueError, match="not done"):
        search.result()
    stopped = search.result(stopped="stopped by the user")
    assert (stopped.holds, stopped.limited_by) == (100, "budget")
    assert str(search.bracket) == "holds 100 users, fails -"


@pytest.mark.parametrize(("lo", "hi"), [(100, 200), (800, 1600), (1000, 1300), (1900, 3000), (3, 9), (950, 1100),
                                         (12_345, 99_999)])
def test_bisection_splits_the_bracket_evenly_enough_to_converge(lo: int, hi: int) -> None:
    """A nice load, yet each side keeps at least a quarter of the bracket (on a log scale): 2,400 in 1,900-3,000, not 2,000."""
    middle = between(lo, hi, 0.1)
    assert middle is not None and lo < middle < hi
    quarter = math.log(hi / lo) / 4 - 1e-9
    assert math.log(middle / lo) >= quarter and math.log(hi / middle) >= quarter
    assert between(lo, int(lo * 1.1), 0.1) is None and between(4, 5, 0.1) is None


def test_the_search_imports_only_the_standard_library_and_the_result_model() -> None:
    tree = ast.parse(Path(harness.capacity.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m.split(".")[0] for m in modules if m} <= {"__future__", "math", "time", "collections", "dataclasses", "harness"}
    assert {m for m in modules if m and m.startswith("harness")} == {"harness.results.capacity"}


# -- the verdict of a trial from its cell --------------------------------------------------------------------------

def cell(*, p99_ms: float = 3.0, rate: float | None = 1000.0, achieved: float = 1000.0, status: str = "ok",
         latency: dict[str, Latency] | None = None, **changes: Any) -> CellResult:
    messages = int(achieved * 5)
    figures = {"message": Latency(count=messages, min_us=50, max_us=p99_ms * 2000, mean_us=400, p50_us=300, p90_us=900,
                                  p95_us=1000, p99_us=p99_ms * 1000, p999_us=p99_ms * 1500, p9999_us=p99_ms * 2000)}
    return CellResult("selectors", 100, "chat", status, 0.0, 20.0, 2.0, 5.0, throughput=achieved, messages=messages,
                      rate=rate, latency={**figures, **(latency or {})}, **changes)


def lag(p99_ms: float, count: int = 5000) -> Latency:
    return Latency(count=count, min_us=0, max_us=p99_ms * 2000, mean_us=10, p50_us=10, p90_us=20, p95_us=30,
                   p99_us=p99_ms * 1000, p999_us=p99_ms * 1000, p9999_us=p99_ms * 1000)


SATURATED = GeneratorStats(cpu_percent_max=97.0, saturated=True)


@pytest.mark.parametrize(("trial_cell", "verdict", "words"), [
    (cell(), "pass", "p99 3.00 ms under the 10 ms SLO, 1,000 of 1,000 msg/s answered"),
    (cell(p99_ms=12.0), "fail", "p99 12.0 ms, over the 10 ms SLO"),
    (cell(achieved=985.0), "fail", "achieved 985 of the 1,000 msg/s asked (98.5%, under 99%)"),
    (cell(failures={"message": {"ReplyTimeout": 1}}), "fail", "1 errors in the window"),
    (cell(latency={"unanswered": lag(2000.0, count=1)}, generator=SATURATED), "fail", "1 of 100 users left unanswered"),
    (cell(users_not_established=40), "fail", "40 of 100 users left unanswered"),
    (cell(p99_ms=12.0, generator=SATURATED), "invalid", "generator-saturated (CPU 97%)"),
    (cell(p99_ms=12.0, generator_bound="the machine had 0.4% idle CPU over the window"), "invalid", "0.4% idle CPU"),
    (cell(generator=SATURATED), "pass", "its delays only add to these figures"),
    (cell(rate=None, generator=SATURATED), "invalid", "in the closed loop"),
    # sends late while the server answered within a user's 100 ms interval: the generator's delay
    (cell(p99_ms=12.0, latency={"send_lag": lag(5.0), "message_uncorrected": lag(0.5)}), "invalid", "sends were late"),
    # sends late because the server's replies took longer than that interval: the server's
    (cell(p99_ms=400.0, latency={"send_lag": lag(300.0), "message_uncorrected": lag(150.0)}), "fail", "p99 400.0 ms"),
    (cell(status="server-died", server=ServerStats(died=True, exit_code=-9)), "fail", "the server died (exit code -9)"),
    (cell(status="failed", error="no user ever connected", failures_total={"connect": {"ConnectionRefusedError": 100}},
          latency={"message": Latency()}), "fail", "no user could connect (ConnectionRefusedError 100)"),
    (cell(status="failed", error="Locust did not start"), "invalid", "could not run: Locust did not start"),
])
def test_a_cell_becomes_a_verdict(trial_cell: CellResult, verdict: str, words: str) -> None:
    trial = judge(trial_cell, load=1000, slo_ms=10.0)
    assert (trial.verdict, trial.load) == (verdict, 1000), trial.reason
    assert words in trial.reason, trial.reason


def test_a_verdict_keeps_the_figures_and_marks_a_p99_that_misses_messages_as_a_lower_bound() -> None:
    waiting = judge(cell(latency={"unanswered": lag(2000.0, count=1)}), load=1000, slo_ms=10.0, cell_file="cell-a.json")
    assert (waiting.p99_us, waiting.p99_lower_bound, waiting.unanswered, waiting.asked) == (3000.0, True, 1, 1000.0)
    assert waiting.cell_file == "cell-a.json" and waiting.p50_us == 300
    clean = judge(cell(), load=1000, slo_ms=10.0)
    assert not clean.p99_lower_bound and clean.unanswered == 0 and clean.errors == 0
    one_error = cell(failures={"message": {"ReplyTimeout": 1}})
    assert judge(one_error, load=1000, slo_ms=10.0, max_error_ratio=0.001).verdict == "pass"
    assert judge(one_error, load=1000, slo_ms=10.0).p99_lower_bound


def test_a_search_over_judged_cells_finds_the_server_limit_below_the_generator_bound() -> None:
    def run(load: int) -> Trial:  # a server whose p99 grows past 10 ms above 2,300 msg/s; a generator good to 9,000
        p99 = 2.0 if load <= 2300 else 25.0
        return judge(cell(p99_ms=p99, rate=load, achieved=load, generator=SATURATED if load >= 9000 else GeneratorStats()),
                     load=load, slo_ms=10.0)

    found = search_capacity(run, start=500, budget=ENOUGH, unit="msg/s")
    assert found.limited_by == "server" and found.holds is not None and found.fails is not None
    assert found.holds <= 2300 < found.fails <= found.holds * 1.1
    assert all(t.p99_us is not None for t in found.trials)


# -- capacity.json ---------------------------------------------------------------------------------------------

def results() -> CapacityResults:
    server = search_capacity(threshold(1000), start=100, budget=ENOUGH, unit="msg/s")
    generator = search_capacity(threshold(5000, invalid_from=1500), start=100, budget=ENOUGH, unit="msg/s")
    judged = judge(cell(latency={"unanswered": lag(2000.0, count=1)}), load=1000, slo_ms=10.0, cell_file="cell-selectors-r1000.json")
    with_figures = Capacity(None, 1000, "server", "fails already at 1,000 msg/s", trials=(judged,))
    return CapacityResults("rate", 10.0, 0.1, 1, run_id="run-1", entries=(
        CapacityEntry("selectors", server, users=100), CapacityEntry("threaded", generator, users=100),
        CapacityEntry("pool", with_figures, users=100)))


def test_capacity_json_round_trips(tmp_path: Path) -> None:
    written = results()
    path = write_capacity(tmp_path, written)
    assert path.name == "capacity.json"
    assert load_capacity(tmp_path) == written == CapacityResults.from_json(written.to_json())
    data = json.loads(path.read_text())
    assert (data["kind"], data["schema_version"]) == ("swarmbench.capacity", 1)
    assert data["entries"][1]["limited_by"] == "generator" and data["entries"][2]["trials"][0]["p99_lower_bound"] is True
    assert write_capacity(tmp_path, CapacityResults("users", 10.0, 0.1, 1)) == path  # replaced as entries finish
    assert load_capacity(path).entries == ()


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.update(kind="swarmbench.cell"), "not a swarmbench.capacity file"),
    (lambda d: d.update(schema_version=2),  "schema_version '2' is not supported"),
    (lambda d: d.update(axis="time"), "field 'axis'"),
    (lambda d: d.update(resolution=0), "field 'resolution'"),
    (lambda d: d["entries"][0].update(limited_by="luck"), "field 'entries[0].limited_by'"),
    (lambda d: d["entries"][0].update(holds=2000), "field 'entries[0].holds'"),
    (lambda d: d["entries"][0].update(users=None), "field 'entries[0].users'"),
    (lambda d: d["entries"][0].update(variant="../x"), "field 'entries[0].variant'"),
    (lambda d: d["entries"][0]["trials"][0].update(verdict="maybe"), "field 'entries[0].trials[0].verdict'"),
    (lambda d: d["entries"][2]["trials"][0].update(cell_file="../../etc/passwd"), "entries[2].trials[0].cell_file"),
    (lambda d: d["entries"][2]["trials"][0].update(p99_us=-1), "entries[2].trials[0].p99_us"),
    (lambda d: d["entries"].append(dict(d["entries"][0])), "a second entry for selectors"),
])
def test_a_bad_capacity_file_is_refused_in_one_line_naming_the_field(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                                                                     words: str) -> None:
    data = results().to_dict()
    change(data)
    (tmp_path / "capacity.json").write_text(json.dumps(data))
    with pytest.raises(ResultError) as refused:
        load_capacity(tmp_path)
    assert isinstance(refused.value, ValueError)
    assert "\n" not in str(refused.value) and words in str(refused.value), str(refused.value)
    assert str(refused.value).startswith("capacity.json: ")


@pytest.mark.parametrize("text", [b"{", b"\xff\xfe", b"[1, 2]", b""])
def test_a_file_that_is_no_capacity_json_is_one_line(tmp_path: Path, text: bytes) -> None:
    (tmp_path / "capacity.json").write_bytes(text)
    with pytest.raises(ResultError) as refused:
        load_capacity(tmp_path / "capacity.json")
    assert "\n" not in str(refused.value) and "capacity.json" in str(refused.value)
    with pytest.raises(ResultError):
        CapacityResults.from_json(text)
