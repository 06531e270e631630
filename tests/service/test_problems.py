"""Refusals cross the wire as problem documents and come back as the same exceptions."""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pytest

from privml import exceptions as ex
from privml.dp._result import DPResult
from privml.service._errors import ServiceError
from privml.service._limits import FailureThrottle, Limits, RateLimiter
from privml.service._problems import from_problem, to_problem
from privml.service._serve import check_bind
from privml.service._wire import frame_from_ipc, frame_to_ipc, result_from_json, result_to_json

BUDGET = ex.BudgetExceededError(
    "over",
    dataset="d",
    scope="principal:ana",
    spent=0.9,
    requested=0.5,
    after=math.inf,
    remaining=0.1,
    total=1.0,
    delta=1e-6,
    method="rdp",
)
ERRORS = [
    ex.AccessDenied(
        "no", principal="ana", purpose="p", dataset="d", column="age", mode="deny", needed="raw"
    ),
    BUDGET,
    ex.StepLimitExceeded(
        "step",
        dataset="d",
        spent=1,
        requested=0.1,
        after=1.1,
        remaining=0,
        total=1,
        delta=1e-5,
        steps_reserved=4,
        steps_attempted=5,
        request_id="dp.train-x",
    ),
    ex.NotFoundError("no dataset 'x'"),
    ex.ConfigurationError("epsilon= must be positive"),
    ex.UnknownColumnError(column="agee", known=("age",)),
    ex.SchemaError([ex.SchemaViolation("age", "bounds", 2, (0, 3), "within [0, 120]")]),
    ex.VaultClosedError("closed"),
    ex.OptionalDependencyError("needs tenseal"),
    ServiceError("slow down", status=429, kind="rate_limited", retry_after=0.5),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_each_refusal_comes_back_as_itself(err: Exception) -> None:
    status, body = to_problem(err)
    again = from_problem(status, pickle.loads(pickle.dumps(body)))
    assert type(again) is type(err)
    assert str(again) == str(err)
    assert 400 <= status < 600
    for name, value in vars(err).items():
        assert getattr(again, name) == value, name


def test_statuses_follow_the_kind_of_refusal() -> None:
    assert [to_problem(e)[0] for e in ERRORS[:5]] == [403, 409, 409, 404, 422]


def test_integrity_failures_and_bugs_cross_without_their_message() -> None:
    for err in (ex.IntegrityError("/srv/vault/data/x.parquet: hash"), KeyError("secret-col")):
        status, body = to_problem(err, incident="abc123")
        assert status == 500
        assert "parquet" not in str(body) and "secret-col" not in str(body)
        assert body["fields"]["incident"] == "abc123"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "x",
        {"error": "os.system"},
        {"error": "PrivmlError", "fields": []},
        {"error": "ValueError"},
        {"error": 3, "detail": 4},
    ],
)
def test_a_hostile_problem_document_becomes_a_service_error(body: object) -> None:
    err = from_problem(502, body)
    assert isinstance(err, ex.PrivmlError)
    assert type(err).__name__ in ("ServiceError", "PrivmlError")


def test_frames_keep_types_and_attrs() -> None:
    frame = pd.DataFrame(
        {
            "age": [34, 71],
            "sex": pd.Categorical(["F", "M"]),
            "seen": pd.to_datetime(["2024-01-01", "2024-02-01"]),
            "note": ["****a", None],
        }
    )
    frame.attrs = {"privml_modes": {"age": "raw"}, "privml_version": 2}
    back = frame_from_ipc(frame_to_ipc(frame, batch_rows=1))
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs
    with pytest.raises(ex.ConfigurationError):
        frame_from_ipc(b"not arrow")


def test_a_histogram_keeps_its_bins() -> None:
    bins = pd.Index(list(pd.IntervalIndex.from_breaks([0.0, 5.0, float("inf")], closed="left")))
    result = DPResult(
        pd.Series([1.5, -0.25], index=bins.rename("age")),
        0.5,
        0.0,
        "laplace",
        2.0,
        (-5.9, 5.9),
        "dp.histogram-1",
    )
    back = result_from_json(result_to_json(result))
    pd.testing.assert_series_equal(back.value, result.value)
    assert back.interval == result.interval and back.request_id == result.request_id


def test_limits_and_binding_are_checked() -> None:
    with pytest.raises(ex.ConfigurationError):
        Limits(rate=float("nan"))
    with pytest.raises(ex.ConfigurationError):
        Limits(max_rows=0)
    with pytest.raises(ex.ConfigurationError, match="TLS"):
        check_bind("10.0.0.5", tls=False, allow_insecure=False)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, tls=False, allow_insecure=False)
    check_bind("0.0.0.0", tls=True, allow_insecure=False)


def test_the_rate_limiter_and_the_throttle_count() -> None:
    rates = RateLimiter(rate=1e-9, burst=3)  # no refill within the test
    assert [rates.take("ana") for _ in range(3)] == [None, None, None]
    assert rates.take("ana") is not None
    assert rates.take("kim") is None  # per principal
    throttle = FailureThrottle(allowed=2, window=3600)
    delays = []
    for _ in range(6):
        delays.append(throttle.delay("10.0.0.9"))
        throttle.failed("10.0.0.9")
    assert delays[:2] == [0.0, 0.0] and delays[2] > 0 and delays[5] > delays[3]
    assert max(delays) <= 5.0
    assert throttle.delay("10.0.0.10") == 0.0


def test_a_principal_with_too_many_requests_running_is_refused(demo_vault):
    """One principal cannot hold every worker thread: past ``in_flight`` it gets a 429,
    audited; another principal is served meanwhile."""
    import threading

    import anyio

    from privml.service._service import Caller, Service

    service = Service(demo_vault, Limits(in_flight=2))
    ana = Caller("analyst", "research", "tok_00000000000000aa", "127.0.0.1", False)
    kim = Caller("kim", "research", "tok_00000000000000bb", "127.0.0.1", False)
    release = threading.Event()
    started = threading.Barrier(3)

    def slow() -> str:
        started.wait()
        release.wait(30)
        return "done"

    async def main() -> list[object]:
        results: list[object] = []
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(lambda: _collect(results, service.call(slow, timeout=60, caller=ana)))
            await anyio.to_thread.run_sync(started.wait)
            with pytest.raises(ServiceError) as refused:
                await service.call(lambda: "x", timeout=60, caller=ana)
            assert refused.value.status == 429
            assert await service.call(lambda: "served", timeout=60, caller=kim) == "served"
            release.set()
        return results

    async def _collect(results: list[object], pending: object) -> None:
        results.append(await pending)  # type: ignore[misc]

    assert anyio.run(main) == ["done", "done"]
    assert anyio.run(lambda: service.call(lambda: "again", timeout=60, caller=ana)) == "again"
    entry = demo_vault.audit.entries(principal="analyst").iloc[-1]
    assert entry["outcome"] == "denied" and entry["details"]["reason"] == "in_flight"
