"""A curator server keeps decrypted versions between reads; shredding and closing still bind."""

from __future__ import annotations

import gc

import pytest

from privml.exceptions import DecryptionError, VaultClosedError
from privml.vault._frame_cache import FrameCache

pytestmark = pytest.mark.sqlite_only("the frames live in the process, not in the metadata")


def test_a_kept_version_is_served_until_its_keys_are_shredded(demo_vault):
    demo_vault._store.keep_frames(2**20)
    session = demo_vault.session("analyst", purpose="research")
    first = session.read("patients", version=1)
    kept = demo_vault._store._frames
    assert kept is not None and kept._frames  # read once, kept
    first.loc[0, "age"] = -1  # a caller's edit of its copy changes nothing kept
    again = session.read("patients", version=1)
    assert again["age"].iloc[0] != -1
    demo_vault.rotate_data_keys("patients")  # version 1's keys are destroyed
    with pytest.raises(DecryptionError, match="crypto-shredded"):
        session.read("patients", version=1)
    assert len(session.read("patients")) == len(first)  # the new version


def test_closing_drops_every_kept_frame(demo_vault):
    demo_vault._store.keep_frames(2**20)
    demo_vault.session("analyst", purpose="research").read("patients")
    kept = demo_vault._store._frames
    demo_vault.close()
    assert kept is not None and not kept._frames and kept._bytes == 0
    with pytest.raises(VaultClosedError):
        demo_vault.session("analyst", purpose="research")
    gc.collect()


def test_an_embedded_vault_keeps_nothing(demo_vault):
    demo_vault.session("analyst", purpose="research").read("patients")
    assert demo_vault._store._frames is None


def test_the_bound_holds_least_recently_used_out():
    import pandas as pd

    cache = FrameCache(max_bytes=4_000)
    frame = pd.DataFrame({"x": range(100)})  # 800 bytes of values, plus the index
    for i in range(10):
        cache.put(i, frame)
    assert cache._bytes <= 4_000
    assert cache.get(9) is not None and cache.get(0) is None
    cache.put("big", pd.DataFrame({"x": range(10_000)}))  # over a quarter of the bound
    assert cache.get("big") is None
