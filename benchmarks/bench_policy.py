"""Policy decisions per second, and the cost of rendering modes on a large read.

(a) Column decisions per second with 2,000 grants over a 50-column dataset,
    privml's compiled model vs pycasbin (the anchor, if installed) on the same rules.
(b) ``session.read`` of 1,000,000 rows with raw, pseudonymized and masked
    columns vs a raw read of the same columns, same vault, same run.

Each round of (a) decides every request once (and pycasbin, if installed, gets the
same number of seconds); each round of (b) reads once as each reader, in a rotated
order. After one warm-up round, the figures quoted are the median of the per-round
rate and of the per-round ratio mixed / raw, with quartiles, extremes and rounds.

    .venv/bin/python benchmarks/bench_policy.py [--rows 1000000] [--rounds 15] [--read-rounds 9]
    (pip install pycasbin to include the anchor in (a))
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, pin_threads, verdict

pin_threads()

import privml  # noqa: E402
from privml.policy import MODES, Grant, PolicyModel  # noqa: E402

DATASET = "claims"
COLUMNS = {f"c{i:02d}": (f"tag{i % 5}",) for i in range(50)}  # column -> its tags
ROLES = [f"role{i}" for i in range(20)]
PURPOSES = {f"purpose{i}": (f"purpose{i // 2}" if i >= 2 else None) for i in range(10)}
PRINCIPALS = {f"user{i}": tuple(random.Random(i).sample(ROLES, 3)) for i in range(200)}


def make_grants(n: int = 2000) -> list[Grant]:
    rng = random.Random(1)
    grants = []
    for i in range(n):
        by_role = rng.random() < 0.7
        kind = rng.random()
        grants.append(
            Grant(
                f"g{i}",
                "deny" if rng.random() < 0.05 else "allow",
                DATASET if rng.random() < 0.8 else "other",
                rng.choice(list(PURPOSES)),
                rng.choice(MODES[:-1]),
                role=rng.choice(ROLES) if by_role else None,
                principal=None if by_role else rng.choice(list(PRINCIPALS)),
                columns=frozenset(rng.sample(list(COLUMNS), 5)) if kind < 0.5 else None,
                tags=frozenset({f"tag{rng.randrange(5)}"}) if 0.5 <= kind < 0.8 else None,
            )
        )
    return [g if g.effect == "allow" else _as_deny(g) for g in grants]


def _as_deny(g: Grant) -> Grant:
    return Grant(g.grant_id, "deny", g.dataset, g.purpose, "deny", role=g.role,
                 principal=g.principal, columns=g.columns, tags=g.tags)  # fmt: skip


def requests(n: int) -> list[tuple[str, str]]:
    rng = random.Random(2)
    return [(rng.choice(list(PRINCIPALS)), rng.choice(list(PURPOSES))) for _ in range(n)]


def bench_privml(grants: list[Grant], reqs: list[tuple[str, str]], rounds: int) -> Timings:
    """Seconds per round to decide every request (the model is built once, untimed), with
    the rule applied grant by grant for each column beside it: a load-proof in-run anchor."""
    model = PolicyModel(grants, parents=PURPOSES, roles=PRINCIPALS, policy_hash="bench")
    for principal, purpose in reqs[:100]:  # both sides reach the same decisions
        decided = model.decide(principal, purpose, DATASET, COLUMNS)
        same = {c: (d.mode, d.grant_ids) for c, d in decided.items()}
        assert same == grant_by_grant(model, principal, purpose)

    def decide_all() -> None:
        for principal, purpose in reqs:
            model.decide(principal, purpose, DATASET, COLUMNS)

    def rule_all() -> None:
        for principal, purpose in reqs:
            grant_by_grant(model, principal, purpose)

    return interleave({"privml": decide_all, "grant by grant": rule_all}, rounds=rounds)


def grant_by_grant(model: PolicyModel, principal: str, purpose: str) -> dict[str, tuple]:
    """The decision rule written out: every live candidate grant tried on every column."""
    moment = datetime.now().astimezone()
    live = [g for g in model.candidates(principal, purpose, DATASET) if g.live(moment)]
    out = {}
    for column, tags in COLUMNS.items():
        matching = [g for g in live if g.selects(column, tags)]
        denies = [g for g in matching if g.effect == "deny" or g.mode == "deny"]
        if denies:
            deciding, mode = denies, "deny"
        elif matching:
            mode = min((g.mode for g in matching), key=MODES.index)
            deciding = [g for g in matching if g.mode == mode]
        else:
            deciding, mode = [], "deny"
        out[column] = (mode, tuple(sorted(g.grant_id for g in deciding)))
    return out


CASBIN_MODEL = """
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act, eft
[role_definition]
g = _, _
g2 = _, _
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = g(r.sub, p.sub) && g2(r.obj, p.obj) && r.act == p.act
"""


def bench_casbin(grants: list[Grant], reqs: list[tuple[str, str]], budget_s: float) -> float | None:
    try:
        import casbin
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.conf"
        path.write_text(CASBIN_MODEL)
        enforcer = casbin.Enforcer(str(path))
    for name, roles in PRINCIPALS.items():
        for role in roles:
            enforcer.add_grouping_policy(name, role)
    for column, tags in COLUMNS.items():  # objects: dataset.column, grouped under dataset.tag
        for tag in tags:
            enforcer.add_named_grouping_policy("g2", f"{DATASET}.{column}", f"{DATASET}.{tag}")
        enforcer.add_named_grouping_policy("g2", f"{DATASET}.{column}", f"{DATASET}.*")
    for g in grants:
        subject = g.principal or g.role
        targets = (sorted(g.columns) if g.columns is not None
                   else [f"{t}" for t in sorted(g.tags)] if g.tags is not None
                   else ["*"])  # fmt: skip
        for target in targets:
            enforcer.add_policy(subject, f"{g.dataset}.{target}", g.purpose, g.effect)
    done, start = 0, time.perf_counter()
    for principal, purpose in reqs:
        for column in COLUMNS:
            enforcer.enforce(principal, f"{DATASET}.{column}", purpose)
            done += 1
        if time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def bench_read(rows: int, rounds: int) -> Timings:
    from bench_storage import SCHEMA, make_frame

    frame = make_frame(rows)
    columns = ["age", "income", "diagnosis", "city", "visits", "score", "weight"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        privml.Vault.create(Path(tmp) / "v", key=privml.generate_key()) as vault,
    ):
        vault.add_dataset("bench", frame, schema=SCHEMA, budget=privml.Budget(epsilon=1))
        vault.add_purpose("bench", description="Benchmark", lawful_basis="none: synthetic")
        vault.add_principal("raw-reader")
        vault.add_principal("mixed-reader")
        vault.grant(principal="raw-reader", dataset="bench", purpose="bench", mode="raw")
        grant = {"principal": "mixed-reader", "dataset": "bench", "purpose": "bench"}
        vault.grant(**grant, mode="raw", columns=["income", "visits", "score"])
        vault.grant(**grant, mode="pseudonymized", columns=["diagnosis", "city"])
        vault.grant(**grant, mode="masked", columns=["age", "weight"])

        def reader(who: str) -> Callable[[], float]:
            def read() -> float:
                session = vault.session(who, purpose="bench")  # opening it is not the read
                start = time.perf_counter()
                out = session.read("bench", columns=columns)
                elapsed = time.perf_counter() - start
                assert len(out) == rows
                return elapsed

            return read

        return interleave(
            {"raw": reader("raw-reader"), "mixed": reader("mixed-reader")}, rounds=rounds
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of (a)")
    parser.add_argument("--read-rounds", type=int, default=9, help="rounds of (b)")
    args = parser.parse_args()
    grants = make_grants()
    reqs = requests(2000)
    decisions = len(reqs) * len(COLUMNS)
    model_times = bench_privml(grants, reqs, args.rounds)
    ours = model_times.rate("privml", decisions, "decisions")
    rule = model_times.rate("grant by grant", decisions, "decisions")
    print(f"(a) 2,000 grants, 50 columns, {len(reqs):,} requests x 50 column decisions, 1 thread")
    print(f"    privml compiled model (quoted): {ours}")
    print(f"    {verdict(ours.median, at_least=100_000, unit=' decisions/s')}")
    print(f"    the rule grant by grant (in-run anchor): {rule}")
    print(f"    privml / grant by grant: {model_times.ratio('grant by grant', 'privml')}")
    theirs = bench_casbin(grants, reqs, budget_s=10.0)
    if theirs is None:
        print("    pycasbin: not installed (pip install pycasbin to compare)")
    else:
        print(f"    pycasbin (anchor, one run): {theirs:,.0f} decisions/s")
        print(f"    privml / pycasbin: {ours.median / theirs:,.0f}x")
    times = bench_read(args.rows, args.read_rounds)
    print(f"(b) session.read of {args.rows:,} rows x 7 columns")
    print(f"    all raw                          median {times.median('raw'):6.3f} s")
    print(f"    3 raw, 2 pseudonymized, 2 masked median {times.median('mixed'):6.3f} s")
    ratio = times.ratio("mixed", "raw")
    print(f"    mixed / raw (quoted): {ratio}  {verdict(ratio.median, at_most=1.5)}")


if __name__ == "__main__":
    main()
