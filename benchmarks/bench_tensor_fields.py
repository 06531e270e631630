"""Images as one tensor field against one numeric column per pixel: write and read cost.

The same images (synthetic 28x28 uint8, seeded; nothing is downloaded) go into a vault
twice per round: as ``Field.tensor(shape=(28, 28), dtype="uint8", bounds=(0, 255))``, and
as 784 ``Field.integer(bounds=(0, 255))`` columns (how an image had to be stored before
tensor fields). Each side is validated strictly, encrypted (Parquet modular encryption,
one data key per column) and written into a fresh vault (``add_dataset``), and read
back raw through a session from a vault written before the rounds. Every round times the
four (write and read, each side) once, in a rotated order, after one warm-up round
(``_rounds.interleave``); printed per step: each side's median seconds and the median of
the per-round ratio tensor / per-pixel with its quartiles, extremes and rounds.

Run::

    python benchmarks/bench_tensor_fields.py [--rows 20000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import privml  # noqa: E402
from privml import Budget, Field, Schema  # noqa: E402

SIDE = 28


def _frames(rows: int) -> tuple[pd.DataFrame, Schema, pd.DataFrame, Schema]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (rows, SIDE, SIDE), dtype=np.uint8)
    tensor = pd.DataFrame({"image": list(images), "label": rng.integers(0, 10, rows)})
    tensor_schema = Schema(
        {
            "image": Field.tensor(shape=(SIDE, SIDE), dtype="uint8", bounds=(0, 255)),
            "label": Field.categorical(categories=list(range(10))),
        }
    )
    pixels = pd.DataFrame(images.reshape(rows, -1).astype(np.int64))
    pixels.columns = [f"p{i}" for i in range(SIDE * SIDE)]
    pixels["label"] = tensor["label"]
    pixel_schema = Schema(
        {
            **{c: Field.integer(bounds=(0, 255)) for c in pixels.columns[:-1]},
            "label": Field.categorical(categories=list(range(10))),
        }
    )
    return tensor, tensor_schema, pixels, pixel_schema


def _write(folder: Path, frame: pd.DataFrame, schema: Schema) -> tuple[privml.Vault, float]:
    """A new vault holding ``frame`` as dataset "d", readable by "a"; seconds of the write."""
    vault = privml.Vault.create(folder, key=privml.generate_key())
    try:
        start = time.perf_counter()
        vault.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=1, delta=1e-6))
        written = time.perf_counter() - start
        vault.add_purpose("bench", description="Benchmark", lawful_basis="consent")
        vault.add_principal("a", roles=[])
        vault.grant(principal="a", dataset="d", purpose="bench", mode="raw")
    except BaseException:
        vault.close()
        raise
    return vault, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 images, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 2_000, 3
    tensor, tensor_schema, pixels, pixel_schema = _frames(args.rows)
    sides = {"tensor": (tensor, tensor_schema), "pixels": (pixels, pixel_schema)}
    with tempfile.TemporaryDirectory() as tmp:
        count = itertools.count()

        def write(side: str) -> Callable[[], float]:
            def run() -> float:
                vault, written = _write(Path(tmp) / f"{side}{next(count)}", *sides[side])
                vault.close()
                return written

            return run

        readable = {side: _write(Path(tmp) / side, *sides[side])[0] for side in sides}

        def read(side: str) -> Callable[[], float]:
            def run() -> float:
                session = readable[side].session("a", purpose="bench")
                start = time.perf_counter()
                got = session.read("d")
                elapsed = time.perf_counter() - start
                assert len(got) == args.rows
                return elapsed

            return run

        try:
            variants = {f"{step} {side}": (write if step == "write" else read)(side)
                        for step in ("write", "read") for side in sides}  # fmt: skip
            times = interleave(variants, rounds=args.rounds)
        finally:
            for vault in readable.values():
                vault.close()
    print(f"{args.rows:,} images of {SIDE}x{SIDE} uint8, 1 thread; load average {load_average()}")
    for step in ("write", "read"):
        tensor_s, pixels_s = times.median(f"{step} tensor"), times.median(f"{step} pixels")
        print(f"{step:<6} tensor {tensor_s:7.3f} s, per-pixel {pixels_s:7.3f} s (medians)")
    for step in ("write", "read"):
        ratio = times.ratio(f"{step} tensor", f"{step} pixels")
        print(f"{step} tensor / per-pixel (quoted): {ratio}")


if __name__ == "__main__":
    main()
