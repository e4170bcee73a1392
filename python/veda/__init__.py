"""Veda: distilled block-sparse attention for video diffusion transformers.

    import veda
    out = veda.sparse_attention(q, k, v, grid=(21, 30, 52), sparsity=0.9)   # q, k, v [B, L, H, D]

    import veda.diffusers
    veda.diffusers.enable(pipe, sparsity=0.95)                               # Wan 2.1 / 2.2

    profile = veda.calibrate(captures, "model.json", sparsity=0.9)           # the bundled CLI

Importing veda registers the torch custom ops torch.ops.veda.attention and
torch.ops.veda.sparse_attention (see veda.ops). veda.diffusers is imported on demand, so diffusers
is needed only by the adapter. The `veda` CLI is in the package too (veda/bin/veda): the console
script `veda` and `python -m veda` run it, veda.calibrate runs its `calibrate`.
"""

from . import ops
from ._veda import BUILT_WITH_CUDA, TILE_TOKENS
from .attention import merge_attention, parse_grid, sparse_attention
from .calibration import calibrate
from .profile import HeadSettings, LayerProfile, Profile, parse_tile

__version__ = "0.1.0"

__all__ = [
    "BUILT_WITH_CUDA",
    "TILE_TOKENS",
    "HeadSettings",
    "LayerProfile",
    "Profile",
    "calibrate",
    "merge_attention",
    "ops",
    "parse_grid",
    "parse_tile",
    "sparse_attention",
]
