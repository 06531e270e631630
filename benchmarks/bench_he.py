"""Encrypted inference throughput: the TenSEAL tutorial's way vs privml's packings.

(a) Logistic regression (StandardScaler + LogisticRegression, default C) on
    breast_cancer features tiled to 4,096 rows.
(b) A 30-16-2 MLP with x**2 activation on the same (standardized) rows.

For each: samples/s end to end (client encrypt + serialize, server load +
compute + serialize, client load + decrypt) for one ciphertext per sample (the
tutorial: ``enc_x.dot(w)`` / ``enc_x.mm(W)``, Galois keys, N=8192,
[40, 30, 30, 30, 40], scale 2^30; timed on a subset), privml columns and
privml rows, in the same run, with ratios, agreement with the plaintext model,
request/response/context sizes and key-generation time (untimed: each method's
keys are made before its clock starts). Every round runs the three methods once,
in a rotated order, after one warm-up round of (a); the figures quoted are the median of
the per-round ratio of samples/s to the tutorial's, with quartiles, extremes and
rounds. The table shows the last round.

    .venv/bin/python benchmarks/bench_he.py [--rows 4096] [--baseline-samples 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, pin_threads, verdict

pin_threads()

import numpy as np  # noqa: E402
import tenseal as ts  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import privml.he as he  # noqa: E402

TUTORIAL_SIGMOID = [0.5, 0.197, 0, -0.004]  # the tutorial's fit of sigmoid on [-5, 5]


@dataclass
class Row:
    name: str
    n: int  # samples timed
    samples_per_s: float
    agreement: float
    request: int  # bytes per request (for the rows timed)
    response: int
    context: int
    keygen_s: float
    note: str = ""


def tutorial_context() -> tuple[ts.Context, ts.Context, float, int]:
    """Private and public contexts with Galois keys, keygen seconds, public size."""
    start = time.perf_counter()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[40, 30, 30, 30, 40]
    )
    ctx.global_scale = 2**30
    ctx.generate_galois_keys()
    keygen = time.perf_counter() - start
    public = ctx.serialize(save_secret_key=False)
    return ctx, ts.context_from(public), keygen, len(public)


def per_sample(
    X: np.ndarray, server_fn: Callable[[ts.CKKSVector], ts.CKKSVector], n_out: int
) -> tuple[np.ndarray, float, Row]:
    """The tutorial: one ciphertext per sample. Returns (outputs, seconds, partial row)."""
    ctx, server_ctx, keygen, ctx_size = tutorial_context()
    outputs, request, response = [], 0, 0
    start = time.perf_counter()
    for x in X:
        payload = ts.ckks_vector(ctx, x.tolist()).serialize()  # client
        out = server_fn(ts.ckks_vector_from(server_ctx, payload)).serialize()  # server
        outputs.append(ts.ckks_vector_from(ctx, out).decrypt()[:n_out])  # client
        request, response = request + len(payload), response + len(out)
    seconds = time.perf_counter() - start
    row = Row("tutorial, 1 ciphertext/sample", len(X), len(X) / seconds, 0.0, request, response,
              ctx_size, keygen)  # fmt: skip
    return np.array(outputs), seconds, row


def privml_run(
    model: he.HEModel, X: np.ndarray, packing: str
) -> tuple[he.HEClient, np.ndarray, Row]:
    start = time.perf_counter()
    client = he.HEClient.for_model(model.spec)
    public = client.public_context(packing=packing)  # Galois keys are made here for rows
    keygen = time.perf_counter() - start
    start = time.perf_counter()
    request = client.encrypt(X, packing=packing).to_bytes()  # client
    response = model.predict_encrypted(request, public).to_bytes()  # server
    scores = client.decrypt_scores(response)  # client
    seconds = time.perf_counter() - start
    p = client.parameters
    note = f"N={p.poly_modulus_degree} chain={list(p.coeff_mod_bit_sizes)}"
    if packing == "rows":
        note += f" ({p.slots // (1 << (X.shape[1] - 1).bit_length())} rows/ciphertext)"
    row = Row(f"privml {packing}", len(X), len(X) / seconds, 0.0, len(request), len(response),
              len(public), keygen, note)  # fmt: skip
    return client, scores, row


def print_table(title: str, rows: list[Row]) -> None:
    base = rows[0].samples_per_s
    print(f"\n{title}")
    print(f"{'method':<32}{'samples/s':>11}{'vs tutorial':>13}{'agree':>9}{'req/sample':>12}"
          f"{'resp/sample':>13}{'context':>10}{'keygen':>9}")  # fmt: skip
    for r in rows:
        print(f"{r.name:<32}{r.samples_per_s:>11,.1f}{r.samples_per_s / base:>12,.0f}x"
              f"{100 * r.agreement:>8.1f}%{r.request / r.n:>11,.0f}B{r.response / r.n:>12,.0f}B"
              f"{r.context / 1e6:>8.1f}MB{r.keygen_s:>8.2f}s  {r.note}")  # fmt: skip


def bench_logreg(X_raw: np.ndarray, y: np.ndarray, X_rows: np.ndarray, k: int, rounds: int) -> None:
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_raw, y)
    truth = pipe.predict(X_rows)
    scaler, lr = pipe[0], pipe[1]
    w, b = lr.coef_[0].tolist(), float(lr.intercept_[0])
    Z = scaler.transform(X_rows[:k])  # the tutorial encrypts standardized features

    def server(v: ts.CKKSVector) -> ts.CKKSVector:
        return (v.dot(w) + b).polyval(TUTORIAL_SIGMOID)

    model = he.compile(pipe, calibration=X_raw)
    poly = np.polynomial.polynomial.polyval(scaler.transform(X_rows) @ w + b, TUTORIAL_SIGMOID)
    agree = 100 * np.mean((poly > 0.5) == truth)
    last: dict[str, Row] = {}

    def tutorial() -> float:
        out, seconds, tut = per_sample(Z, server, 1)
        tut.agreement = float(np.mean((out[:, 0] > 0.5) == truth[:k]))
        tut.note = f"(timed on {k}; its sigmoid polynomial agrees on {agree:.1f}% of all rows)"
        last["tutorial"] = tut
        return seconds / k  # seconds per sample

    def ours(packing: str) -> Callable[[], float]:
        def run() -> float:
            client, scores, row = privml_run(model, X_rows, packing)
            labels = client.spec.output.apply(scores, "labels")
            row.agreement = float(np.mean(labels == truth))
            err = np.abs(client.spec.output.shape(scores) - pipe.decision_function(X_rows)).max()
            row.note += f" max logit error {err:.1e}"
            last[packing] = row
            return 1 / row.samples_per_s

        return run

    times = interleave(
        {"tutorial": tutorial, "columns": ours("columns"), "rows": ours("rows")}, rounds=rounds
    )
    rows = [last["tutorial"], last["columns"], last["rows"]]
    print_table(f"(a) logistic regression, breast_cancer tiled to {len(X_rows)} rows", rows)
    print_ratios(times)


def train_mlp(Z: np.ndarray, y: np.ndarray) -> torch.nn.Sequential:
    class Square(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), Square(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    Zt, yt = torch.tensor(Z, dtype=torch.float32), torch.tensor(y)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Zt), yt).backward()
        opt.step()
    return net.eval()


def bench_mlp(X_raw: np.ndarray, y: np.ndarray, X_rows: np.ndarray, k: int, rounds: int) -> None:
    scaler = StandardScaler().fit(X_raw)
    Z, Z_rows = scaler.transform(X_raw), scaler.transform(X_rows)
    net = train_mlp(Z, y)
    with torch.no_grad():
        logits = net(torch.tensor(Z_rows, dtype=torch.float32)).double().numpy()
    truth = logits.argmax(axis=1)
    W1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    W2, b2 = net[2].weight.detach().double().numpy(), net[2].bias.detach().double().numpy()

    def server(v: ts.CKKSVector) -> ts.CKKSVector:
        h = v.mm(W1.T.tolist()) + b1.tolist()
        h.square_()
        return h.mm(W2.T.tolist()) + b2.tolist()

    model = he.compile(net, calibration=Z, link="softmax")
    last: dict[str, Row] = {}

    def tutorial() -> float:
        out, seconds, tut = per_sample(Z_rows[:k], server, 2)
        tut.agreement = float(np.mean(out.argmax(axis=1) == truth[:k]))
        tut.note = f"(timed on {k})"
        last["tutorial"] = tut
        return seconds / k  # seconds per sample

    def ours(packing: str) -> Callable[[], float]:
        def run() -> float:
            _, scores, row = privml_run(model, Z_rows, packing)
            row.agreement = float(np.mean(scores.argmax(axis=1) == truth))
            row.note += f" max logit error {np.abs(scores - logits).max():.1e}"
            last[packing] = row
            return 1 / row.samples_per_s

        return run

    times = interleave(
        {"tutorial": tutorial, "columns": ours("columns"), "rows": ours("rows")},
        rounds=rounds,
        warmup=0,  # (a) warmed TenSEAL up; each run makes its own keys, so no cache to fill
    )
    rows = [last["tutorial"], last["columns"], last["rows"]]
    print_table(f"(b) MLP 30-16-2 with x**2, {len(X_rows)} rows", rows)
    print_ratios(times, target=1_000)


def print_ratios(times: Timings, *, target: float | None = None) -> None:
    """Speed-up over the tutorial: the median of the per-round ratio of samples/s."""
    for packing in ("columns", "rows"):
        ratio = times.ratio("tutorial", packing)  # tutorial's s/sample over ours
        line = f"   privml {packing} / tutorial (quoted): {ratio}"
        if target is not None and packing == "columns":
            line += f"  {verdict(ratio.median, at_least=target)}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--baseline-samples", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    X, y = load_breast_cancer(return_X_y=True)
    reps = -(-args.rows // len(X))
    X_rows = np.tile(X, (reps, 1))[: args.rows]
    print(
        f"tenseal {ts.__version__}, torch {torch.__version__}; threads: {torch.get_num_threads()}"
    )
    bench_logreg(X, y, X_rows, args.baseline_samples, args.rounds)
    bench_mlp(X, y, X_rows, max(args.baseline_samples // 4, 4), args.rounds)


if __name__ == "__main__":
    main()
