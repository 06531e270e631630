"""DP group-by at person level: privml vs OpenDP's Polars context, in one run.

Data (generated here, seeded): ``--rows`` rows (2,000,000) of ``--people``
people (200,000), each person with a geometric number of rows (mean
rows/people). Columns: ``person_id``; ``ward``, a public domain of 50 keys (a
person's rows mostly in one home ward); ``zip``, about 200,000 possible codes
with no declared domain, long-tailed (a few codes shared by many people, many
held by one or a few), codes randomly relabelled so that their order says
nothing about their size; ``stay`` in [0, 30].

Queries, each at the same ε on both sides (δ for partition selection only), each
a separate release with its own budget:

* ``ward_count``: count per ward, the 50 keys public;
* ``ward_mean``: mean of ``stay`` per ward, the 50 keys public;
* ``zip_count``: count per zip with partition selection (keys not public).

The privacy unit is the same on both sides: one person (``person_id``), at most
``k`` rows per person (``--k``, 10) kept by a random choice, and for the zip
query at most ``g`` zips per person (``--groups``, 3).

* privml: ``vault.add_dataset(..., privacy_unit="person_id", max_rows_per_unit=k)``
  and ``session.dp.groupby(dataset, by=[...], max_groups_per_unit=g)``.
* OpenDP 0.16: ``dp.unit_of(contributions=1, identifier=pl.col("person_id"))``,
  ``query.truncate_per_group(k)`` (a random k rows per person), public keys
  through ``.with_keys(keys)``, ``dp.len()`` / ``.dp.mean(bounds)``; for the zip
  query ``.truncate_num_groups(g, by=["zip"], keep="first")`` and a
  ``(ε, δ)`` loss, whose threshold OpenDP derives. ``keep="sample"`` fails in
  OpenDP 0.16 with Polars 1.36 (it builds a struct with two fields both named
  after the key: "multiple fields with name 'zip' found"), so ``"first"`` is
  used: it keeps each person's ``g`` smallest codes, an arbitrary choice here
  because codes are randomly relabelled.

OpenDP's mechanisms (read with ``query.summarize()``): counts get discrete
("Integer") Laplace noise of scale k/ε; a mean spends ε/2 on a float-Laplace
sum (scale k·max(|lo|,|hi|)/(ε/2), slightly more for float rounding, which
needs the ``max_length`` margin) and ε/2 on a count (scale k/(ε/2)), and
returns their ratio; partition selection keeps a group whose noisy count is
greater than a threshold T, the smallest integer with
``1 - (1 - P[Z > T - L∞])^L0 <= δ`` (Z the count's discrete Laplace noise,
L∞ = k rows per group, L0 = min(g, k) groups per person), the noise using all of ε.

Tumult Analytics is not measured: it cannot be installed beside privml's
stack. ``pip install --dry-run tmlt.analytics`` with this environment's pins
fails with ResolutionImpossible: "tmlt-analytics 0.21.0 depends on pandas<2 and
>=1.5.0; python_version == "3.11"" (privml runs pandas 3.1), and every release
also needs ``sympy<1.13`` (torch 2.13 requires ``sympy>=1.13.3``), numpy<2 (via
pandas 1.5) and PySpark 3.5 with a JVM. In a venv of its own it would install
(pandas 1.5.3, numpy 1.26.4, pyspark 3.5.9), but a Spark session on 10M rows
would time Spark's start-up and JVM more than the mechanism.

Measured per side, each run in its own subprocess: the median time of one release
(query to result table, context and scale search included; each process makes one
untimed release of each query first), the peak resident memory of that subprocess, and
the mean absolute error per cell against the exact answer on all rows (averaged over the
``--reps`` releases of each round). Sides run in interleaved rounds
(``_rounds.interleave``, each side once per round in a rotated order; a fresh process
warms itself up, so no round is dropped); per query, the figure quoted is the median of
the per-round ratio of release times privml / OpenDP, with its quartiles, extremes and
rounds. Errors and memory are no timing: the data and the exact answers are seeded, the
DP noise is not (OpenDP's and privml's own CSPRNG). ``mae_bounded`` compares counts
with what a uniform random k-row bounding keeps on average, which leaves the
noise and the sampling of the bounding; the zip query reports how many cells
came out, their error, and the error over all true cells (a missing cell
counted as 0).

    .venv/bin/python benchmarks/bench_groupby.py [--rows 2000000] [--people 200000]
        [--rounds 3] [--reps 2] [--epsilon 1.0] [--delta 1e-7] [--quick]
        [--sides opendp,privml,privml-ram]

The default (two sides, 2,000,000 rows) runs in about 5 minutes on 2 cores; the
10,000,000-row scale is ``--rows 10000000 --people 1000000`` (tens of minutes).

Needs ``opendp[polars]==0.16.*`` (polars 1.36). ``--quick`` is 1,000,000 rows
of 100,000 people, 2 rounds of 2 releases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Ratio, interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

WARDS = [f"W{i:02d}" for i in range(1, 51)]
ZIP_SPACE = 200_000
STAY_BOUNDS = (0.0, 30.0)
QUERIES = ("ward_count", "ward_mean", "zip_count")


# ----------------------------------------------------------------------------- data
def synthetic(rows: int, people: int, seed: int = 0) -> pl.DataFrame:
    """``rows`` rows of ``people`` people, seeded (see the module docstring)."""
    rng = np.random.default_rng(seed)
    per_person = rng.geometric(people / rows, people)
    owner = np.repeat(np.arange(people, dtype=np.int64), per_person)[:rows]
    if owner.size < rows:
        owner = np.concatenate([owner, rng.integers(0, people, rows - owner.size)])
    owner = owner[rng.permutation(rows)]
    ward_weight = rng.dirichlet(np.full(50, 5.0))
    home_ward = rng.choice(50, people, p=ward_weight)
    ward = np.where(rng.random(rows) < 0.8, home_ward[owner], rng.choice(50, rows, p=ward_weight))
    relabel = rng.permutation(ZIP_SPACE)

    def zipf(n: int) -> np.ndarray:
        return relabel[np.minimum(rng.zipf(1.15, n), ZIP_SPACE) - 1]

    home_zip = zipf(people)
    zip_code = np.where(rng.random(rows) < 0.9, home_zip[owner], zipf(rows))
    ward_base = rng.uniform(2.0, 8.0, 50)
    stay = np.clip(rng.gamma(2.0, ward_base[ward] / 2.0), *STAY_BOUNDS)
    zip_labels = pl.Series([f"{z:06d}" for z in range(ZIP_SPACE)])
    return pl.DataFrame(
        {
            "person_id": owner,
            "ward": pl.Series(WARDS).gather(ward),
            "zip": zip_labels.gather(zip_code),
            "stay": stay,
        }
    )


def exact_answers(frame: pl.DataFrame, k: int) -> dict[str, pl.DataFrame]:
    """Exact answers on all rows; counts also as expected after a random k-row bounding."""
    keep = frame.select((k / pl.len().over("person_id")).clip(upper_bound=1.0).alias("w"))
    weighted = frame.with_columns(keep["w"])
    ward = weighted.group_by("ward").agg(
        pl.len().alias("exact"),
        pl.col("w").sum().alias("bounded"),
        pl.col("stay").mean().alias("mean"),
    )
    zips = frame.group_by("zip").agg(pl.len().alias("exact"))
    return {"ward": ward.sort("ward"), "zip": zips}


# ----------------------------------------------------------------------------- sides
def run_opendp(path: Path, args: argparse.Namespace) -> dict[str, Callable[[], pl.DataFrame]]:
    """The three releases through OpenDP's Polars context; each returns ``key, value``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    unit = dp.unit_of(contributions=1, identifier=pl.col("person_id"))
    keys = pl.DataFrame({"ward": WARDS})

    def context(delta: float = 0.0) -> Any:
        loss = (
            dp.loss_of(epsilon=args.epsilon, delta=delta)
            if delta
            else dp.loss_of(epsilon=args.epsilon)
        )
        return dp.Context.compositor(
            data=pl.scan_parquet(path),
            privacy_unit=unit,
            privacy_loss=loss,
            split_evenly_over=1,
            margins=[dp.polars.Margin(by=["ward"], max_length=args.rows)],
        )

    def ward_count() -> pl.DataFrame:
        query = context().query().truncate_per_group(args.k).group_by("ward")
        out = query.agg(dp.len(signed=True).alias("value")).with_keys(keys)
        return out.release().collect()

    def ward_mean() -> pl.DataFrame:
        stay = pl.col("stay").fill_null(0.0).dp.mean(STAY_BOUNDS).alias("value")
        query = context().query().truncate_per_group(args.k).group_by("ward")
        return query.agg(stay).with_keys(keys).release().collect()

    def zip_count() -> pl.DataFrame:
        query = context(args.delta).query().truncate_per_group(args.k)
        query = query.truncate_num_groups(args.groups, by=["zip"], keep="first")
        return query.group_by("zip").agg(dp.len(signed=True).alias("value")).release().collect()

    return {"ward_count": ward_count, "ward_mean": ward_mean, "zip_count": zip_count}


def privml_store(path: Path, folder: Path, args: argparse.Namespace) -> str:
    """Store the data in a new vault (person-level unit, k rows); return its key."""
    import privml
    from privml import Budget, Field, Schema

    key = privml.generate_key()
    schema = Schema(
        {
            "person_id": Field.identifier(pseudonymize=False),
            "ward": Field.categorical(categories=WARDS),
            "zip": Field.text(),
            "stay": Field.numeric(bounds=STAY_BOUNDS),
        }
    )
    with privml.Vault.create(folder, key=key) as vault:
        vault.add_dataset(
            "stays",
            path,  # streamed from the Parquet file, chunk by chunk
            schema=schema,
            budget=Budget(epsilon=1e4, delta=1e-2),
            privacy_unit="person_id",
            max_rows_per_unit=args.k,
        )
        vault.add_purpose("bench", description="Benchmark", lawful_basis="none (synthetic data)")
        vault.add_principal("bench", roles=["analyst"])
        vault.grant(role="analyst", dataset="stays", purpose="bench", mode="dp_aggregate")
    return key.decode() if isinstance(key, bytes) else str(key)


def run_privml(
    folder: Path, args: argparse.Namespace, *, in_ram: bool = False
) -> dict[str, Callable[[], pl.DataFrame]]:
    """The three releases through ``session.dp.groupby``."""
    import privml

    vault = privml.Vault.open(folder, key=os.environ["PRIVML_VAULT_KEY"])
    if in_ram:  # read each version whole, as the Polars side holds its frame
        vault.memory_limit = 64 * 1024**3
    session = vault.session("bench", purpose="bench")

    def table(result: Any, by: str) -> pl.DataFrame:
        return pl.from_pandas(result[[by, "value"]])

    def ward_count() -> pl.DataFrame:
        return table(session.dp.groupby("stays", by=["ward"]).count(epsilon=args.epsilon), "ward")

    def ward_mean() -> pl.DataFrame:
        grouped = session.dp.groupby("stays", by=["ward"])
        return table(grouped.mean("stay", epsilon=args.epsilon), "ward")

    def zip_count() -> pl.DataFrame:
        grouped = session.dp.groupby("stays", by=["zip"], max_groups_per_unit=args.groups)
        # one threshold on the rows per key, the whole ε: OpenDP's grouped count
        count = grouped.count(epsilon=args.epsilon, delta=args.delta, select_on="rows")
        return table(count, "zip")

    return {"ward_count": ward_count, "ward_mean": ward_mean, "zip_count": zip_count}


# ----------------------------------------------------------------------------- metrics
def errors(query: str, out: pl.DataFrame, exact: dict[str, pl.DataFrame]) -> dict[str, float]:
    """Mean absolute error per cell of one release."""
    if query == "zip_count":
        truth = exact["zip"]
        joined = truth.join(
            out.select("zip", pl.col("value").cast(pl.Float64)), on="zip", how="left"
        )
        released = joined.filter(pl.col("value").is_not_null())
        gap = (pl.col("value") - pl.col("exact")).abs().mean()
        return {
            "cells": float(out.height),
            "mae": float(released.select(gap).item() or 0.0),
            "mae_all": float(
                joined.select((pl.col("value").fill_null(0) - pl.col("exact")).abs().mean()).item()
            ),
        }
    joined = exact["ward"].join(out.select("ward", pl.col("value").cast(pl.Float64)), on="ward")
    if joined.height != len(WARDS):
        raise RuntimeError(f"{query}: {joined.height} wards released, expected {len(WARDS)}")
    if query == "ward_mean":
        return {"mae": float(joined.select((pl.col("value") - pl.col("mean")).abs().mean()).item())}
    return {
        "mae": float(joined.select((pl.col("value") - pl.col("exact")).abs().mean()).item()),
        "mae_bounded": float(
            joined.select((pl.col("value") - pl.col("bounded")).abs().mean()).item()
        ),
    }


def worker(args: argparse.Namespace) -> None:
    """One side, in its own process: ``--reps`` releases of each query; JSON to ``--out``."""
    work = Path(args.work)
    exact = {name: pl.read_parquet(work / f"exact_{name}.parquet") for name in ("ward", "zip")}
    if args.worker == "opendp":
        releases = run_opendp(work / "data.parquet", args)
    else:
        releases = run_privml(work / "vault", args, in_ram=args.worker == "privml-ram")
    report: dict[str, Any] = {}
    for query, release in releases.items():
        release()  # untimed: imports, lazy set-up, the first read of the data
        runs = []
        for _ in range(args.reps):
            start = time.perf_counter()
            out = release()
            runs.append({"seconds": time.perf_counter() - start, **errors(query, out, exact)})
        report[query] = runs
    report["peak_mib"] = _peak_mib()
    Path(args.out).write_text(json.dumps(report))


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB.

    Not ``ru_maxrss``: on Linux a child's maxrss starts from its parent's high-water mark at
    fork and survives exec, so every worker would report the parent's peak (the data
    generator's). VmHWM belongs to the process image and starts afresh at exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(side: str, args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one side's worker; its report (with its own peak RSS, MiB)."""
    out = work / f"{side}.json"
    command = [sys.executable, __file__, "--worker", side, "--work", str(work), "--out", str(out)]
    for name in ("rows", "people", "k", "groups", "epsilon", "delta", "reps"):
        command += [f"--{name}", str(getattr(args, name))]
    child = subprocess.Popen(command, env=env)
    _, status, _ = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{side} worker failed with exit code {child.returncode}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    fields = runs[0].keys()
    out = {
        name: statistics.fmean(run[name] for run in runs) for name in fields if name != "seconds"
    }
    out["seconds"] = statistics.median(run["seconds"] for run in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--k", type=int, default=10, help="max rows per person")
    parser.add_argument("--groups", type=int, default=3, help="max zips per person")
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-7)
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows, 100,000 people")
    parser.add_argument(
        "--sides",
        default="opendp,privml",
        help="privml: bounded memory (the vault's default memory_limit, streamed); "
        "privml-ram: memory_limit 64 GiB, each version read whole",
    )
    parser.add_argument(
        "--worker", choices=["opendp", "privml", "privml-ram"], help=argparse.SUPPRESS
    )
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.rows, args.people, args.rounds, args.reps = 1_000_000, 100_000, 2, 2
    sides = [side for side in args.sides.split(",") if side]
    print(f"load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-groupby-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        frame = synthetic(args.rows, args.people)
        frame.write_parquet(work / "data.parquet")
        for name, table in exact_answers(frame, args.k).items():
            table.write_parquet(work / f"exact_{name}.parquet")
        print(
            f"{frame.height:,} rows, {args.people:,} people, {frame['zip'].n_unique():,} zips, "
            f"k={args.k}, g={args.groups}, ε={args.epsilon}, δ={args.delta} "
            f"(data {time.perf_counter() - start:.1f} s)"
        )
        del frame
        env = dict(os.environ)
        if any(side.startswith("privml") for side in sides):
            start = time.perf_counter()
            env["PRIVML_VAULT_KEY"] = privml_store(work / "data.parquet", work / "vault", args)
            print(f"privml vault stored in {time.perf_counter() - start:.1f} s")
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}

        def one(side: str) -> Callable[[], float]:
            def run() -> float:
                report = spawn(side, args, work, env)
                results[side].append(report)
                return sum(_median_seconds(report[q]) for q in QUERIES)  # all three releases

            return run

        interleave({side: one(side) for side in sides}, rounds=args.rounds, warmup=0)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for side, reports in results.items():
        peak = max(report["peak_mib"] for report in reports)
        table[side] = {q: summary([run for r in reports for run in r[q]]) for q in QUERIES}
        for query, row in table[side].items():
            figures = ", ".join(f"{name} {value:.4g}" for name, value in row.items())
            print(f"{side:7s} {query:10s} {figures}, peak {peak:.0f} MiB")
    for side in ("privml", "privml-ram"):
        if {side, "opendp"} <= table.keys():
            for query in QUERIES:
                mine, theirs = table[side][query], table["opendp"][query]
                mae_ratio = mine["mae"] / theirs["mae"] if theirs["mae"] else float("nan")
                print(f"{side}/opendp {query:10s} mae {mae_ratio:.2f}x (no timing)")
            for query in QUERIES:
                ratio = Ratio(
                    tuple(
                        _median_seconds(mine[query]) / _median_seconds(theirs[query])
                        for mine, theirs in zip(results[side], results["opendp"], strict=True)
                    ),
                    top=side,
                    bottom="opendp",
                )
                print(f"{side}/opendp {query:10s} release time (quoted): {ratio}")
    print(f"load average after: {load_average()}")


def _median_seconds(runs: list[dict[str, float]]) -> float:
    return statistics.median(run["seconds"] for run in runs)


if __name__ == "__main__":
    main()
