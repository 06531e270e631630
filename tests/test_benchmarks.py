"""The benchmarks measure time one way, and that way computes what it says.

Every ``benchmarks/bench_*.py`` either compares timings through ``_rounds.interleave``
(interleaved rounds, the median of the per-round ratio with its spread) or declares at
module level ``TIMES_NOTHING = "<what it measures instead>"``. The scripts are read, not
run: their figures need minutes and a quiet machine. ``_rounds`` itself is checked on
fixed numbers and on callables that count their own seconds.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def _load_rounds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_rounds_under_test", BENCHMARKS / "_rounds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


rounds = _load_rounds()


# --- every script -------------------------------------------------------------------------
def _names_called(tree: ast.Module) -> set[str]:
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                called.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                called.add(node.func.attr)
    return called


def _imports_rounds(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "_rounds":
            names |= {alias.name for alias in node.names}
    return names


def _times_nothing(tree: ast.Module) -> str | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "TIMES_NOTHING":
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
                return ""
    return None


def test_the_scripts_are_found():
    assert len(SCRIPTS) >= 19, [p.name for p in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_interleaves_or_says_what_it_measures(script: Path):
    tree = ast.parse(script.read_text(), filename=str(script))
    declared = _times_nothing(tree)
    imported = _imports_rounds(tree)
    if declared is not None:
        assert len(declared.split()) >= 3, f"{script.name}: TIMES_NOTHING says too little"
        assert "interleave" not in imported, f"{script.name}: interleaves yet times nothing"
        return
    assert "interleave" in imported, f"{script.name}: neither _rounds.interleave nor TIMES_NOTHING"
    called = _names_called(tree)
    assert "interleave" in called, f"{script.name}: imports interleave but never calls it"
    assert "pin_threads" in called, f"{script.name}: times without pinning the thread pools"


def test_the_checks_can_fail():
    bare = ast.parse("import time\nstart = time.perf_counter()\n")
    assert _times_nothing(bare) is None and not _imports_rounds(bare)
    vague = ast.parse("TIMES_NOTHING = 3\n")
    assert _times_nothing(vague) == ""
    uses = ast.parse("from _rounds import interleave\ninterleave({}, rounds=1)\n")
    assert _imports_rounds(uses) == {"interleave"} and "interleave" in _names_called(uses)


# --- _rounds ------------------------------------------------------------------------------
def test_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians():
    times = rounds.Timings({"a": [1.0, 2.0, 9.0, 4.0, 5.0], "b": [1.0, 1.0, 3.0, 1.0, 10.0]})
    ratio = times.ratio("a", "b")
    assert ratio.values == (1.0, 2.0, 3.0, 4.0, 0.5)
    assert ratio.median == 2.0
    assert times.median("a") / times.median("b") == 4.0  # what the per-round figure avoids
    assert ratio.quartiles == (1.0, 3.0)  # inclusive quartiles of 0.5, 1, 2, 3, 4
    assert (ratio.top, ratio.bottom) == ("a", "b")
    text = str(ratio)
    assert text.startswith("2.000x [1.000 .. 3.000]")
    assert "min 0.500" in text and "max 4.000" in text and "5 rounds" in text


def test_rate_is_units_over_each_rounds_seconds():
    times = rounds.Timings({"x": [0.5, 0.25, 1.0, 2.0]})
    rate = times.rate("x", 100, "rows")
    assert rate.values == (200.0, 400.0, 100.0, 50.0)
    assert rate.median == 150.0
    assert rate.quartiles == (87.5, 250.0)
    assert str(rate).startswith("150 rows/s [88 .. 250]") and "4 rounds" in str(rate)


def test_one_round_has_its_value_as_quartiles():
    ratio = rounds.Timings({"a": [3.0], "b": [2.0]}).ratio("a", "b")
    assert ratio.median == 1.5 and ratio.quartiles == (1.5, 1.5)


def test_ratio_refuses_rounds_of_different_lengths():
    with pytest.raises(ValueError):
        rounds.Timings({"a": [1.0, 2.0], "b": [1.0]}).ratio("a", "b")


def test_interleave_rotates_the_order_and_warms_up_untimed():
    calls: list[str] = []

    def variant(name: str):
        return lambda: calls.append(name)

    times = rounds.interleave({n: variant(n) for n in "abc"}, rounds=4, warmup=2)
    assert calls[:6] == list("abcabc")  # the warm-up, in the given order
    assert calls[6:] == list("abc" + "bca" + "cab" + "abc")
    assert {n: len(s) for n, s in times.seconds.items()} == {"a": 4, "b": 4, "c": 4}
    assert times.rounds() == 4


def test_a_callable_returning_seconds_is_counted_as_it_says():
    given = iter([0.0, 10.0, 20.0, 30.0])  # the warm-up's value is dropped
    times = rounds.interleave({"own": lambda: next(given), "timed": lambda: None}, rounds=3)
    assert times.seconds["own"] == [10.0, 20.0, 30.0]
    assert all(0.0 <= s < 1.0 for s in times.seconds["timed"])  # perf_counter of a no-op


def test_verdict():
    assert rounds.verdict(1.2, at_most=1.3) == "target <= 1.3x: met"
    assert rounds.verdict(1.4, at_most=1.3) == "target <= 1.3x: MISSED"
    assert rounds.verdict(900, at_least=1000, unit=" rows/s") == "target >= 1,000 rows/s: MISSED"
    with pytest.raises(ValueError):
        rounds.verdict(1.0)


def test_pin_threads_sets_every_pool(monkeypatch: pytest.MonkeyPatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    for name in rounds._THREAD_VARIABLES:
        monkeypatch.setenv(name, "7")
    try:
        rounds.pin_threads(2)
        assert {os.environ[name] for name in rounds._THREAD_VARIABLES} == {"2"}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_load_average_gives_three_figures():
    figures = rounds.load_average().split(", ")
    assert len(figures) == 3 and all(float(f) >= 0.0 for f in figures)


def test_pin_threads_leaves_torch_unimported_and_torch_then_takes_one_thread():
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in rounds._THREAD_VARIABLES}
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _rounds; _rounds.pin_threads();"
        "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(BENCHMARKS)],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.strip() == "1"
