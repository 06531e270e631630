"""The stored replies (privml.vault._replies): one reply per request id, whoever stores it first,
encrypted at rest and bound to its principal and request id."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from privml import ConfigurationError, IntegrityError
from privml.storage.tables import replies
from privml.vault._replies import MAX_BODY_BYTES, StoredReply

JSON = "application/json"


def test_a_reply_round_trips_and_a_second_put_returns_the_first(demo_vault):
    store = demo_vault._replies
    assert store.get("analyst", "req-1", action="dp.count") is None
    first = store.put("analyst", "req-1", action="dp.count", body=b'{"v": 1}', media_type=JSON)
    assert isinstance(first, StoredReply)
    assert (first.action, first.body, first.media_type) == ("dp.count", b'{"v": 1}', JSON)
    assert b'{"v": 1}' not in repr(first).encode()
    again = store.put("analyst", "req-1", action="dp.count", body=b'{"v": 2}', media_type=JSON)
    assert again == first == store.get("analyst", "req-1", action="dp.count")
    # request ids are per principal
    assert store.get("ana", "req-1", action="dp.count") is None
    empty = store.put("ana", "req-1", action="dp.count", body=b"", media_type="text/plain")
    assert store.get("ana", "req-1", action="dp.count") == empty


def test_a_request_id_reused_for_another_action_is_refused(demo_vault):
    store = demo_vault._replies
    store.put("analyst", "req-1", action="dp.count", body=b"1", media_type=JSON)
    message = "request id 'req-1' already used for a different request; use a new one"
    with pytest.raises(ConfigurationError, match=message):
        store.get("analyst", "req-1", action="dp.mean")
    with pytest.raises(ConfigurationError, match=message):
        store.put("analyst", "req-1", action="dp.mean", body=b"2", media_type=JSON)
    assert store.get("analyst", "req-1", action="dp.count").body == b"1"


def test_concurrent_puts_under_one_request_id_all_get_the_one_stored(demo_vault, vaults, key):
    """Two handles (as two workers or processes would have) race on each of several ids."""
    other = vaults.open(demo_vault.path, key=key)
    try:
        stores = [demo_vault._replies, other._replies]
        for round_ in range(5):
            barrier = threading.Barrier(len(stores) * 2)
            got: dict[int, StoredReply] = {}

            def put(i: int, store, round_=round_, barrier=barrier, got=got) -> None:
                barrier.wait()
                got[i] = store.put(
                    "analyst", f"race-{round_}", action="dp.count",
                    body=f"answer {i}".encode(), media_type=JSON,
                )  # fmt: skip

            threads = [threading.Thread(target=put, args=(i, stores[i % 2])) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(got) == 4 and len({r.body for r in got.values()}) == 1
            assert got[0] == stores[1].get("analyst", f"race-{round_}", action="dp.count")
    finally:
        other.close()


def test_the_body_is_not_stored_in_plaintext(demo_vault, vaults):
    body = b"MEAN-GLUCOSE=123.456789-a-distinctive-answer"
    demo_vault._replies.put("analyst", "req-1", action="dp.mean", body=body, media_type=JSON)
    demo_vault.close()
    stored = vaults.stored(demo_vault.path)
    for wal in Path(demo_vault.path).glob("meta.db-*"):
        stored += wal.read_bytes()
    assert body not in stored and b"a-distinctive-answer" not in stored


# --- someone with the database but not the key -----------------------------------------------
@pytest.fixture
def two_replies(demo_vault):
    store = demo_vault._replies
    store.put("analyst", "a", action="dp.count", body=b"reply a", media_type=JSON)
    store.put("analyst", "b", action="dp.count", body=b"reply b", media_type=JSON)
    store.put("ana", "a", action="dp.count", body=b"reply ana", media_type=JSON)
    return store


def _rows(dba, vault):
    with dba.edit(vault.path) as conn:
        return {(r.principal, r.key): r._asdict() for r in conn.execute(sa.select(replies))}


def _set(dba, vault, principal, key, **values):
    with dba.edit(vault.path) as conn:
        where = sa.and_(replies.c.principal == principal, replies.c.key == key)
        conn.execute(replies.update().where(where).values(**values))


def test_bodies_swapped_between_request_ids_are_refused(two_replies, demo_vault, dba):
    rows = _rows(dba, demo_vault)
    _set(dba, demo_vault, "analyst", "a", body=rows[("analyst", "b")]["body"])
    with pytest.raises(IntegrityError, match="request id 'a'"):
        two_replies.get("analyst", "a", action="dp.count")
    assert two_replies.get("analyst", "b", action="dp.count").body == b"reply b"


def test_a_row_moved_to_another_principal_is_refused(two_replies, demo_vault, dba):
    rows = _rows(dba, demo_vault)
    _set(dba, demo_vault, "ana", "a", body=rows[("analyst", "a")]["body"])
    with pytest.raises(IntegrityError, match="fails authentication"):
        two_replies.get("ana", "a", action="dp.count")
    with dba.edit(demo_vault.path) as conn:  # the whole row, renamed
        conn.execute(replies.delete().where(replies.c.principal == "ana"))
        conn.execute(replies.update().where(replies.c.key == "b").values(principal="ana"))
    with pytest.raises(IntegrityError):
        two_replies.get("ana", "b", action="dp.count")


@pytest.mark.parametrize(
    "values",
    [
        {"action": "dp.mean"},
        {"media_type": "text/html"},
        {"created": "2020-01-01T00:00:00.000000+00:00"},
        {"body": b"short"},
        {"body": b""},
    ],
    ids=["action", "media_type", "created", "body", "empty"],
)
def test_an_edited_row_is_refused(two_replies, demo_vault, dba, values):
    _set(dba, demo_vault, "analyst", "a", **values)
    action = values.get("action", "dp.count")
    with pytest.raises(IntegrityError, match="fails authentication"):
        two_replies.get("analyst", "a", action=action)
    with pytest.raises(IntegrityError):  # a put of a retry does not send it either
        two_replies.put("analyst", "a", action=action, body=b"new", media_type=JSON)


# --- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_id", ["", "a" * 129, "a b", "é", "../x", "a\n", "a/b", None, 7, b"req"]
)
def test_a_malformed_request_id_is_refused(demo_vault, request_id):
    with pytest.raises(ConfigurationError, match="a request id is 1 to 128 characters"):
        demo_vault._replies.put("analyst", request_id, action="dp.count", body=b"", media_type=JSON)
    with pytest.raises(ConfigurationError, match="a request id is 1 to 128 characters"):
        demo_vault._replies.get("analyst", request_id, action="dp.count")


def test_every_allowed_character_makes_a_request_id(demo_vault):
    key = "AZaz09._:-" + "x" * 118
    stored = demo_vault._replies.put("analyst", key, action="a", body=b"x", media_type=JSON)
    assert demo_vault._replies.get("analyst", key, action="a") == stored


def test_bodies_and_media_types_are_bounded(demo_vault):
    store = demo_vault._replies
    with pytest.raises(ConfigurationError, match=f"at most {MAX_BODY_BYTES} bytes"):
        store.put("analyst", "k", action="a", body=bytes(MAX_BODY_BYTES + 1), media_type=JSON)
    with pytest.raises(ConfigurationError, match="body= takes bytes"):
        store.put("analyst", "k", action="a", body="text", media_type=JSON)
    for media_type in ("", "a" * 129, "text/html\n", "texté", None):
        with pytest.raises(ConfigurationError, match="media_type="):
            store.put("analyst", "k", action="a", body=b"", media_type=media_type)
    with pytest.raises(ConfigurationError, match="principal"):
        store.put("x" * 257, "k", action="a", body=b"", media_type=JSON)
    assert store.get("analyst", "k", action="a") is None


def test_purge_deletes_old_replies_only(demo_vault):
    store = demo_vault._replies
    store.put("analyst", "k", action="a", body=b"x", media_type=JSON)
    assert store.purge(older_than=timedelta(days=1)) == 0
    assert store.get("analyst", "k", action="a") is not None
    assert store.purge(older_than=timedelta(0)) == 1
    assert store.get("analyst", "k", action="a") is None
    with pytest.raises(ConfigurationError, match="older_than="):
        store.purge(older_than=-timedelta(days=1))
