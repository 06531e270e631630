"""Large logical batches (``max_physical_batch_size``): one release per Poisson batch, in chunks.

The equality tests draw the whole table (batch_size = N, so q = 1 and every row
is in the one batch of the epoch) so that a chunked run and a one-chunk run see
the same batch, and seed both runs' noise alike; the attacker tests play a
caller who steps mid-batch, replays, skips or mixes chunks, or fakes a skip.
"""

from __future__ import annotations

import pytest
import torch
from _torch_helpers import start_training

from privml import ConfigurationError
from privml.dp.torch._noise import NoiseSource
from privml.exceptions import StepLimitExceeded

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

MODES = ["ghost", "hooks", "bk"]
N_CANCER = 569


def _alternating():
    """A deterministic transform whose views differ: every other call mirrors the row."""
    calls = []

    def transform(row):
        calls.append(None)
        return 1.0 - row if len(calls) % 2 else row

    return transform


def _whole_table_update(v, cancer, net, mode, physical, augmentations=1):
    """Parameters after the one step of a q = 1 run on the cancer rows, noise seeded."""
    views = (
        {"augmentations": augmentations, "transform": _alternating()} if augmentations > 1 else {}
    )
    with start_training(
        v,
        cancer,
        net,
        mode,
        batch_size=N_CANCER,
        noise_multiplier=3.0,
        max_physical_batch_size=physical,
        **views,
    ) as run:
        run.optimizer.privml_noise = NoiseSource(seed=11)  # the same noise on both sides
        chunks = 0
        for X, y in run.data_loader:
            chunks += 1
            run.optimizer.zero_grad()
            run.criterion(run.model(X), y).backward()
            run.optimizer.step()
            assert run.steps_taken == (1 if chunks * (physical or N_CANCER) >= N_CANCER else 0)
    assert run.steps_taken == run.batches_drawn == 1
    assert run.data_loader.rows_drawn == N_CANCER
    return [p.detach().clone() for p in run.trained.module.parameters()], run, chunks


@pytest.mark.parametrize("mode", MODES)
def test_a_chunked_batch_releases_the_one_chunk_update(make_vault, cancer, make_mlp, mode):
    whole, one_run, one = _whole_table_update(
        make_vault("cancer"), cancer, make_mlp(30, 16, 2), mode, None
    )
    start = [p.detach().clone() for p in make_mlp(30, 16, 2).parameters()]
    chunked, run, chunks = _whole_table_update(
        make_vault("cancer"), cancer, make_mlp(30, 16, 2), mode, 100
    )
    assert (one, chunks) == (1, 6)
    moved = max(float((a - b).abs().max()) for a, b in zip(whole, start, strict=True))
    assert moved > 1e-3
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert run.epsilon == one_run.epsilon


@pytest.mark.parametrize("mode", ["hooks", "bk"])
def test_chunks_of_augmented_views_release_the_one_chunk_update(make_vault, cancer, make_mlp, mode):
    whole, _, _ = _whole_table_update(
        make_vault("cancer"), cancer, make_mlp(30, 16, 2), mode, None, 2
    )
    chunked, _, chunks = _whole_table_update(
        make_vault("cancer"), cancer, make_mlp(30, 16, 2), mode, 100, 2
    )
    single, _, _ = _whole_table_update(
        make_vault("cancer"), cancer, make_mlp(30, 16, 2), mode, None
    )
    assert chunks == 6
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert max(float((a - b).abs().max()) for a, b in zip(whole, single, strict=True)) > 1e-4


def _steps(run, count):
    """The user's loop, stopped after ``count`` released steps."""
    for X, y in run.data_loader:
        run.optimizer.zero_grad()
        run.criterion(run.model(X), y).backward()
        run.optimizer.step()
        if run.steps_taken == count:
            return


@pytest.mark.parametrize("mode", ["hooks", "bk"])  # the accounting is the modes' common part
def test_the_ledger_counts_logical_batches_at_the_logical_rate(make_vault, digits, make_mlp, mode):
    charged = []
    for physical in (None, 16):
        v = make_vault()
        with start_training(v, digits, make_mlp(), mode, max_physical_batch_size=physical) as run:
            _steps(run, 3)
        assert run.steps_taken == run.batches_drawn == 3
        charged.append(
            (run.epsilon, run.sample_rate, run.steps_planned, v.budget("data").epsilon_spent)
        )
        details = v.audit.entries(action="dp.train.batches").iloc[-1]["details"]
        assert details["batches_drawn"] == 3
    assert charged[0] == charged[1]
    assert charged[0][1] == 64 / 1797


def _chunked(v, digits, net, mode="hooks"):
    # batch_size 64 with P = 16: a batch has at most 16 rows with probability < 1e-12
    # (Binomial(1797, 64/1797) ≤ 16, a Chernoff bound), so it comes in at least 2 chunks.
    return start_training(v, digits, net, mode, max_physical_batch_size=16)


def _backward(run, X, y):
    run.optimizer.zero_grad()
    run.criterion(run.model(X), y).backward()


def _params(run):
    return [p.detach().clone() for p in run.model.parameters()]


def _unchanged(before, run):
    return all(torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True))


@pytest.mark.parametrize("mode", MODES)
def test_nothing_is_released_before_the_last_chunk(make_vault, digits, make_mlp, mode):
    v = make_vault()
    with _chunked(v, digits, make_mlp(), mode) as run:
        before = _params(run)
        sizes = []
        for X, y in run.data_loader:
            sizes.append(len(y))
            _backward(run, X, y)
            run.optimizer.step()
            if run.steps_taken:
                break
            assert _unchanged(before, run)  # a chunk before the last only accumulates
        assert len(sizes) >= 2 and max(sizes) <= 16
        assert sum(sizes) == run.data_loader.rows_drawn
        assert not _unchanged(before, run)
        assert run.steps_taken == run.batches_drawn == 1


def test_stepping_twice_on_one_chunk_is_refused(make_vault, digits, make_mlp):
    v = make_vault()
    with _chunked(v, digits, make_mlp()) as run:
        before = _params(run)
        X, y = next(iter(run.data_loader))
        _backward(run, X, y)
        run.optimizer.step()  # accumulates the first chunk
        with pytest.raises(ConfigurationError, match="was stepped already"):
            run.optimizer.step()
        with pytest.raises(ConfigurationError, match="forward pass"):
            run.model(X)  # replaying the stepped chunk
        assert _unchanged(before, run) and run.steps_taken == 0


def test_a_replayed_chunks_gradients_cannot_reach_a_step(make_vault, digits, make_mlp):
    v = make_vault()
    with _chunked(v, digits, make_mlp()) as run:
        it = iter(run.data_loader)
        X, y = next(it)
        run.optimizer.zero_grad()
        loss = run.criterion(run.model(X), y)
        loss.backward(retain_graph=True)
        run.optimizer.step()
        next(it)  # the second chunk, handed out
        run.optimizer.zero_grad()
        with pytest.raises(ConfigurationError, match="already stepped"):
            loss.backward()  # the first chunk's graph, again
        with pytest.raises(ConfigurationError, match="incomplete"):
            run.optimizer.step()  # the refused pass spoiled the second chunk's gradients
        assert run.steps_taken == 0


def test_a_chunk_cannot_be_skipped(make_vault, digits, make_mlp):
    v = make_vault()
    with _chunked(v, digits, make_mlp()) as run:
        it = iter(run.data_loader)
        next(it)
        with pytest.raises(
            ConfigurationError, match=r"chunk 1/\d+ of batch 1 has not been stepped"
        ):
            next(it)  # skipping the first chunk's step
        with pytest.raises(ConfigurationError, match="has not been stepped"):
            next(iter(run.data_loader))  # nor by starting over
        assert run.batches_drawn == 1 and run.steps_taken == 0


def test_chunks_of_two_batches_cannot_be_mixed(make_vault, digits, make_mlp):
    v = make_vault()
    with _chunked(v, digits, make_mlp()) as run:
        it = iter(run.data_loader)
        first, y1 = next(it)
        _backward(run, first, y1)
        run.optimizer.step()
        while run.steps_taken == 0:  # the rest of batch 1, and its release
            X, y = next(it)
            _backward(run, X, y)
            run.optimizer.step()
        X2, y2 = next(it)  # batch 2's first chunk
        with pytest.raises(ConfigurationError, match="forward pass"):
            run.model(first)  # a chunk of batch 1 inside batch 2
        with pytest.raises(ConfigurationError, match="forward pass"):
            run.model(torch.cat([first[:2], X2]))  # rows from elsewhere joined to the chunk
        _backward(run, X2, y2)
        run.optimizer.step()
        assert run.batches_drawn == 2 and run.steps_taken == 1


def test_a_faked_skip_is_refused_and_a_queued_one_is_ignored(make_vault, digits, make_mlp):
    v = make_vault()
    with _chunked(v, digits, make_mlp()) as run:
        with pytest.raises(ConfigurationError, match="virtual steps"):
            run.optimizer.signal_skip_step(True)
        for X, y in run.data_loader:
            _backward(run, X, y)
            run.optimizer._step_skip_queue.append(True)  # reaching past the refusal
            run.optimizer.step()
            if run.steps_taken:
                break
        # the last chunk released anyway: one batch, one step, nothing folded into the next
        assert run.steps_taken == run.batches_drawn == 1


def test_the_reservation_still_bounds_logical_steps(make_vault, digits, make_mlp):
    v = make_vault()
    # batch_size 600 in chunks of 200: 2 steps an epoch, each batch in about 3 chunks
    with start_training(
        v, digits, make_mlp(), "bk", batch_size=600, max_physical_batch_size=200
    ) as run:
        assert run.steps_planned == len(run.data_loader) == 2
        chunks = 0
        for X, y in run.data_loader:
            chunks += 1
            _backward(run, X, y)
            run.optimizer.step()
        assert run.steps_taken == run.batches_drawn == 2 < chunks
        with pytest.raises(StepLimitExceeded, match="would exceed the 2 DP-SGD steps"):
            next(iter(run.data_loader))


def test_gradient_canaries_enter_once_per_logical_batch(make_vault, digits, make_mlp):
    with start_training(
        make_vault(), digits, make_mlp(), "bk", canaries=20, max_physical_batch_size=16
    ) as run:
        dirac = run._dirac
        added = []
        original = dirac.add
        dirac.add = lambda params: (added.append(run.steps_taken), original(params))[1]
        _steps(run, 2)
        assert added == [0, 1]  # once per release, never for a chunk that only accumulates
        assert run.steps_taken == 2
    assert run.canary_measurement["white_box"]["m"] == 20
