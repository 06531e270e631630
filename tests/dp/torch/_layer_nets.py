"""Small CNN, recurrent and transformer networks over the 64 digit pixels, seeded.

Each takes a flat ``(N, 64)`` batch (as ``run.data_loader`` hands it out) and
reshapes it inside: an 8x8 image for the CNN, 8 steps of 8 features for the
recurrent and attention networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from opacus.layers import DPGRU, DPLSTM, DPMultiheadAttention
from torch import nn


class ConvNet(nn.Module):
    """Conv2d + GroupNorm, then Conv1d over the rows, then LayerNorm + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Unflatten(1, (1, 8, 8))
        self.conv2d = nn.Conv2d(1, 4, 3, padding=1)
        self.group_norm = nn.GroupNorm(2, 4)
        self.conv1d = nn.Conv1d(4, 4, 3, stride=2, padding=1)  # over the 64 flattened pixels
        self.layer_norm = nn.LayerNorm(128)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.group_norm(self.conv2d(self.image(x))))
        h = torch.relu(self.conv1d(h.flatten(2)))
        return self.head(self.layer_norm(h.flatten(1)))


class Recurrent(nn.Module):
    """A recurrent layer over 8 steps of 8 features; the last step's output into a Linear."""

    def __init__(self, cell: type[nn.Module], hidden: int = 16) -> None:
        super().__init__()
        self.rnn = cell(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(-1, 8, 8))
        return self.head(out[:, -1])


class Encoder(nn.Module):
    """Embedding (positions) + multi-head attention with a key padding mask + LayerNorm + MLP.

    The mask hides the blank pixel rows of each image (row 3, never blank in practice, is
    always kept, so no sample masks every key). The positions are a per-sample input
    ``(N, 8)``, every layer's input being batch first; ``repeat``, not ``expand``: Opacus's
    ghost norm of an Embedding views its input, which a stride-0 tensor refuses. Opacus's
    DPMultiheadAttention checks an ``attn_mask``'s size against the batch instead of the
    sequence when ``batch_first`` (opacus 1.6), so a per-sample key padding mask is what a
    batch-first model can use.
    """

    def __init__(self, attention: type[nn.Module] = DPMultiheadAttention, width: int = 16) -> None:
        super().__init__()
        self.inputs = nn.Linear(8, width)
        self.positions = nn.Embedding(8, width)
        self.attention = attention(width, 2, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width)
        )
        self.norm2 = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)
        self.register_buffer("steps", torch.arange(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 8, 8)
        h = self.inputs(rows) + self.positions(self.steps.repeat(len(x), 1))
        blank = (rows.abs().sum(2) == 0) & (self.steps != 3)
        attended, _ = self.attention(h, h, h, key_padding_mask=blank, need_weights=False)
        h = self.norm1(h + attended)
        h = self.norm2(h + self.feed_forward(h))
        return self.head(h.mean(1))


class TorchEncoder(nn.Module):
    """``nn.TransformerEncoder`` of torch's own layers (their nn.MultiheadAttention fixed)."""

    def __init__(self, layers: int = 2, width: int = 16) -> None:
        super().__init__()
        self.inputs = nn.Linear(8, width)
        layer = nn.TransformerEncoderLayer(
            width, 2, 2 * width, dropout=0.0, batch_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.inputs(x.reshape(-1, 8, 8))).mean(1))


#: name -> (constructor, whether it needs fix_module=True)
NETS: dict[str, tuple[Callable[[], nn.Module], bool]] = {
    "cnn": (ConvNet, False),
    "dplstm": (lambda: Recurrent(DPLSTM), False),
    "dpgru": (lambda: Recurrent(DPGRU), False),
    "lstm": (lambda: Recurrent(nn.LSTM), True),
    "gru": (lambda: Recurrent(nn.GRU), True),
    "dpattention": (Encoder, False),
    "attention": (lambda: Encoder(nn.MultiheadAttention), True),
    "transformer": (TorchEncoder, True),
}


def make(name: str, *, seed: int = 0) -> tuple[nn.Module, bool]:
    """``NETS[name]`` built under ``torch.manual_seed(seed)``, and whether it needs fixing."""
    build, fix = NETS[name]
    torch.manual_seed(seed)
    return build(), fix
