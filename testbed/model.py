"""The testbed model: diffusers' WanTransformer3DModel (3D rotary embedding, patchify, AdaLN
time modulation, cross-attention to the conditioning) in a small configuration with head dim 128,
in pixel space, conditioned on a class through a learned table of text-like tokens.

Default (training clip 16 x 96 x 128 pixels, patch 1 x 4 x 4): grid 16 x 24 x 32 = 12,288 tokens,
96 tiles of 128; at 16 x 192 x 256 (evaluation) 16 x 48 x 64 = 49,152 tokens, 384 tiles.
6 layers x 3 heads x 128, ffn 1536: about 15.7 M parameters (31 MB in bf16).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import NUM_CLASSES

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"


@dataclass
class ModelConfig:
    num_layers: int = 6
    num_heads: int = 3
    head_dim: int = 128
    ffn_dim: int = 1536
    patch_size: tuple[int, int, int] = (1, 4, 4)
    in_channels: int = 3
    text_dim: int = 256
    text_tokens: int = 8
    freq_dim: int = 256
    num_classes: int = NUM_CLASSES
    rope_max_seq_len: int = 1024
    # training clip (pixels); sampling may use other sizes (rotary extrapolation)
    frames: int = 16
    height: int = 96
    width: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def tiny(cls) -> ModelConfig:
        """CPU smoke size: 2 layers x 1 head x 128, clip 4 x 64 x 64 -> grid 4 x 16 x 16."""
        return cls(
            num_layers=2,
            num_heads=1,
            ffn_dim=256,
            text_dim=32,
            text_tokens=4,
            freq_dim=32,
            frames=4,
            height=64,
            width=64,
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "patch_size" in kwargs:
            kwargs["patch_size"] = tuple(kwargs["patch_size"])
        return cls(**kwargs)

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        pt, ph, pw = self.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(
                f"clip {frames}x{height}x{width} is not a multiple of patch {self.patch_size}"
            )
        return frames // pt, height // ph, width // pw


class Testbed(nn.Module):
    """Velocity model v(x_t, t, class): x [B, 3, F, H, W], t [B] in [0, 1], class ids [B]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from diffusers import WanTransformer3DModel

        self.config = config
        self.transformer = WanTransformer3DModel(
            patch_size=tuple(config.patch_size),
            num_attention_heads=config.num_heads,
            attention_head_dim=config.head_dim,
            in_channels=config.in_channels,
            out_channels=config.in_channels,
            text_dim=config.text_dim,
            freq_dim=config.freq_dim,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=config.rope_max_seq_len,
        )
        # one row per class plus a last "null" row (classifier-free guidance)
        self.class_tokens = nn.Parameter(
            torch.randn(config.num_classes + 1, config.text_tokens, config.text_dim) * 0.5
        )

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def conditioning(self, class_ids: torch.Tensor) -> torch.Tensor:
        return self.class_tokens[class_ids]  # [B, text_tokens, text_dim]

    def forward(
        self,
        x: torch.Tensor,  # [B, C, F, H, W]
        t: torch.Tensor,  # [B] in [0, 1] (1 = noise)
        class_ids: torch.Tensor,  # [B] long
    ) -> torch.Tensor:
        context = self.conditioning(class_ids).to(x.dtype)  # [B, T, text_dim]
        out = self.transformer(
            hidden_states=x, timestep=t * 1000.0, encoder_hidden_states=context, return_dict=False
        )[0]
        return out  # [B, C, F, H, W]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(
    model: Testbed,
    directory: str | Path,
    info: dict[str, Any],
    *,
    dtype: torch.dtype = torch.bfloat16,
    shard_bytes: int = int(15.75 * 2**20),
) -> list[Path]:
    """Writes the weights as .safetensors (shards of at most shard_bytes, with an index, when
    larger: the device's result files are limited to 16 MiB each) and config.json. Atomic per
    file. Returns the paths written."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    target = math.ceil(total / math.ceil(total / shard_bytes))  # balanced shards
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and (size >= target or size + nbytes > shard_bytes):
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    for old in directory.glob("model*.safetensors*"):
        old.unlink()
    written = []
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards):
        name = (
            WEIGHTS_NAME
            if len(shards) == 1
            else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        )
        path = directory / name
        save_file(shard, str(path.with_name(name + ".tmp")), metadata={"format": "pt"})
        path.with_name(name + ".tmp").replace(path)
        written.append(path)
        weight_map.update({key: name for key in shard})
    if len(shards) > 1:
        written.append(_write_json(directory / INDEX_NAME, {"weight_map": weight_map}))
    config = {"model": asdict(model.config), **info, "weights_dtype": str(dtype).split(".")[-1]}
    written.append(_write_json(directory / CONFIG_NAME, config))
    return written


def _write_json(path: Path, value: dict[str, Any]) -> Path:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
    return path


def sampling_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (veda's GPU path takes bf16 / fp16), float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Testbed, dict[str, Any]]:
    """The model (eval mode, on device in dtype) and the checkpoint's config.json."""
    from safetensors.torch import load_file

    directory = Path(directory)
    info = json.loads((directory / CONFIG_NAME).read_text())
    model = Testbed(ModelConfig.from_dict(info["model"]))
    if (directory / INDEX_NAME).exists():
        names = sorted(set(json.loads((directory / INDEX_NAME).read_text())["weight_map"].values()))
    else:
        names = [WEIGHTS_NAME]
    state: dict[str, torch.Tensor] = {}
    for name in names:
        state.update(load_file(str(directory / name)))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device=device, dtype=dtype).eval(), info
