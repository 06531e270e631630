"""Book-keeping through multi-head attention and torch's encoder, against Opacus hooks.

Batch-first attention is compared with Opacus hooks; sequence-first attention
(its Linears see ``(T, N, E)``, which Opacus's hooks read as batch first only
when told so for the whole module) with a loop over the samples.
"""

from __future__ import annotations

import pytest
import torch
from _bk_reference import assert_same, bookkeeping, opacus_hooks, per_sample_loop
from opacus.layers import DPMultiheadAttention
from opacus.validators import ModuleValidator
from torch import nn

from privml.dp.torch import _bk_rule

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

STEPS, WIDTH = 5, 8


class Attend(nn.Module):
    """Linear in, attention with a key padding mask (zero rows are padding), LayerNorm, head."""

    def __init__(self, *, batch_first: bool = True, **options: object) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.inputs = nn.Linear(3, WIDTH)
        self.attention = DPMultiheadAttention(WIDTH, 2, batch_first=batch_first, **options)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, T, 3)
        h = self.inputs(x)
        padding = x.abs().sum(2) == 0
        seq = h if self.batch_first else h.transpose(0, 1)
        out, _ = self.attention(seq, seq, seq, key_padding_mask=padding, need_weights=False)
        out = out if self.batch_first else out.transpose(0, 1)
        h = self.norm(h + out)
        keep = (~padding).unsqueeze(2).to(h.dtype)
        return self.head((h * keep).sum(1) / keep.sum(1))


class Encoder(nn.Module):
    """An embedding of tokens, torch's 2-layer encoder (attention fixed), mean-pooled head."""

    def __init__(self, *, batch_first: bool = True, norm_first: bool = False) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.tokens = nn.Embedding(11, WIDTH, padding_idx=0)
        layer = nn.TransformerEncoderLayer(
            WIDTH, 2, 16, dropout=0.0, batch_first=batch_first, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(
            layer, 2, norm=nn.LayerNorm(WIDTH), enable_nested_tensor=False
        )
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx: (N, T), 0 = padding
        # No src_key_padding_mask: torch's encoder turns it into a float mask, which
        # DPMultiheadAttention (opacus 1.6) cannot apply; padding is the zero embedding.
        h = self.tokens(idx)
        seq = h if self.batch_first else h.transpose(0, 1)
        out = self.encoder(seq)
        out = out if self.batch_first else out.transpose(0, 1)
        return self.head(out.mean(1))


def _attend(**options: object) -> nn.Module:
    torch.manual_seed(0)
    return Attend(**options).double()


def _encoder(**options: bool) -> nn.Module:
    torch.manual_seed(0)
    return ModuleValidator.fix(Encoder(**options)).double()


def _batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with padded tail rows (at least one real row per sample) and labels."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, STEPS, 3, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, STEPS + 1, (n,), generator=gen)
    x[torch.arange(STEPS) >= lengths.unsqueeze(1)] = 0.0
    return x, torch.randint(0, 3, (n,), generator=gen)


def _tokens(n: int, seed: int, *, padded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids 1-10 (repeats within a sample likely); with ``padded`` tails of 0s."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(1, 11, (n, STEPS), generator=gen)
    lengths = torch.randint(1, STEPS + 1, (n,), generator=gen)
    if padded:
        idx[torch.arange(STEPS) >= lengths.unsqueeze(1)] = 0
    return idx, torch.randint(0, 3, (n,), generator=gen)


OPTIONS = {
    "plain": {},
    "no_bias": {"bias": False},
    "bias_kv": {"add_bias_kv": True},
    "zero_attn": {"add_zero_attn": True},
}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_batch_first_attention_equals_opacus_hooks(option, batch, reduction):
    x, y = _batch(batch, seed=batch)
    got = bookkeeping(_attend(**OPTIONS[option]), x, y, reduction)
    if option == "bias_kv":
        # Opacus 1.6's hooks read the sequence-first key/value bias of a batch-first
        # attention as batch first and fail: a loop over the samples is the reference.
        assert_same(got, per_sample_loop(_attend(**OPTIONS[option]), x, y))
    else:
        assert_same(got, opacus_hooks(_attend(**OPTIONS[option]), x, y, reduction))


@pytest.mark.parametrize("option", ["plain", "bias_kv"])
def test_sequence_first_attention_equals_a_loop_over_samples(option):
    x, y = _batch(6, seed=2)
    got = bookkeeping(_attend(batch_first=False, **OPTIONS[option]), x, y, "mean")
    assert_same(got, per_sample_loop(_attend(batch_first=False, **OPTIONS[option]), x, y))


def test_attention_with_all_keys_but_one_masked():
    x, y = _batch(4, seed=3)
    x[:, 1:] = 0.0  # every sample: one real row, the rest padding
    got = bookkeeping(_attend(), x, y)
    assert_same(got, opacus_hooks(_attend(), x, y))
    assert_same(got, per_sample_loop(_attend(), x, y))


@pytest.mark.parametrize("limit", [None, 0])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_equals_opacus_hooks(norm_first, batch, limit, monkeypatch):
    if limit is not None:  # no room for per-sample gradients: ghost norms where smaller
        monkeypatch.setattr(_bk_rule, "WHOLE_LIMIT", limit)
    idx, y = _tokens(batch, seed=batch)
    got = bookkeeping(_encoder(norm_first=norm_first), idx, y, "mean")
    assert_same(got, opacus_hooks(_encoder(norm_first=norm_first), idx, y, "mean"))
    assert len(got[1]) == len(dict(_encoder().named_parameters()))


def test_padded_transformer_encoder_equals_a_loop_over_samples():
    """Opacus 1.6's hooks give the padding row of an Embedding a gradient; the loop none."""
    idx, y = _tokens(5, seed=6, padded=True)
    got = bookkeeping(_encoder(), idx, y)
    assert (got[1]["tokens.weight"][0] == 0).all()
    assert_same(got, per_sample_loop(_encoder(), idx, y))


def test_sequence_first_transformer_encoder_equals_a_loop_over_samples():
    idx, y = _tokens(5, seed=8, padded=True)
    got = bookkeeping(_encoder(batch_first=False), idx, y)
    assert_same(got, per_sample_loop(_encoder(batch_first=False), idx, y))


def test_attention_clips_the_mean_of_each_samples_views():
    x, y = _batch(6, seed=9)
    got = bookkeeping(_attend(), x, y, "mean", views=2)
    assert got[0].shape == (3,)
    assert_same(got, opacus_hooks(_attend(), x, y, "mean", views=2))
