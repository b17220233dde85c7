"""The capacity search: the highest load that holds the SLO, as a pure function over a trial callback.

A trial is a cell at one load (:func:`harness.verdict.judge` turns its figures into a verdict);
this module only decides which load comes next, so it is tested with no server, no socket and no
clock but an injected one. The rules, after RFC 9971 (MLRsearch) and vegeta-break:

- **bracket**: from ``start``, double while trials pass (up to ``max_load``, the file-descriptor
  limit on the users axis); halve while they fail and nothing has passed yet;
- **bisect**: try a load between the highest that held and the lowest that failed (their geometric
  middle, rounded to a nice figure) until ``fails / holds <= 1 + resolution``, or no whole load lies
  between them;
- **confirm**: a verdict at the bracket's edges needs ``confirm`` more trials (``N``, default 1).
  The highest load that held must pass ``N`` more: a load *holds* only if every trial at it
  passed (noise can only make the answer lower, never luckily higher). A load *fails* only when
  ``N + 1`` of its trials failed: one that failed fewer times is tried again, up to ``2N + 1``
  trials, and one that passed ``N + 1`` of them is *noisy*: not held (the answer stays below it)
  but no failure either, so the search goes on above it. One unlucky trial (98.9% of the rate
  achieved where 99% is asked) no longer sets the limit a load or two too low, where a longer
  run at 15% more would hold (MLRsearch decides a load over several trials for the same reason);
- **invalid** trials (the generator was the bottleneck) never count as the server's failure: the
  load becomes the generator's ceiling, nothing at or above it is tried again, and the search only
  confirms the highest load below it (when nothing held yet, it halves down to find one). The
  answer is then a lower bound: "≥ holds", ``limited_by="generator"``;
- **budget**: a trial starts only if the longest one so far still fits in the time left, and only
  while the trial count allows; the answer then says ``limited_by="budget"``.

Loads are whole numbers (users, or msg/s) kept to two significant digits where the bracket allows,
so that a table reads "1,300 msg/s", not "1,297".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.results.capacity import Capacity, Limit, Trial

__all__ = [
    "DEFAULT_CONFIRM", "DEFAULT_RESOLUTION", "Bracket", "Budget", "Capacity", "CapacitySearch", "Trial", "between",
    "nice", "search_capacity",
]  # fmt: skip

DEFAULT_RESOLUTION = 0.10
DEFAULT_CONFIRM = 1
#: Significant digits of a bracketing load (doubling, halving): "1,600", "3,200", "6,400", "13,000".
NICE_DIGITS = 2


def round_sig(value: float, digits: int) -> int:
    """``value`` rounded to ``digits`` significant digits, as a whole number."""
    if value < 1:
        return 1 if value >= 0.5 else 0
    return int(round(value, digits - 1 - int(math.floor(math.log10(value)))))


def nice(value: float) -> int:
    """A load that reads well: two significant digits, at least 1."""
    return max(1, round_sig(value, NICE_DIGITS))


def between(lo: int, hi: int, resolution: float) -> int | None:
    """The next load to bisect ``[lo, hi]`` with, or None when the bracket is as narrow as asked.

    The geometric middle, with the fewest significant digits that keep it inside the middle half of
    the bracket (on a log scale): each bisection narrows the bracket by at least a quarter of its
    width, so rounding never stalls the search, and loads read "1,100" rather than "1,131".
    """
    if hi <= lo * (1.0 + resolution) or hi - lo < 2:
        return None
    middle = math.sqrt(lo * hi)
    quarter = (hi / lo) ** 0.25
    for digits in range(1, len(str(hi)) + 1):
        load = round_sig(middle, digits)
        if lo < load < hi and lo * quarter <= load <= hi / quarter:
            return load
    load = round(middle)
    return load if lo < load < hi else None


@dataclass(frozen=True, slots=True)
class Budget:
    """What a search may spend: seconds on ``clock`` (nanoseconds, injectable for tests), trials, or both."""

    seconds: float | None = None
    trials: int | None = None
    clock: Callable[[], int] = time.perf_counter_ns

    def __post_init__(self) -> None:
        if self.seconds is None and self.trials is None:
            raise ValueError("a budget needs seconds or a trial count: a search that always passes would never end")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"budget seconds must be above 0, not {self.seconds}")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"budget trials must be at least 1, not {self.trials}")


@dataclass(frozen=True, slots=True)
class Bracket:
    """Where the search stands: for a progress line after each trial."""

    holds: int | None  # highest load every trial of which passed
    fails: int | None  # lowest load the server failed
    ceiling: int | None  # lowest load the generator could not offer
    unit: str = ""

    def __str__(self) -> str:
        def show(load: int | None) -> str:
            return "-" if load is None else f"{load:,}{' ' + self.unit if self.unit else ''}"

        text = f"holds {show(self.holds)}, fails {show(self.fails)}"
        return text + (f", generator-bound at {show(self.ceiling)}" if self.ceiling is not None else "")


class CapacitySearch:
    """The search as a state machine: ``next_load()``, run it, ``record(trial)``; then ``result()``.

    Everything is derived from the verdicts so far, so a driver may stop whenever it likes (budget,
    Ctrl-C) and still ask what is known: ``result(stopped=why)``. :func:`search_capacity` is the usual driver.
    """

    def __init__(self, start: int, *, resolution: float = DEFAULT_RESOLUTION, confirm: int = DEFAULT_CONFIRM,
                 max_load: int | None = None, unit: str = "") -> None:
        if start < 1 or (max_load is not None and not 1 <= start <= max_load):
            raise ValueError(f"start must be at least 1 and at most max_load: start={start}, max_load={max_load}")
        if not resolution > 0:
            raise ValueError(f"resolution must be above 0, not {resolution}")
        if confirm < 0:
            raise ValueError(f"confirm must be 0 or more, not {confirm}")
        self.start, self.resolution, self.confirm, self.max_load, self.unit = start, resolution, confirm, max_load, unit
        self._trials: list[Trial] = []
        self._verdicts: dict[int, list[Trial]] = {}
        self._asked: int | None = None

    # -- what the verdicts so far say --------------------------------------------------------------
    @property
    def trials(self) -> tuple[Trial, ...]:
        """Every trial so far, in the order they ran."""
        return tuple(self._trials)

    def _count(self, load: int, verdict: str) -> int:
        return sum(t.verdict == verdict for t in self._verdicts.get(load, ()))

    def _state(self, load: int) -> str:
        """``pass`` (every trial passed), ``fail`` (N + 1 failed), ``noisy`` (N + 1 passed, some failed),
        ``open`` (failed, not yet decided) or ``invalid``."""
        if self._count(load, "invalid"):
            return "invalid"
        fails, passes, need = self._count(load, "fail"), self._count(load, "pass"), 1 + self.confirm
        if not fails:
            return "pass"
        return "fail" if fails >= need else ("noisy" if passes >= need else "open")

    def _loads(self, *states: str) -> list[int]:
        return [load for load in self._verdicts if self._state(load) in states]

    @property
    def fails(self) -> int | None:
        """The lowest load the server failed (N + 1 of its trials)."""
        return min(self._loads("fail"), default=None)

    @property
    def ceiling(self) -> int | None:
        return min(self._loads("invalid"), default=None)

    @property
    def upper(self) -> int | None:
        """The lowest load not known to hold: nothing at or above it is tried again."""
        return min((x for x in (self.fails, self.ceiling) if x is not None), default=None)

    def _below(self, *states: str) -> int | None:
        upper = self.upper
        return max((load for load in self._loads(*states) if upper is None or load < upper), default=None)

    @property
    def holds(self) -> int | None:
        """The highest load below the upper bound at which every trial passed."""
        return self._below("pass")

    @property
    def floor(self) -> int | None:
        """Where the bracket starts: the highest load below the upper bound that held or was noisy."""
        return self._below("pass", "noisy")

    @property
    def noisy(self) -> tuple[int, ...]:
        """Loads that passed and failed (more passes): neither held nor failed."""
        return tuple(sorted(self._loads("noisy")))

    @property
    def generator_bound(self) -> bool:
        """The generator, not a server failure, is what bounds the search from above."""
        ceiling, fails = self.ceiling, self.fails
        return ceiling is not None and (fails is None or ceiling < fails)

    @property
    def bracket(self) -> Bracket:
        return Bracket(self.holds, self.fails, self.ceiling, self.unit)

    def _passes(self, load: int) -> int:
        return self._count(load, "pass")

    # -- the next step -------------------------------------------------------------------------------
    def next_load(self) -> int | None:
        """The load to try next, or None when the search is done."""
        self._asked = self._next()
        return self._asked

    def _next(self) -> int | None:
        if not self._trials:
            return self.start
        upper, floor, holds = self.upper, self.floor, self.holds
        undecided = [load for load in self._loads("open") if upper is None or load < upper]
        if floor is None:  # nothing held yet: halve below the lowest load that did not (confirmed or not)
            bound = min((x for x in (upper, *undecided) if x is not None), default=None)
            if bound is None or bound <= 1:  # nothing lower to try: decide the lowest failure, if it is open
                return min(undecided, default=None)
            return min(max(1, nice(bound / 2)), bound - 1)
        above = [load for load in undecided if load > floor]
        if above:  # the failure that would bound the bracket: confirm (or refute) it first
            return min(above)
        if upper is None:  # everything held: double, up to the axis' end
            if self.max_load is None or floor < self.max_load:
                up = max(nice(floor * 2), floor + 1)
                return up if self.max_load is None else min(up, self.max_load)
        elif not self.generator_bound:
            middle = between(floor, upper, self.resolution)
            if middle is not None:
                return middle
        if holds is not None and self._passes(holds) < 1 + self.confirm:
            return holds
        return None

    def record(self, trial: Trial) -> None:
        """Take the verdict of the trial at the load :meth:`next_load` asked for."""
        if self._asked is not None and trial.load != self._asked:
            raise ValueError(f"the trial ran at {trial.load}, but the search asked for {self._asked}")
        self._asked = None
        self._trials.append(trial)
        self._verdicts.setdefault(trial.load, []).append(trial)

    def run(self, trial: Callable[[int], Trial], budget: Budget,
            on_trial: Callable[[Trial, Bracket], None] | None = None) -> Capacity:
        """Drive the search to its end or the budget's (see :func:`search_capacity`).

        A method, so that a driver holding the search can still ask ``result(stopped=...)`` when a
        trial is interrupted (Ctrl-C): every trial recorded before it is kept.
        """
        clock = budget.clock
        began, longest = clock(), 0
        while (load := self.next_load()) is not None:
            if budget.trials is not None and len(self._trials) >= budget.trials:
                return self.result(stopped=f"the budget of {budget.trials} trials ran out")
            spent = clock() - began
            if budget.seconds is not None and spent + longest > budget.seconds * 1e9:
                return self.result(stopped=f"the budget of {budget.seconds:g} s ran out ({spent / 1e9:.0f} s spent)")
            t0 = clock()
            outcome = trial(load)
            took = clock() - t0
            longest = max(longest, took)
            self.record(replace(outcome, seconds=took / 1e9))
            if on_trial is not None:
                on_trial(self._trials[-1], self.bracket)
        return self.result()

    # -- the answer ----------------------------------------------------------------------------------
    def _show(self, load: int | None) -> str:
        return "-" if load is None else f"{load:,}{' ' + self.unit if self.unit else ''}"

    def _why(self, load: int, verdict: str) -> str:
        return next(t.reason for t in self._verdicts[load] if t.verdict == verdict)

    def result(self, stopped: str | None = None) -> Capacity:
        """What the trials so far say; ``stopped``: why the search ended early (the budget, the user)."""
        if stopped is None and self._next() is not None:
            raise ValueError("the search is not done: pass stopped= to say why it ended")
        holds, fails, ceiling, floor, upper = self.holds, self.fails, self.ceiling, self.floor, self.upper
        confirmed = holds is not None and self._passes(holds) >= 1 + self.confirm
        noise = [load for load in self.noisy if (holds is None or load > holds) and (upper is None or load < upper)]
        note = f" (noisy at {', '.join(map(self._show, noise))}: passed and failed)" if noise else ""
        limited_by: Limit
        if stopped is not None:
            limited_by = "budget"
            known = f"holds {self._show(holds)}{'' if confirmed or holds is None else ' (not confirmed)'}"
            open_ = min(self._loads("open"), default=None)
            pending = f" (a failure at {self._show(open_)} not yet confirmed)" if open_ is not None else ""
            reason = f"{stopped} after {len(self._trials)} trials: {known}, fails {self._show(fails)}{pending}{note}"
        elif self.generator_bound and ceiling is not None:
            limited_by = "generator"
            why = self._why(ceiling, "invalid")
            reason = (f"≥ {self._show(holds)}: at {self._show(ceiling)} the generator was the bottleneck ({why})"
                      if holds is not None else f"the generator was the bottleneck already at {self._show(ceiling)} ({why})")
            reason += note
        elif fails is not None:
            limited_by = "server"
            why = self._why(fails, "fail")
            reason = (f"holds {self._show(holds)}; at {self._show(fails)}: {why}" if holds is not None
                      else f"fails already at {self._show(fails)}: {why}") + note
        elif floor is not None and floor == self.max_load:
            limited_by = "fd-limit"
            reason = (f"held every load up to {self._show(holds)}, the file-descriptor limit: the server's limit lies "
                      f"beyond" if holds == floor else f"holds {self._show(holds)}, and up to the file-descriptor "
                      f"limit {self._show(floor)} no load failed{note}")  # fmt: skip
        else:  # _next() is None only at a failure, a generator ceiling or max_load
            raise AssertionError(f"a finished search with no limit: {self.bracket}")
        return Capacity(holds, fails, limited_by, reason, confirmed, self.trials)


def search_capacity(
    trial: Callable[[int], Trial],
    *,
    start: int,
    budget: Budget,
    resolution: float = DEFAULT_RESOLUTION,
    confirm: int = DEFAULT_CONFIRM,
    max_load: int | None = None,
    unit: str = "",
    on_trial: Callable[[Trial, Bracket], None] | None = None,
) -> Capacity:
    """Run trials (``trial(load)``, one cell each) until the search is done or the budget runs out.

    ``on_trial`` sees each trial and the bracket after it (a progress line, the trial's cell file).
    Each trial's ``seconds`` is set from ``budget.clock``. To keep what is known when the user
    stops it, make the :class:`CapacitySearch` yourself, call its :meth:`~CapacitySearch.run` and,
    on the interrupt, ``result(stopped=...)``.
    """
    search = CapacitySearch(start, resolution=resolution, confirm=confirm, max_load=max_load, unit=unit)
    return search.run(trial, budget, on_trial)
