"""Interleaved timing rounds: the one way privml's benchmarks compare two variants.

On a shared 2-core machine a ratio of medians taken minutes apart measures the
neighbours as much as the code. Here every round times each variant once, in a
rotated order, and the figure quoted is the median of the *per-round ratio*, with
its spread (min, quartiles, max) and the number of rounds taken.

    from _rounds import pin_threads, interleave

    pin_threads()                     # before numpy/torch spin up their pools
    times = interleave({"privml": run_privml, "anchor": run_anchor}, rounds=15)
    print(times.ratio("privml", "anchor"))   # median [q1 .. q3] (min .. max), n rounds

Each callable runs one measured unit of work and may return the seconds to count
(for work with an untimed set-up inside it); if it returns ``None`` its whole call
is timed with ``time.perf_counter``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Rate", "Ratio", "Timings", "interleave", "load_average", "pin_threads", "verdict"]

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def pin_threads(threads: int = 1) -> None:
    """Fix the math libraries' thread pools (env before import, torch if already imported).

    Call it at the top of a benchmark, before numpy or torch are imported, so both
    sides of a comparison run with the same, stated number of threads. It does not
    import torch itself (a torch imported later sizes its pool from ``OMP_NUM_THREADS``):
    a benchmark without torch, and every process it starts, stays free of its import
    time and memory.
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes, for the report beside a figure."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class _PerRound:
    """One figure per round: its median and quartiles."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]


@dataclass(frozen=True)
class Ratio(_PerRound):
    """The per-round ratios of one variant's time to another's."""

    top: str = ""
    bottom: str = ""

    def __str__(self) -> str:
        q1, q3 = self.quartiles
        return (
            f"{self.median:.3f}x [{q1:.3f} .. {q3:.3f}] "
            f"(min {min(self.values):.3f}, max {max(self.values):.3f}; "
            f"{len(self.values)} rounds)"
        )


@dataclass(frozen=True)
class Rate(_PerRound):
    """Units of work per second, one figure per round."""

    name: str = ""
    unit: str = ""

    def __str__(self) -> str:
        q1, q3 = self.quartiles
        return (
            f"{self.median:,.0f} {self.unit}/s [{q1:,.0f} .. {q3:,.0f}] "
            f"(min {min(self.values):,.0f}, max {max(self.values):,.0f}; "
            f"{len(self.values)} rounds)"
        )


def verdict(value: float, *, at_most: float | None = None, at_least: float | None = None,
            unit: str = "x") -> str:  # fmt: skip
    """``"target <= 1.3x: met"`` (or ``MISSED``) for a median against its target."""
    if at_most is not None:
        return f"target <= {at_most:g}{unit}: {'met' if value <= at_most else 'MISSED'}"
    if at_least is not None:
        return f"target >= {at_least:,g}{unit}: {'met' if value >= at_least else 'MISSED'}"
    raise ValueError("give at_most= or at_least=")


@dataclass
class Timings:
    """Seconds per round for each variant, in round order."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, top: str, bottom: str) -> Ratio:
        """``top``'s time over ``bottom``'s, round by round."""
        pairs = zip(self.seconds[top], self.seconds[bottom], strict=True)
        return Ratio(tuple(a / b for a, b in pairs), top=top, bottom=bottom)

    def rate(self, name: str, units: float, unit: str) -> Rate:
        """``units`` of work over ``name``'s time, round by round."""
        return Rate(tuple(units / s for s in self.seconds[name]), name=name, unit=unit)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def rounds(self) -> int:
        return min((len(v) for v in self.seconds.values()), default=0)


def interleave(
    variants: Mapping[str, Callable[[], float | None]],
    *,
    rounds: int,
    warmup: int = 1,
) -> Timings:
    """Time every variant once per round, rotating the order each round.

    Parameters
    ----------
    variants : mapping of name to callable
        Each call is one unit of work; it may return the seconds to count.
    rounds : int
        Measured rounds (each variant runs ``rounds`` times).
    warmup : int
        Untimed rounds first (imports, caches, allocator, JIT paths).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = Timings({name: [] for name in names})
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            counted = variants[name]()
            elapsed = time.perf_counter() - start
            timings.seconds[name].append(elapsed if counted is None else float(counted))
    return timings
