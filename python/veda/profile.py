"""Veda profiles (what calibration writes): per layer and head, a tile shape and a sparsity.

The file is the JSON of include/veda/method/profile.h:

    {"format": "veda-profile", "version": 1, "model": "...", "head_dim": 128,
     "estimator_file": "....estimator.safetensors",
     "layers": [{"layer": 0, "heads": [{"head": 0, "tile": "1x8x16", "sparsity": 0.9, ...}]}]}

The Python layer reads the tile shape, sparsity and optional threshold of every head, and where
the profile names an estimator file and each head's p_q, p_k tensors (F32 [3D, D]), the estimator
parameters: read lazily (safetensors) on the first call of method "veda", stacked
per layer to [H, 3D, D] float32 and uploaded once per device (LayerProfile.estimator). Thresholds
are read but not applied.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

PROFILE_FORMAT = "veda-profile"
PROFILE_VERSION = 1
TILE_TOKENS = 128


def parse_tile(value: str | Sequence[int], what: str = "tile") -> tuple[int, int, int]:
    """(pt, ph, pw) from "1x8x16", "1,8,16" or a 3-sequence; pt*ph*pw must be 128."""
    if isinstance(value, str):
        parts = value.replace(",", "x").split("x")
        try:
            sides = tuple(int(part) for part in parts)
        except ValueError:
            raise ValueError(f"{what} '{value}' is not a tile shape; expected 'ptxphxpw'") from None
    elif isinstance(value, Sequence):
        sides = tuple(value)
    else:
        raise TypeError(f"{what} is a {type(value).__name__}; expected (pt, ph, pw) or 'ptxphxpw'")
    if len(sides) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise ValueError(
            f"{what} {value!r} has {len(sides)} sides; expected 3 integers (pt, ph, pw)"
        )
    if min(sides) < 1 or sides[0] * sides[1] * sides[2] != TILE_TOKENS:
        shape = "x".join(str(s) for s in sides)
        raise ValueError(
            f"{what} {shape} has {sides[0] * sides[1] * sides[2]} tokens; expected positive sides "
            f"with pt*ph*pw = {TILE_TOKENS}"
        )
    return sides  # type: ignore[return-value]


@dataclass(frozen=True)
class HeadSettings:
    """Selection settings of one (global) head."""

    tile: tuple[int, int, int] = (1, 8, 16)
    sparsity: float = 0.9
    threshold: float | None = None  # cumulative mass, capped at the budget of `sparsity`


@dataclass(frozen=True)
class LayerProfile:
    """Per-head settings of one layer; heads[h] belongs to global head h.

    The estimator parameters, optional: p_q, p_k float32 [H, 3D, D] given directly, or
    estimator_file plus estimator_names ((p_q name, p_k name) per head) to read on first use.
    """

    layer: int
    heads: tuple[HeadSettings, ...]
    p_q: torch.Tensor | None = field(default=None, compare=False, repr=False)
    p_k: torch.Tensor | None = field(default=None, compare=False, repr=False)
    estimator_file: Path | None = field(default=None, compare=False, repr=False)
    estimator_names: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    # device -> (p_q, p_k) on that device; filled by estimator().
    _estimator_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def with_sparsity(self, sparsity: float) -> LayerProfile:
        """The same tile shapes and estimator with every head at `sparsity` (sharing the
        estimator cache: the parameters are read and uploaded once for all copies)."""
        heads = tuple(dataclasses.replace(head, sparsity=sparsity) for head in self.heads)
        copy = dataclasses.replace(self, heads=heads)
        object.__setattr__(copy, "_estimator_cache", self._estimator_cache)  # frozen dataclass
        return copy

    def has_estimator(self) -> bool:
        return (self.p_q is not None and self.p_k is not None) or (
            self.estimator_file is not None and len(self.estimator_names) == len(self.heads)
        )

    def estimator(
        self, device: torch.device | str, compact: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(p_q, p_k), contiguous float32 [H, 3D, D] on `device`, uploaded once per device; None
        when the profile has no estimator parameters for this layer. compact=True gives P's
        diagonals [H, 3, D] instead where both are diagonal (every entry but P[c D + d, d] zero:
        the estimator's default structure), the form the GPU projects elementwise."""
        if not self.has_estimator():
            return None
        key = f"{torch.device(device)}{' compact' if compact else ''}"
        cached = self._estimator_cache.get(key)
        if cached is None:
            if self.p_q is not None and self.p_k is not None:
                p_q, p_k = self.p_q, self.p_k
            else:
                p_q, p_k = self._read_estimator()
            if compact:
                diagonals = [_diagonal_blocks(p) for p in (p_q, p_k)]
                if diagonals[0] is not None and diagonals[1] is not None:
                    p_q, p_k = diagonals
            cached = tuple(
                p.to(device=device, dtype=torch.float32).contiguous() for p in (p_q, p_k)
            )
            self._estimator_cache[key] = cached  # type: ignore[assignment]
        return cached

    def _read_estimator(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            from safetensors import safe_open
        except ImportError:
            raise ValueError(
                f"layer {self.layer}'s estimator is in {self.estimator_file}; reading it needs "
                "the package safetensors"
            ) from None
        stacks: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        try:
            with safe_open(str(self.estimator_file), framework="pt") as tensors:
                names = set(tensors.keys())
                for pair in self.estimator_names:
                    for stack, name in zip(stacks, pair):
                        if name not in names:
                            raise ValueError(
                                f"estimator file {self.estimator_file} has no tensor '{name}' "
                                f"(layer {self.layer})"
                            )
                        stack.append(tensors.get_tensor(name).float())
        except OSError as error:
            raise ValueError(f"cannot read estimator file {self.estimator_file}: {error}") from None
        p_q, p_k = (torch.stack(stack) for stack in stacks)  # [H, 3D, D]
        if p_q.dim() != 3 or p_q.shape[1] != 3 * p_q.shape[2] or p_q.shape != p_k.shape:
            raise ValueError(
                f"estimator file {self.estimator_file} holds p_q {list(p_q.shape)} and p_k "
                f"{list(p_k.shape)} for layer {self.layer}; expected [H, 3D, D] each"
            )
        return p_q, p_k


@dataclass(frozen=True)
class Profile:
    model: str
    head_dim: int
    layers: Mapping[int, LayerProfile]
    source: Path | None = None

    def layer(self, index: int) -> LayerProfile | None:
        """The settings of layer `index`, or None for a layer the profile does not cover."""
        return self.layers.get(index)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        """Reads and validates a profile JSON; errors name the file and the field."""
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except OSError as error:
            raise ValueError(f"cannot read profile {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"profile {path} is not JSON: {error}") from None
        return cls.from_dict(document, source=path)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: Path | None = None) -> Profile:
        where = f"profile {source}" if source else "profile"
        if not isinstance(document, Mapping):
            message = f"{where} is a JSON {type(document).__name__}; expected an object"
            raise ValueError(message)  # noqa: TRY004 (a malformed file is a bad value)
        if document.get("format") != PROFILE_FORMAT or document.get("version") != PROFILE_VERSION:
            raise ValueError(
                f"{where} has format {document.get('format')!r} version "
                f"{document.get('version')!r}; expected '{PROFILE_FORMAT}' version {PROFILE_VERSION}"
            )
        estimator_file = None
        if isinstance(document.get("estimator_file"), str):
            base = source.parent if source is not None else Path()
            estimator_file = base / document["estimator_file"]
        layers = {}
        for layer_entry in _field(document, "layers", list, where):
            index = _field(layer_entry, "layer", int, where)
            heads = []
            names = []
            for position, head_entry in enumerate(_field(layer_entry, "heads", list, where)):
                head_where = f"{where} layer {index} head {position}"
                if _field(head_entry, "head", int, head_where) != position:
                    raise ValueError(
                        f"{head_where} is numbered {head_entry['head']}; expected heads "
                        f"numbered 0..H-1 in order"
                    )
                sparsity = float(_field(head_entry, "sparsity", (int, float), head_where))
                if not 0.0 <= sparsity < 1.0:
                    raise ValueError(f"{head_where} has sparsity {sparsity}; expected [0, 1)")
                threshold = head_entry.get("threshold")
                if threshold is not None and not 0.0 < float(threshold) <= 1.0:
                    raise ValueError(f"{head_where} has threshold {threshold}; expected (0, 1]")
                tile = parse_tile(_field(head_entry, "tile", str, head_where), f"{head_where} tile")
                heads.append(
                    HeadSettings(tile, sparsity, None if threshold is None else float(threshold))
                )
                if isinstance(head_entry.get("p_q"), str) and isinstance(
                    head_entry.get("p_k"), str
                ):
                    names.append((head_entry["p_q"], head_entry["p_k"]))
            complete = estimator_file is not None and len(names) == len(heads)
            layers[index] = LayerProfile(
                index,
                tuple(heads),
                estimator_file=estimator_file if complete else None,
                estimator_names=tuple(names) if complete else (),
            )
        return cls(
            model=str(document.get("model", "unnamed")),
            head_dim=int(document.get("head_dim", 128)),
            layers=layers,
            source=source,
        )


def _field(entry: Any, name: str, kind: Any, where: str) -> Any:
    if not isinstance(entry, Mapping) or name not in entry:
        raise ValueError(f"{where} has no field '{name}'")
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        message = f"{where} field '{name}' is {value!r}; expected {_kind_name(kind)}"
        raise ValueError(message)  # noqa: TRY004 (a malformed file is a bad value)
    return value


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _diagonal_blocks(projection: torch.Tensor) -> torch.Tensor | None:
    """P's diagonals [H, 3, D] (P[h, c D + d, d]) when every other entry of the [H, 3D, D]
    projection is zero, else None."""
    heads, features, dim = projection.shape
    if dim == 1 or features != 3 * dim:
        return None
    host = projection.detach().to("cpu", torch.float32)
    diagonal = torch.diagonal(host.reshape(heads, 3, dim, dim), dim1=-2, dim2=-1)
    if not torch.equal(torch.diag_embed(diagonal).reshape(heads, features, dim), host):
        return None
    return diagonal.contiguous()
