"""Veda for diffusers' Wan 2.1 / 2.2 in one call, and q/k/v capture for calibration.

    import veda.diffusers
    veda.diffusers.enable(pipe, sparsity=0.95)      # pipe.transformer (and transformer_2: Wan 2.2)
    video = pipe(prompt, ...).frames
    veda.diffusers.disable(pipe)                    # the original processors, the same objects

What enable changes: the processor of every self-attention module `blocks[i].attn1` (cross-attention
`attn2` stays dense) becomes a VedaWanAttnProcessor, which does what diffusers' WanAttnProcessor
does (q/k/v projections, fused or not, RMS qk-norm, rotary embedding, output projection) and calls
veda.sparse_attention for the attention itself. It also adds a forward pre-hook on each transformer
that reads the latent grid from the input [B, C, F, H, W] and config.patch_size
(grid = F/pt x H/ph x W/pw) and counts denoising steps.

How steps are counted: one step is one timestep value. The pre-hook reads the call's timestep
(its maximum for Wan 2.2 TI2V's per-token timesteps; one host read per transformer call, outside
any compiled graph); calls with the same timestep as the previous call (classifier-free
guidance's conditional and unconditional passes) are the same step, a smaller timestep is the next
step, and a larger one starts a new generation at step 0. Both experts of a Wan 2.2 pipeline share
one counter, so `dense_steps` counts the steps of the whole generation. Steps 0..dense_steps-1 run
dense (the original processor), as do the layers in `dense_layers`.

Per-step sparsity: `step_sparsity` gives step i its own sparsity (a plan per distinct value).
front_loaded_sparsity makes one that spends the attention work of a uniform sparsity unevenly:
more key tiles in the first, high-noise steps, whose errors the later steps carry into the whole
clip, and fewer afterwards, for the same mean kept tiles (testbed/README.md measures it).

Dense fallbacks (the original processor runs, bit-identical to diffusers): calls whose length is
not the grid's token count (short or unequal-length calls, or no grid seen), calls with an
encoder sequence, an attention mask or added image keys, and context-parallel configurations
(Ulysses and ring need their all-to-all in diffusers' dispatcher; not supported yet).

torch.compile: the two veda ops are single opaque nodes with fake implementations; the pre-hook is
excluded from tracing (torch._dynamo.disable), and the processor reads only the grid, a
sparse/dense flag and the step's sparsity (set by the pre-hook), so a compiled transformer holds
at most a dense variant and a sparse one per distinct sparsity (one without step_sparsity).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .attention import METHODS, parse_grid, sparse_attention
from .profile import LayerProfile, Profile, parse_tile

ProfileArgument = str | os.PathLike | Profile | Mapping[str, str | os.PathLike | Profile] | None
_STATE_ATTRIBUTE = "_veda_state"


@dataclass(frozen=True)
class VedaConfig:
    sparsity: float = 0.95
    method: str = "meanpool"
    dense_steps: int = 0
    dense_layers: tuple[int, ...] = ()
    tile: tuple[int, int, int] = (1, 8, 16)
    low_memory: bool = True
    step_sparsity: tuple[float, ...] = ()  # per step (the last value beyond); empty: `sparsity`

    def sparsity_at(self, step: int) -> float:
        if not self.step_sparsity:
            return self.sparsity
        return self.step_sparsity[min(step, len(self.step_sparsity) - 1)]


class _StepTracker:
    """Latent grid and denoising step of the current transformer call (see the module doc)."""

    def __init__(self) -> None:
        self.grid: tuple[int, int, int] | None = None
        self.step = 0
        self.generation = -1
        self.last_timestep: float | None = None

    def observe(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden_states = args[0] if args else kwargs.get("hidden_states")  # [B, C, F, H, W]
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        self.grid = None
        if isinstance(hidden_states, torch.Tensor) and hidden_states.dim() == 5:
            p_t, p_h, p_w = module.config.patch_size
            frames, height, width = hidden_states.shape[2:]
            self.grid = (int(frames) // p_t, int(height) // p_h, int(width) // p_w)
        if isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
            value = float(timestep.detach().max())
        elif isinstance(timestep, (int, float)):
            value = float(timestep)
        else:
            return
        if self.last_timestep is None or value > self.last_timestep:
            self.step = 0
            self.generation += 1
        elif value < self.last_timestep:
            self.step += 1
        self.last_timestep = value

    def reset(self) -> None:
        self.step, self.last_timestep = 0, None


class _EnableState:
    def __init__(self, config: VedaConfig, tracker: _StepTracker) -> None:
        self.config = config
        self.tracker = tracker
        self.sparse_step = True  # False during the first dense_steps steps
        # This step's sparsity, set here (outside any compiled graph) so that a compiled
        # processor sees one float per scheduled value, not the step counter.
        self.sparsity = config.sparsity_at(0)

    def observe(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.tracker.observe(module, args, kwargs)
        self.sparse_step = self.tracker.step >= self.config.dense_steps
        self.sparsity = self.config.sparsity_at(self.tracker.step)


class VedaWanAttnProcessor:
    """diffusers' WanAttnProcessor for self-attention with Veda's sparse attention inside."""

    def __init__(
        self,
        original: Any,
        state: _EnableState,
        layer: int,
        layer_profile: LayerProfile | None,
    ) -> None:
        self.original = original
        self.state = state
        self.layer = layer
        self.layer_profile = layer_profile
        self.dense_layer = layer in state.config.dense_layers
        # With step_sparsity: the profile at each scheduled sparsity (shapes, estimator kept).
        self.scheduled_profiles = {
            sparsity: layer_profile.with_sparsity(sparsity)
            for sparsity in set(state.config.step_sparsity)
            if layer_profile is not None
        }

    # diffusers sets these on processors (set_attention_backend, context parallelism); they belong
    # to the original processor, which runs every dense fallback.
    @property
    def _attention_backend(self) -> Any:
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value: Any) -> None:
        self.original._attention_backend = value

    @property
    def _parallel_config(self) -> Any:
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value: Any) -> None:
        self.original._parallel_config = value

    def uses_veda(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # [B, L, C]
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> bool:
        grid = self.state.tracker.grid
        return (
            self.state.sparse_step
            and not self.dense_layer
            and encoder_hidden_states is None
            and attention_mask is None
            and getattr(attn, "add_k_proj", None) is None
            and self._parallel_config is None
            and grid is not None
            and hidden_states.shape[1] == grid[0] * grid[1] * grid[2]
        )

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # [B, L, C]
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not self.uses_veda(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs
            )
        config = self.state.config
        sparsity = self.state.sparsity
        profile = self.scheduled_profiles.get(sparsity, self.layer_profile)
        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)  # [B, L, H, D]
        hidden_states = sparse_attention(
            query,
            key,
            value,
            grid=self.state.tracker.grid,
            sparsity=sparsity,
            method=config.method,
            tile=config.tile,
            profile=profile,
            low_memory=config.low_memory,
        )
        hidden_states = hidden_states.flatten(2, 3).type_as(query)  # [B, L, H*D]
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


def wan_self_attention_qkv(
    attn: torch.nn.Module,
    hidden_states: torch.Tensor,  # [B, L, C]
    rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, L, H, D] of a WanAttention self-attention call, as WanAttnProcessor makes them:
    projections (fused or not), RMS norm over all heads, split into heads, rotary embedding."""
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
    query = attn.norm_q(query)
    key = attn.norm_k(key)
    query = query.unflatten(2, (attn.heads, -1))
    key = key.unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        query = _apply_rotary_emb(query, *rotary_emb)
        key = _apply_rotary_emb(key, *rotary_emb)
    return query, key, value


def _apply_rotary_emb(
    hidden_states: torch.Tensor,  # [B, L, H, D]
    freqs_cos: torch.Tensor,  # [1, L, 1, D]
    freqs_sin: torch.Tensor,  # [1, L, 1, D]
) -> torch.Tensor:
    # diffusers 0.42 WanAttnProcessor.apply_rotary_emb, unchanged.
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


def enable(
    pipe_or_transformer: Any,
    profile: ProfileArgument = None,
    sparsity: float | None = None,
    method: str = "meanpool",
    dense_steps: int = 0,
    dense_layers: Iterable[int] = (),
    tile: str | Sequence[int] = (1, 8, 16),
    low_memory: bool = True,
    step_sparsity: Sequence[float] | None = None,
) -> None:
    """Replaces the self-attention processors of a Wan pipeline or WanTransformer3DModel.

    Args:
        pipe_or_transformer: a diffusers Wan pipeline (its `transformer` and, for Wan 2.2,
            `transformer_2`) or a WanTransformer3DModel (also one wrapped by torch.compile).
        profile: a veda profile (path or veda.Profile) giving each layer's per-head tile shape and
            sparsity; for a two-expert pipeline a mapping {"transformer": ..., "transformer_2": ...}.
            Layers it does not cover use `tile` and `sparsity`.
        sparsity: fraction of key tiles skipped, in [0, 1). None (default): the profile's
            per-head sparsity in the layers it covers, 0.95 elsewhere. Given with a profile, it
            replaces the profile's sparsity of every head (tile shapes and estimator stay), so one
            calibrated profile runs at any budget.
        method: tile scoring, "meanpool", "veda" (the profile's estimator), "oracle"
            (full attention's tile heat: two dense passes a call, for measurements) or "dense".
        dense_steps: the first denoising steps run dense (see the module doc for how steps count).
        dense_layers: block indices whose self-attention stays dense.
        tile: tile shape (pt, ph, pw), pt*ph*pw = 128.
        low_memory: True (default): no tile-major copies of k and v on the GPU
            (veda.sparse_attention's low_memory); False keeps them: 2 x k's size more memory per
            layer call, no faster at Wan 480p or 81-frame 720p, 2-5% faster at 161 frames.
        step_sparsity: the sparsity of each denoising step, steps past its end at its last
            value (front_loaded_sparsity makes one); it replaces `sparsity` (give one of them)
            and, like it, the profile's per-head sparsity. Under torch.compile each distinct
            value is a graph of its own.

    Calling enable again replaces the previous settings.
    """
    transformers = _wan_transformers(pipe_or_transformer, "enable")
    if sparsity is not None:
        if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool):
            raise TypeError(
                f"sparsity is a {type(sparsity).__name__}; expected a float in [0, 1) or None"
            )
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity {sparsity} is outside [0, 1)")
    if method not in METHODS:
        raise ValueError(
            f"method {method!r} is not known; expected dense, oracle, meanpool or veda"
        )
    if not isinstance(dense_steps, int) or isinstance(dense_steps, bool) or dense_steps < 0:
        raise ValueError(f"dense_steps is {dense_steps!r}; expected a non-negative integer")
    if not isinstance(low_memory, bool):
        raise TypeError(f"low_memory is a {type(low_memory).__name__}; expected True or False")
    # A schedule replaces the profile's sparsities through the processors' per-value profiles.
    schedule = _check_step_sparsity(step_sparsity, sparsity)
    layers_dense = tuple(sorted(set(dense_layers)))
    config = VedaConfig(
        VedaConfig.sparsity if sparsity is None else float(sparsity),
        method,
        dense_steps,
        layers_dense,
        parse_tile(tile),
        low_memory,
        schedule,
    )
    profiles = _resolve_profiles(profile, [name for name, _ in transformers])
    for name, transformer in transformers:
        blocks = len(transformer.blocks)
        for layer in layers_dense:
            if not isinstance(layer, int) or not 0 <= layer < blocks:
                raise ValueError(f"dense_layers holds {layer!r}; {name} has layers 0..{blocks - 1}")
        _check_profile(profiles.get(name), transformer, name)
    disable(pipe_or_transformer)

    tracker = _StepTracker()  # one counter for both experts of a pipeline
    state = _EnableState(config, tracker)
    for name, transformer in transformers:
        layer_profiles = profiles.get(name)
        originals = {}
        for layer, block in enumerate(transformer.blocks):
            original = block.attn1.processor
            originals[layer] = original
            layer_profile = layer_profiles.layer(layer) if layer_profiles else None
            if layer_profile is not None and sparsity is not None:
                layer_profile = layer_profile.with_sparsity(float(sparsity))
            block.attn1.set_processor(VedaWanAttnProcessor(original, state, layer, layer_profile))
        hook = transformer.register_forward_pre_hook(
            _dynamo_disabled(state.observe), with_kwargs=True
        )
        setattr(transformer, _STATE_ATTRIBUTE, (state, originals, hook))


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0


def _check_step_sparsity(
    step_sparsity: Sequence[float] | None, sparsity: float | None
) -> tuple[float, ...]:
    if step_sparsity is None:
        return ()
    if sparsity is not None:
        raise ValueError(
            f"sparsity {sparsity} and step_sparsity were both given; expected one of them"
        )
    if isinstance(step_sparsity, (str, bytes)) or not isinstance(step_sparsity, Sequence):
        raise TypeError(
            f"step_sparsity is a {type(step_sparsity).__name__}; expected a sequence of floats"
        )
    if not step_sparsity:
        raise ValueError("step_sparsity is empty; expected one sparsity per denoising step")
    for step, value in enumerate(step_sparsity):
        if not _is_fraction(value):
            raise ValueError(f"step_sparsity[{step}] is {value!r}; expected a float in [0, 1)")
    return tuple(float(value) for value in step_sparsity)


def front_loaded_sparsity(
    steps: int, sparsity: float, early_steps: int, early_budget: float = 2.0
) -> list[float]:
    """Per-step sparsities (enable's step_sparsity) with the attention work of `sparsity` at every
    step: the first `early_steps` keep `early_budget` times its fraction of key tiles (at most
    all), the later ones the fraction that brings the mean over `steps` back to 1 - sparsity.
    E.g. (30, 0.95, 6, 2.0): 6 steps at 0.90, 24 at 0.9625.

    Raises ValueError where the early steps alone would spend more than the whole budget, or on
    values out of range."""
    for name, value in (("steps", steps), ("early_steps", early_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} is {value!r}; expected a non-negative integer")
    if not 0 <= early_steps < steps:
        raise ValueError(f"early_steps {early_steps} is outside [0, steps = {steps})")
    if not _is_fraction(sparsity):
        raise ValueError(f"sparsity is {sparsity!r}; expected a float in [0, 1)")
    if not isinstance(early_budget, (int, float)) or not early_budget >= 1.0:
        raise ValueError(f"early_budget is {early_budget!r}; expected a number >= 1")
    kept = 1.0 - sparsity
    early_kept = min(1.0, early_budget * kept)
    late_kept = (kept * steps - early_kept * early_steps) / (steps - early_steps)
    if late_kept <= 0.0:
        raise ValueError(
            f"{early_steps} early steps keeping {early_kept:g} of the key tiles spend the whole "
            f"budget of {steps} steps at sparsity {sparsity:g}; expected fewer early steps or a "
            "smaller early_budget"
        )
    return [1.0 - early_kept] * early_steps + [1.0 - late_kept] * (steps - early_steps)


def disable(pipe_or_transformer: Any) -> None:
    """Restores the processors that enable replaced (the same objects) and removes its hook."""
    for _, transformer in _wan_transformers(pipe_or_transformer, "disable"):
        saved = getattr(transformer, _STATE_ATTRIBUTE, None)
        if saved is None:
            continue
        _, originals, hook = saved
        for layer, original in originals.items():
            transformer.blocks[layer].attn1.set_processor(original)
        hook.remove()
        delattr(transformer, _STATE_ATTRIBUTE)


def is_enabled(pipe_or_transformer: Any) -> bool:
    return any(
        hasattr(transformer, _STATE_ATTRIBUTE)
        for _, transformer in _wan_transformers(pipe_or_transformer, "is_enabled")
    )


class _CaptureProcessor:
    """Saves q, k, v of chosen self-attention calls, then runs the wrapped processor."""

    def __init__(self, inner: Any, session: _CaptureSession, name: str, layer: int) -> None:
        self.inner = inner
        self.session = session
        self.name = name
        self.layer = layer

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # [B, L, C]
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        grid = self.session.tracker.grid
        if (
            encoder_hidden_states is None
            and attention_mask is None
            and grid is not None
            and hidden_states.shape[1] == grid[0] * grid[1] * grid[2]
            and self.session.wants(self.layer)
        ):
            query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
            self.session.save(self.name, self.layer, query, key, value)
        return self.inner(
            attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs
        )


class _CaptureSession:
    def __init__(
        self,
        out_dir: Path,
        layers: frozenset | None,
        steps: frozenset | None,
        tracker: _StepTracker,
    ) -> None:
        self.out_dir = out_dir
        self.layers = layers
        self.steps = steps
        self.tracker = tracker
        self.prompt: int | None = None
        self.calls: dict[tuple[str, int, int, int], int] = {}
        self.written: list[Path] = []

    def wants(self, layer: int) -> bool:
        return (self.layers is None or layer in self.layers) and (
            self.steps is None or self.tracker.step in self.steps
        )

    def save(
        self,
        name: str,
        layer: int,
        query: torch.Tensor,  # [B, N, H, D]
        key: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        from safetensors.torch import save_file

        tracker = self.tracker
        sample = self.prompt if self.prompt is not None else max(tracker.generation, 0)
        slot = (name, sample, tracker.step, layer)
        call = self.calls.get(slot, 0)
        self.calls[slot] = call + 1
        grid = "x".join(str(side) for side in tracker.grid)
        metadata = {
            "grid": grid,
            "layer": str(layer),
            "step": str(tracker.step),
            "transformer": name,
            "sample": str(sample),
            "call": str(call),
        }
        tensors = {
            "q": query.detach().contiguous().cpu(),
            "k": key.detach().contiguous().cpu(),
            "v": value.detach().contiguous().cpu(),
        }
        path = (
            self.out_dir
            / f"{name}.sample{sample:03d}.step{tracker.step:03d}.layer{layer:02d}.call{call}.safetensors"
        )
        temporary = path.with_name(path.name + ".tmp")
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)
        self.written.append(path)


def capture(
    pipe_or_transformer: Any,
    run_fn_or_prompts: Callable[[], Any] | str | Sequence[str],
    *,
    out_dir: str | os.PathLike,
    layers: Iterable[int] | None = None,
    steps: Iterable[int] | None = None,
    **pipe_kwargs: Any,
) -> list[Path]:
    """Writes q, k, v of self-attention per layer and step, the input of `veda calibrate`.

    Args:
        pipe_or_transformer: a Wan pipeline or WanTransformer3DModel (as for enable).
        run_fn_or_prompts: a callable run once with no arguments (it calls the pipeline or the
            transformer itself), or prompts: the pipeline is called as pipe(prompt=p, **pipe_kwargs)
            for each.
        out_dir: folder for the files (created if missing).
        layers: block indices to capture (default: all).
        steps: denoising steps to capture, counted as in enable (default: all).

    Each file holds q, k, v [B, N, H, D] (after qk-norm and rotary embedding, in the model's
    dtype) of one self-attention call, with metadata {"grid": "TxHxW", "layer": "i", "step": "s",
    "transformer": name, "sample": prompt index (or generation index for a callable), "call":
    index among calls of the same layer and step, e.g. 0 conditional, 1 unconditional}; named
    <transformer>.sample<p>.step<s>.layer<i>.call<c>.safetensors. Returns the paths written.
    Processors active before (Veda's included) run as usual and are restored afterwards.
    """
    transformers = _wan_transformers(pipe_or_transformer, "capture")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer_set = None if layers is None else frozenset(_check_indices("layers", layers))
    step_set = None if steps is None else frozenset(_check_indices("steps", steps))
    if layer_set is not None:
        for name, transformer in transformers:
            outside = sorted(layer for layer in layer_set if layer >= len(transformer.blocks))
            if outside:
                raise ValueError(
                    f"layers holds {outside}; {name} has layers 0..{len(transformer.blocks) - 1}"
                )
    if callable(run_fn_or_prompts):
        prompts = None
    elif isinstance(run_fn_or_prompts, str):
        prompts = [run_fn_or_prompts]
    elif isinstance(run_fn_or_prompts, Sequence) and all(
        isinstance(p, str) for p in run_fn_or_prompts
    ):
        prompts = list(run_fn_or_prompts)
    else:
        raise TypeError(
            f"run_fn_or_prompts is a {type(run_fn_or_prompts).__name__}; expected a callable or "
            "prompts (str or a sequence of str)"
        )
    if prompts is not None and (
        isinstance(pipe_or_transformer, torch.nn.Module) or not callable(pipe_or_transformer)
    ):
        raise TypeError(
            "prompts need a pipeline to call; pass a callable to capture a bare transformer"
        )

    tracker = _StepTracker()
    session = _CaptureSession(out, layer_set, step_set, tracker)
    installed = []
    try:
        for name, transformer in transformers:
            for layer, block in enumerate(transformer.blocks):
                inner = block.attn1.processor
                block.attn1.set_processor(_CaptureProcessor(inner, session, name, layer))
                installed.append((block.attn1, inner))
            hook = transformer.register_forward_pre_hook(
                _dynamo_disabled(tracker.observe), with_kwargs=True
            )
            installed.append((hook, None))
        if prompts is None:
            run_fn_or_prompts()
        else:
            for index, prompt in enumerate(prompts):
                session.prompt = index
                tracker.reset()
                pipe_or_transformer(prompt=prompt, **pipe_kwargs)
    finally:
        for target, inner in reversed(installed):
            if inner is None:
                target.remove()
            else:
                target.set_processor(inner)
    return session.written


def _dynamo_disabled(function: Callable) -> Callable:
    # The step counter reads the timestep on the host and mutates Python state: keep it out of
    # compiled graphs (a graph break at the transformer's entry, nothing inside the blocks).
    return torch._dynamo.disable(function)


def _wan_transformers(obj: Any, caller: str) -> list[tuple[str, torch.nn.Module]]:
    if isinstance(obj, torch.nn.Module):
        candidates = [("transformer", obj)]
    else:
        candidates = [
            (name, getattr(obj, name))
            for name in ("transformer", "transformer_2")
            if getattr(obj, name, None) is not None
        ]
    result = []
    for name, module in candidates:
        base = getattr(module, "_orig_mod", module)  # torch.compile's OptimizedModule
        if not _is_wan_transformer(base):
            raise TypeError(
                f"{caller} expects a Wan pipeline or a WanTransformer3DModel; {name} is a "
                f"{type(base).__name__} (no blocks[i].attn1 or config.patch_size)"
            )
        result.append((name, base))
    if not result:
        raise TypeError(
            f"{caller} expects a Wan pipeline or a WanTransformer3DModel; got a "
            f"{type(obj).__name__} with neither `transformer` nor `transformer_2`"
        )
    return result


def _is_wan_transformer(module: Any) -> bool:
    blocks = getattr(module, "blocks", None)
    config = getattr(module, "config", None)
    return (
        isinstance(module, torch.nn.Module)
        and blocks is not None
        and len(blocks) > 0
        and all(
            hasattr(block, "attn1") and hasattr(block.attn1, "set_processor") for block in blocks
        )
        and config is not None
        and len(getattr(config, "patch_size", ())) == 3
    )


def _resolve_profiles(profile: ProfileArgument, names: list[str]) -> dict[str, Profile]:
    if profile is None:
        return {}
    if isinstance(profile, Mapping):
        unknown = sorted(set(profile) - set(names))
        if unknown:
            raise ValueError(f"profile names {unknown}; this pipeline has {names}")
        return {name: _load_profile(value) for name, value in profile.items()}
    if len(names) > 1:
        raise ValueError(
            f"one profile for {len(names)} transformers ({', '.join(names)}); give a mapping "
            "{name: profile}, each expert calibrated on its own"
        )
    return {names[0]: _load_profile(profile)}


def _load_profile(value: str | os.PathLike | Profile) -> Profile:
    if isinstance(value, Profile):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Profile.load(value)
    raise TypeError(f"profile is a {type(value).__name__}; expected a path or a veda.Profile")


def _check_profile(profile: Profile | None, transformer: torch.nn.Module, name: str) -> None:
    if profile is None:
        return
    heads = transformer.config.num_attention_heads
    head_dim = transformer.config.attention_head_dim
    if profile.head_dim != head_dim:
        raise ValueError(
            f"profile {profile.model} has head dim {profile.head_dim} but {name} has {head_dim}"
        )
    for index, layer in profile.layers.items():
        if not 0 <= index < len(transformer.blocks):
            raise ValueError(
                f"profile {profile.model} has layer {index}; {name} has layers "
                f"0..{len(transformer.blocks) - 1}"
            )
        if len(layer.heads) != heads:
            raise ValueError(
                f"profile {profile.model} layer {index} has {len(layer.heads)} heads but {name} "
                f"has {heads}"
            )


def _check_indices(name: str, values: Iterable[int]) -> list[int]:
    result = list(values)
    for value in result:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} holds {value!r}; expected non-negative integers")
    return result


__all__ = [
    "VedaConfig",
    "VedaWanAttnProcessor",
    "capture",
    "disable",
    "enable",
    "front_loaded_sparsity",
    "is_enabled",
    "parse_grid",
    "wan_self_attention_qkv",
]
