"""Shared fixtures: a tiny random-weight diffusers WanTransformer3DModel and its inputs.

2 layers, 2 heads of dim 32, patch 1x2x2; the latent [1, 4, 4, 16, 32] patchifies to a 4x8x16
grid = 512 tokens = 4 tiles of 128, so 95% sparsity keeps 1 key tile (the query's own) of 4.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(
        0, str(REPO_ROOT)
    )  # the testbed package, run from the repository (not installed)
GRID = (4, 8, 16)


def make_wan_transformer(seed: int = 0, layers: int = 2):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=64,
        num_layers=layers,
        rope_max_seq_len=32,
    )
    return model.eval()


def make_wan_inputs(seed: int = 1, timestep: int = 500) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 4, GRID[0], 2 * GRID[1], 2 * GRID[2], generator=generator),
        "timestep": torch.tensor([timestep]),
        "encoder_hidden_states": torch.randn(1, 8, 16, generator=generator),
    }


@pytest.fixture
def wan_transformer():
    return make_wan_transformer()


@pytest.fixture
def wan_inputs():
    return make_wan_inputs()


def diagonal_profile(heads: int, dim: int, seed: int = 9):
    """A LayerProfile of `heads` heads (1x8x16, 75%) whose P_q, P_k are diagonal (every entry but
    P[c D + d, d] zero), given in full [H, 3D, D], and their diagonals [H, 3, D]."""
    from veda.profile import HeadSettings, LayerProfile

    generator = torch.Generator().manual_seed(seed)
    diagonals = [torch.randn(heads, 3, dim, generator=generator) for _ in range(2)]
    full = [torch.diag_embed(p).reshape(heads, 3 * dim, dim) for p in diagonals]
    settings = tuple(HeadSettings((1, 8, 16), 0.75) for _ in range(heads))
    return LayerProfile(layer=0, heads=settings, p_q=full[0], p_k=full[1]), diagonals


def veda_cli() -> Path | None:
    """The `veda` binary: $VEDA_CLI if it exists, else the first build folder of this checkout
    that has one, else one on PATH."""
    if os.environ.get("VEDA_CLI") and Path(os.environ["VEDA_CLI"]).is_file():
        return Path(os.environ["VEDA_CLI"])
    for folder in sorted(REPO_ROOT.glob("build*")):
        candidate = folder / "tools" / "veda" / "veda"
        if candidate.is_file():
            return candidate
    found = shutil.which("veda")
    return Path(found) if found else None
