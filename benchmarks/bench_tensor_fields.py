"""Images as one tensor field against one numeric column per pixel: write and read cost.

The same images (synthetic 28x28 uint8, seeded; nothing is downloaded) go into a vault
twice per round: as ``Field.tensor(shape=(28, 28), dtype="uint8", bounds=(0, 255))``, and
as 784 ``Field.integer(bounds=(0, 255))`` columns (how an image had to be stored before
tensor fields). Each side is validated strictly, encrypted (Parquet modular encryption,
one data key per column) and written, then read back raw through a session. Rounds
alternate which side goes first; the table gives, per step, the median and spread (min,
max) of the per-round ratio tensor / per-pixel, and each side's median seconds.

Run::

    python benchmarks/bench_tensor_fields.py --rows 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import privml
from privml import Budget, Field, Schema

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


def _one(folder: Path, frame: pd.DataFrame, schema: Schema) -> tuple[float, float]:
    vault = privml.Vault.create(folder, key=privml.generate_key())
    try:
        start = time.perf_counter()
        vault.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=1, delta=1e-6))
        written = time.perf_counter() - start
        vault.add_purpose("bench", description="Benchmark", lawful_basis="consent")
        vault.add_principal("a", roles=[])
        vault.grant(principal="a", dataset="d", purpose="bench", mode="raw")
        start = time.perf_counter()
        got = vault.session("a", purpose="bench").read("d")
        read = time.perf_counter() - start
        assert len(got) == len(frame)
        return written, read
    finally:
        vault.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tensor, tensor_schema, pixels, pixel_schema = _frames(args.rows)
    times: dict[str, list[tuple[float, float]]] = {"tensor": [], "pixels": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["tensor", "pixels"] if r % 2 == 0 else ["pixels", "tensor"]
            for side in order:
                frame, schema = (
                    (tensor, tensor_schema) if side == "tensor" else (pixels, pixel_schema)
                )
                times[side].append(_one(Path(tmp) / f"{side}{r}", frame, schema))
    print(f"{args.rows:,} images of {SIDE}x{SIDE} uint8, {args.rounds} rounds")
    print(f"{'step':<8}{'tensor s':>10}{'pixels s':>10}{'ratio median':>14}{'min':>8}{'max':>8}")
    for i, step in enumerate(("write", "read")):
        ratios = [t[i] / p[i] for t, p in zip(times["tensor"], times["pixels"], strict=True)]
        t_med = statistics.median(t[i] for t in times["tensor"])
        p_med = statistics.median(p[i] for p in times["pixels"])
        print(
            f"{step:<8}{t_med:>10.3f}{p_med:>10.3f}{statistics.median(ratios):>14.3f}"
            f"{min(ratios):>8.3f}{max(ratios):>8.3f}"
        )


if __name__ == "__main__":
    main()
