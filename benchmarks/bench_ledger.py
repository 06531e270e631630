"""The privacy-budget ledger against its anchors: tightness, check latency, throughput.

(a) The mixed workload of DESIGN.md (DP-SGD q=256/60000, σ=1.1, 2344 steps;
    20 Laplace queries of ε=0.1; 5 Gaussian queries σ=10; δ=1e-5) under a naive
    sum, diffprivlib's ``BudgetAccountant`` (basic, and with slack), Opacus's RDP
    accountant (where it can represent the events) and privml's ledger, in the
    same run, with ratios to the naive sum. The ledger's admission figure is its
    privacy filter's (valid when each release is chosen after seeing earlier
    answers); the single-order RDP and the PLD figures beside it hold only for a
    sequence fixed in advance and are printed for comparison.
(b) Check latency with 1,000 events already recorded (every check is decided
    by the filter from running tallies; what_if and the status report).
(c) Committed charges per second on SQLite, one process and 4 concurrent ones.

(a) is no timing: every figure is computed by the accountants from fixed parameters, the
same on every run. (b) and (c) time in interleaved rounds (``_rounds.interleave``, after
one warm-up round, in a rotated order): in (b) a round makes a batch of each call
(what_if, charge, status report) and the per-round rate is quoted with its spread, the
latency median and p95 over all calls beside it; in (c) a round runs one process, then 4
(rotated), each charging ``--charges`` times, and the figure quoted last is the median of
the per-round throughput ratio 4 processes / 1, with its quartiles, extremes and rounds.

    .venv/bin/python benchmarks/bench_ledger.py [--events 1000] [--charges 250] [--rounds 5]
        [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, load_average, pin_threads

pin_threads()

import pandas as pd  # noqa: E402
from dp_accounting import dp_event as de  # noqa: E402
from dp_accounting.pld import PLDAccountant  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402

import privml  # noqa: E402
from privml.accounting import PrivacyEvent  # noqa: E402

DELTA, Q, SIGMA, STEPS = 1e-5, 256 / 60000, 1.1, 2344
nan = float("nan")
SCHEMA = privml.Schema({"x": privml.Field.numeric(bounds=(0, 10))})


def new_vault(folder: Path, key: bytes, **budgets: tuple[float, float]) -> privml.Vault:
    vault = privml.Vault.create(folder, key=key, actor="bench")
    for name, (epsilon, delta) in budgets.items():
        budget = privml.Budget(epsilon=epsilon, delta=delta)
        vault.add_dataset(name, pd.DataFrame({"x": [1.0]}), schema=SCHEMA, budget=budget)
    return vault


def mixed_events() -> list[PrivacyEvent]:
    sgd = PrivacyEvent.dp_sgd(noise_multiplier=SIGMA, batch_size=256, n=60000, steps=STEPS)
    laplace = [PrivacyEvent.laplace(epsilon=0.1) for _ in range(20)]
    return [sgd, *laplace, *[PrivacyEvent.gaussian(sigma=10.0) for _ in range(5)]]


def own_epsilon(event: de.DpEvent, delta: float) -> float:
    """What a release would claim on its own: dp_accounting's tightest figure."""
    rdp, pld = RdpAccountant(), PLDAccountant(value_discretization_interval=1e-4)
    rdp.compose(event)
    pld.compose(event)
    return min(rdp.get_epsilon(delta), pld.get_epsilon(delta))


def tightness(folder: Path, key: bytes) -> None:
    from diffprivlib.accountant import BudgetAccountant

    sgd = de.SelfComposedDpEvent(de.PoissonSampledDpEvent(Q, de.GaussianDpEvent(SIGMA)), STEPS)
    gauss = de.GaussianDpEvent(10.0)

    def spends(delta_each: float) -> list[tuple[float, float]]:
        out = [(own_epsilon(sgd, delta_each), delta_each)]
        out += [(0.1, 0.0)] * 20
        return out + [(own_epsilon(gauss, delta_each), delta_each)] * 5

    basic = spends(DELTA / 6)  # 6 releases need a δ: split it evenly
    naive = sum(e for e, _ in basic)
    dpl_basic = BudgetAccountant(epsilon=float("inf"), delta=DELTA, spent_budget=basic).total()
    slack = DELTA / 2
    with_slack = spends((DELTA - slack) / 6)
    dpl_slack = BudgetAccountant(
        epsilon=float("inf"), delta=DELTA, slack=slack, spent_budget=with_slack
    ).total()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from opacus.accountants import RDPAccountant

    opacus = RDPAccountant()
    opacus.history = [(SIGMA, Q, STEPS), (10.0, 1.0, 5)]  # Laplace: not representable
    opacus_eps = opacus.get_epsilon(DELTA) + 20 * 0.1  # Laplace added by basic composition

    with new_vault(folder, key, mixed=(10.0, DELTA)) as vault:  # room for the whole workload
        for i, event in enumerate(mixed_events()):
            vault.ledger.charge("mixed", event=event, principal=f"p{i % 3}", purpose="bench")
        status = vault.budget("mixed")
    one_order = RdpAccountant()  # the best single order, picked after the fact
    for event in mixed_events():
        one_order.compose(event.dp_event)
    rows = [
        ("naive sum (each release's own ε, δ split 6 ways)", naive),
        ("diffprivlib BudgetAccountant, basic", dpl_basic[0]),
        (f"diffprivlib BudgetAccountant, slack={slack:g}", dpl_slack[0]),
        ("Opacus RDP (DP-SGD + Gaussians) + Laplace summed", opacus_eps),
        ("RDP, best order after the fact (fixed sequence)", one_order.get_epsilon(DELTA)),
        ("privml fixed-sequence PLD (not for admission)", status.epsilon_fixed_sequence or nan),
        (f"privml ledger, admission ({status.method.upper()} filter)", status.epsilon_spent),
    ]
    print(f"(a) mixed workload at δ={DELTA:g}: ε and ratio to the naive sum")
    for label, eps in rows:
        print(f"    {label:<52} ε={eps:6.3f}  ratio {eps / naive:5.3f}")


def latency(folder: Path, key: bytes, events: int, rounds: int, repeat: int = 200) -> None:
    with new_vault(folder, key, big=(1e6, DELTA), tight=(3.0, DELTA)) as vault:
        kinds = [
            PrivacyEvent.laplace(epsilon=0.01),
            PrivacyEvent.gaussian(sigma=50.0),
            PrivacyEvent.dp_sgd(noise_multiplier=2.0, sample_rate=0.001, steps=10),
            PrivacyEvent.generic(epsilon=0.01),
        ]
        start = time.perf_counter()
        for i in range(events):
            vault.ledger.charge("big", event=kinds[i % 4], principal=f"p{i % 7}", purpose="b")
        setup = time.perf_counter() - start
        for i, event in enumerate(mixed_events()):
            vault.ledger.charge("tight", event=event, principal=f"p{i % 3}", purpose="b")
        probe = PrivacyEvent.gaussian(sigma=50.0)
        calls: dict[str, list[float]] = {"what_if": [], "charge": [], "report": []}
        actions: dict[str, tuple[int, Callable[[], Any]]] = {
            "what_if": (repeat, lambda: vault.ledger.what_if("big", probe, principal="p1",
                                                            purpose="b")),
            "charge": (repeat // 2, lambda: vault.ledger.charge("big", event=probe,
                                                               principal="p1", purpose="b")),
            # filter figures, and the fixed-sequence PLD (cached)
            "report": (max(repeat // 20, 1), lambda: vault.budget("tight")),
        }  # fmt: skip

        def batch(name: str) -> Callable[[], float]:
            count, action = actions[name]

            def run() -> float:
                seconds = []
                for _ in range(count):
                    t = time.perf_counter()
                    action()
                    seconds.append(time.perf_counter() - t)
                calls[name].extend(seconds)
                return sum(seconds) / count  # seconds per call

            return run

        times = interleave({name: batch(name) for name in actions}, rounds=rounds)
        for name, (count, _) in actions.items():
            del calls[name][:count]  # the warm-up round's

    def ms(xs: list[float]) -> str:
        p95 = sorted(xs)[int(0.95 * len(xs))]
        return f"median {1e3 * statistics.median(xs):6.2f} ms, p95 {1e3 * p95:6.2f} ms"

    print(f"(b) check latency with {events} events recorded (set up at {events / setup:.0f}/s)")
    print(f"    charge (filter check + commit)           {ms(calls['charge'])}"
          "  (target: median <= 20 ms)")  # fmt: skip
    print(f"    what_if (the same check, nothing written) {ms(calls['what_if'])}")
    print(f"    budget report (26 events, PLD cached)    {ms(calls['report'])}")
    print(f"    per round: charge {times.rate('charge', 1, 'calls')}")
    print(f"               what_if {times.rate('what_if', 1, 'calls')}")
    print(f"               report {times.rate('report', 1, 'calls')}")


def _worker(folder: str, key: bytes, charges: int, start: Any, done: Any) -> None:
    with privml.Vault.open(folder, key=key) as vault:
        event = PrivacyEvent.laplace(epsilon=0.001)
        start.wait()
        for _ in range(charges):
            vault.ledger.charge("d", event=event, principal="w", purpose="bench")
    done.put(charges)


def throughput(folder: Path, key: bytes, charges: int, rounds: int) -> None:
    with new_vault(folder, key, d=(1e6, 0.0)):
        pass
    ctx = multiprocessing.get_context("fork")
    counted = 0

    def processes(workers: int) -> Callable[[], float]:
        def run() -> float:
            nonlocal counted
            start, done = ctx.Event(), ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(str(folder), key, charges, start, done))
                for _ in range(workers)
            ]
            for p in procs:
                p.start()
            time.sleep(1.0)  # let every worker open the vault
            t = time.perf_counter()
            start.set()
            total = sum(done.get() for _ in procs)
            elapsed = time.perf_counter() - t
            for p in procs:
                p.join()
            counted += total
            return elapsed / total  # seconds per committed charge

        return run

    times = interleave({"1 process": processes(1), "4 processes": processes(4)}, rounds=rounds)
    with privml.Vault.open(folder, key=key) as vault:
        assert vault.audit.verify().ok
        assert vault.budget("d").committed == counted
    print("(c) committed charges/s on SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE)")
    print(f"    1 process:   {times.rate('1 process', 1, 'charges')}")
    print(f"    4 processes: {times.rate('4 processes', 1, 'charges')}")
    ratio = times.ratio("1 process", "4 processes")  # seconds per charge, so 4 over 1
    print(f"    throughput 4 processes / 1 (quoted): {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--charges", type=int, default=250, help="per process in (c)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (b) and (c)")
    parser.add_argument("--quick", action="store_true", help="200 events, 50 charges, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.events, args.charges, args.rounds = 200, 50, 2
    print(f"1 thread; load average {load_average()}")
    key = privml.generate_key()
    with tempfile.TemporaryDirectory(prefix="privml-bench-") as tmp:
        tightness(Path(tmp) / "a", key)
        latency(Path(tmp) / "b", key, args.events, args.rounds)
        throughput(Path(tmp) / "c", key, args.charges, args.rounds)


if __name__ == "__main__":
    main()
