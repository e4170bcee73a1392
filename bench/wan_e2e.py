"""End-to-end step time of diffusers' Wan2.1 transformer: dense (cuDNN SDPA) vs Veda.

One denoising step = one call of WanTransformer3DModel on the classifier-free-guidance batch
(B = 2; diffusers' WanPipeline makes two B = 1 calls instead, which costs about the same), with the
real configs of Wan2.1-T2V-14B and -1.3B and random weights (bf16 parameters, the modules diffusers
keeps in float32 in float32, as from_pretrained(torch_dtype=torch.bfloat16) loads them): the step
time does not depend on the weights' values at a fixed sparsity budget.

    python3 bench/wan_e2e.py                               # all configs, default variants, on CUDA
    python3 bench/wan_e2e.py --configs 14b-720p-81f --variants dense,veda95 --repeats 3
    python3 bench/wan_e2e.py --tiny                        # tiny model on the CPU (the test)
    bash bench/run_wan_e2e.sh [ARGS]                       # on the device: environment, then this

Configs (latents: VAE stride 4x8x8, 16 channels; patch 1x2x2; text [B, 512, 4096]):

    name            model            video             latent               grid = tokens
    1.3b-480p-81f   Wan2.1-T2V-1.3B  832x480, 81 fr.   [B, 16, 21, 60, 104] 21x30x52 = 32,760
    14b-720p-81f    Wan2.1-T2V-14B   1280x720, 81 fr.  [B, 16, 21, 90, 160] 21x45x80 = 75,600
    14b-720p-161f   Wan2.1-T2V-14B   1280x720, 161 fr. [B, 16, 41, 90, 160] 41x45x80 = 147,600
    tiny            2 layers, 2 heads of 32         [B, 16, 4, 16, 32]   4x8x16 = 512 (CPU test)

The default runs the first three in this order (cheapest first: a run cut short by its time limit
loses the 161-frame steps).

Variants (all run the whole model; every SDPA call, cross-attention included, runs under the same
backend: cuDNN, or FLASH where cuDNN refuses the shapes; the backend that ran is recorded):

    dense      diffusers' own processors (the baseline; SDPA gets the [B, H, N, D] views of
               [B, N, H, D] that diffusers' native backend passes, no copies)
    vedaNN     veda.diffusers.enable(model, sparsity=NN/100): meanpool scoring, tile 1x8x16
    profileNN  enable(model, profile=...) with a synthetic profile: method "veda" (the distilled
               estimator, random P), heads cycling through tiles 1x8x16, 8x4x4, 2x4x16, 2x8x8
               (head-aware tiling's shapes), one estimator for all layers; CUDA only
    noattn     self-attention returns v instead of attention, everything else identical
               (projections, qk-norm, rotary embedding, output projection): the non-attention time

attention share = (step - noattn) / step; attention x dense = (dense - noattn) / (step - noattn).

Time: CUDA events around each call. Each variant first runs `--warmup` steps on the model cut to
its first `--warmup-blocks` blocks (same shapes: cuBLAS, cuDNN graphs, veda plans and the caching
allocator are ready after it, at a fraction of a full step's cost), then `--repeats` full steps;
the median is reported. `--time-limit S` skips a step predicted (from the warm-up) to end more
than S seconds after the start. Results go to --out (JSON, rewritten after every variant, so a
killed run keeps what it measured) and a Markdown table beside it (.md); progress is printed with
timestamps.

Measured on an H200 (bench/RESULTS.md, 2026-11-29): 14B 720p 81 frames: dense 24.7 s a step
(self-attention 67%), Veda 95% 9.5 s (2.59x); 161 frames: dense 80.2 s (80%), Veda 95% 20.4 s
(3.92x); 1.3B 480p: 2.05x. The default run takes ~5 minutes after the build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# diffusers' WanTransformer3DModel configs of the Wan-AI/Wan2.1-T2V-*-Diffusers checkpoints; the
# 14B values are also the class's __init__ defaults (diffusers 0.42).
WAN_COMMON: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
}
MODELS: dict[str, dict[str, Any]] = {
    "14b": {**WAN_COMMON, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
    "1.3b": {**WAN_COMMON, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "tiny": {
        **WAN_COMMON,
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "text_dim": 32,
        "ffn_dim": 128,
        "num_layers": 2,
    },
}
VAE_STRIDE = (4, 8, 8)  # frames, height, width
LATENT_CHANNELS = 16


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: str
    frames: int  # video frames (4k + 1)
    height: int  # pixels
    width: int
    text_tokens: int = 512
    repeats: int = 2  # default timed steps (the 161-frame dense step alone is ~77 s)

    def latent_shape(self, batch: int) -> tuple[int, int, int, int, int]:
        t = (self.frames - 1) // VAE_STRIDE[0] + 1
        return (
            batch,
            LATENT_CHANNELS,
            t,
            self.height // VAE_STRIDE[1],
            self.width // VAE_STRIDE[2],
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        _, _, t, h, w = self.latent_shape(1)
        p_t, p_h, p_w = MODELS[self.model]["patch_size"]
        return (t // p_t, h // p_h, w // p_w)

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)


CONFIGS: dict[str, RunConfig] = {
    c.name: c
    for c in (
        RunConfig("14b-720p-81f", "14b", 81, 720, 1280, repeats=2),
        RunConfig("14b-720p-161f", "14b", 161, 720, 1280, repeats=1),
        RunConfig("1.3b-480p-81f", "1.3b", 81, 480, 832, repeats=3),
        RunConfig("tiny", "tiny", 13, 128, 256, text_tokens=8, repeats=1),
    )
}
# Cheapest first: a call cut short by its time limit loses the 161-frame steps, the costliest.
DEFAULT_CONFIGS = ("1.3b-480p-81f", "14b-720p-81f", "14b-720p-161f")
# dense first: the baseline survives a run cut short; noattn last (the cheapest).
DEFAULT_VARIANTS = ("dense", "veda95", "veda90", "noattn")
PROFILE_TILES = ((1, 8, 16), (8, 4, 4), (2, 4, 16), (2, 8, 8))
SDPA_CHOICES = ("cudnn", "flash", "default")


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # dense | noattn | veda | profile
    sparsity: float = 0.0


def parse_variant(name: str) -> Variant:
    if name in ("dense", "noattn"):
        return Variant(name, name)
    match = re.fullmatch(r"(veda|profile)(\d+(?:\.\d+)?)", name)
    if match and float(match.group(2)) < 100:
        return Variant(name, match.group(1), float(match.group(2)) / 100)
    raise ValueError(
        f"variant {name!r} is not known; expected dense, noattn, vedaNN or profileNN "
        "(NN = sparsity in percent, below 100, e.g. veda95)"
    )


# ---------------------------------------------------------------------------------------------
# Logging and results


class Log:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{self.elapsed():6.1f}s] {message}", flush=True)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def summary_rows(results: list[dict]) -> list[dict]:
    """Per measured row: step ms, x dense, attention ms (step - noattn) and its share and speedup."""
    rows = []
    by_config: dict[str, dict[str, dict]] = {}
    for r in results:
        if r.get("step_ms") is not None:
            by_config.setdefault(r["config"], {})[r["variant"]] = r
    for r in results:
        if r.get("step_ms") is None:
            continue
        measured = by_config[r["config"]]
        dense = measured.get("dense", {}).get("step_ms")
        noattn = measured.get("noattn", {}).get("step_ms")
        step = r["step_ms"]
        row = {
            "config": r["config"],
            "tokens": r["tokens"],
            "variant": r["variant"],
            "sdpa": r["sdpa"],
            "step_ms": step,
            "x_dense": dense / step if dense else None,
            "attention_ms": None,
            "attention_share": None,
            "attention_x_dense": None,
            "attention_tflops": None,  # dense-equivalent: 4*B*N^2*D*H*layers / attention time
        }
        if noattn is not None and r["variant"] != "noattn":
            attention = step - noattn
            row["attention_ms"] = attention
            row["attention_share"] = attention / step
            if dense is not None and attention > 0:
                row["attention_x_dense"] = (dense - noattn) / attention
            if r.get("attention_flop") and attention > 0:
                row["attention_tflops"] = r["attention_flop"] / attention / 1e9
        rows.append(row)
    return rows


def markdown_table(results: list[dict]) -> str:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        (
            "| config | tokens | variant | SDPA | step ms | x dense | attention ms "
            "| attention share | attention x dense |"
        ),
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(results):
        lines.append(
            f"| {row['config']} | {row['tokens']:,} | {row['variant']} | {row['sdpa']} "
            f"| {row['step_ms']:.1f} | {number(row['x_dense'], '.2f')} "
            f"| {number(row['attention_ms'], '.1f')} | {number(row['attention_share'], '.1%')} "
            f"| {number(row['attention_x_dense'], '.2f')} |"
        )
    skipped = [r for r in results if r.get("step_ms") is None]
    for r in skipped:
        lines.append(f"\n{r['config']} {r['variant']}: not measured ({r.get('skipped')})")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Model, inputs, processors


def build_model(spec: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int):
    """WanTransformer3DModel with random weights, built on `device`: parameters in `dtype`
    except those of diffusers' _keep_in_fp32_modules (float32, as from_pretrained loads them);
    buffers (the rotary tables) untouched."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):  # default init runs on the device: seconds for 14B parameters
        model = WanTransformer3DModel(**spec)
    keep = tuple(WanTransformer3DModel._keep_in_fp32_modules or ())
    for module_name, module in model.named_modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None:
                continue
            path = f"{module_name}.{name}" if module_name else name
            target = torch.float32 if any(k in path.split(".") for k in keep) else dtype
            # One parameter at a time: the float32 model (4 bytes/param) is freed as it goes.
            module._parameters[name] = torch.nn.Parameter(
                parameter.detach().to(target), requires_grad=False
            )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model.eval()


def make_inputs(config: RunConfig, batch: int, device: torch.device, dtype: torch.dtype, seed: int):
    generator = torch.Generator(device=device).manual_seed(seed)
    text_dim = MODELS[config.model]["text_dim"]
    return {
        # [B, 16, T_lat, H/8, W/8]
        "hidden_states": torch.randn(
            config.latent_shape(batch), generator=generator, device=device, dtype=dtype
        ),
        # one timestep per batch row, as WanPipeline passes t.expand(B)
        "timestep": torch.full((batch,), 999.0, device=device),
        # [B, 512, 4096]: umT5 embeddings
        "encoder_hidden_states": torch.randn(
            batch, config.text_tokens, text_dim, generator=generator, device=device, dtype=dtype
        ),
    }


class NoAttentionProcessor:
    """Self-attention without the attention: q, k, v exactly as diffusers makes them (veda's
    wan_self_attention_qkv mirrors WanAttnProcessor), then v [B, L, H, D] in place of the
    attention output, then the output projection. Other calls run the original processor."""

    def __init__(self, original: Any, qkv: Callable) -> None:
        self.original = original
        self.qkv = qkv  # veda.diffusers.wan_self_attention_qkv

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,  # [B, L, C]
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs
            )
        query, _key, value = self.qkv(attn, hidden_states, rotary_emb)  # [B, L, H, D]
        hidden_states = value.flatten(2, 3).type_as(query)  # [B, L, H*D]
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


def synthetic_profile(spec: dict[str, Any], sparsity: float, seed: int):
    """A veda.Profile: heads cycling through PROFILE_TILES at `sparsity`, random estimator
    parameters p_q, p_k [H, 3D, D] (small: near mean pooling). One LayerProfile serves every
    layer, so its parameters are uploaded once and one plan serves all layers, built in the
    warm-up; a calibrated profile has its own parameters per layer and builds a plan per layer
    in its first step (once per process), which a steady-state step time leaves out."""
    from veda.profile import HeadSettings, LayerProfile, Profile

    heads, dim = spec["num_attention_heads"], spec["attention_head_dim"]
    generator = torch.Generator().manual_seed(seed)
    settings = tuple(
        HeadSettings(PROFILE_TILES[h % len(PROFILE_TILES)], sparsity) for h in range(heads)
    )
    p_q, p_k = (0.01 * torch.randn(heads, 3 * dim, dim, generator=generator) for _ in "qk")
    shared = LayerProfile(0, settings, p_q=p_q, p_k=p_k)
    layers = dict.fromkeys(range(spec["num_layers"]), shared)
    return Profile(model="synthetic", head_dim=dim, layers=layers)


@contextlib.contextmanager
def variant_installed(model, variant: Variant, spec: dict[str, Any], seed: int) -> Iterator[None]:
    """Installs a variant's self-attention processors and removes them afterwards."""
    import veda.diffusers as vd

    if variant.kind == "dense":
        yield
        return
    if variant.kind == "noattn":
        originals = [block.attn1.processor for block in model.blocks]
        for block, original in zip(model.blocks, originals):
            block.attn1.set_processor(NoAttentionProcessor(original, vd.wan_self_attention_qkv))
        try:
            yield
        finally:
            for block, original in zip(model.blocks, originals):
                block.attn1.set_processor(original)
        return
    if variant.kind == "veda":
        vd.enable(model, sparsity=variant.sparsity)  # the one line of a user's script
    else:
        profile = synthetic_profile(spec, variant.sparsity, seed)
        vd.enable(model, profile=profile, sparsity=variant.sparsity, method="veda")
    try:
        yield
    finally:
        vd.disable(model)


@contextlib.contextmanager
def first_blocks(model, count: int) -> Iterator[None]:
    """The model cut to its first `count` blocks (0 or >= all: unchanged); same shapes per call."""
    blocks = model.blocks
    if 0 < count < len(blocks):
        model.blocks = torch.nn.ModuleList(list(blocks)[:count])
    try:
        yield
    finally:
        model.blocks = blocks


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "default":
        yield
        return
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[name]
    with sdpa_kernel(backend):
        yield


def timed_call(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    """(milliseconds, output) of one call: CUDA events on the GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end), out
    begin = time.perf_counter()
    out = fn()
    return (time.perf_counter() - begin) * 1e3, out


def attention_flop(config: RunConfig, batch: int) -> float:
    """Self-attention FLOP of one step: 4 * B * N^2 * D * H per layer (QK^T and PV)."""
    spec = MODELS[config.model]
    per_layer = 4 * batch * config.tokens**2 * spec["attention_head_dim"]
    return per_layer * spec["num_attention_heads"] * spec["num_layers"]


# ---------------------------------------------------------------------------------------------
# The benchmark


class Benchmark:
    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        self.args = args
        self.log = log
        self.device = torch.device(args.device)
        self.dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        self.results: list[dict] = []
        self.meta = environment(self.device, args)
        self.out = Path(args.out)

    def save(self) -> None:
        document = {"meta": self.meta, "results": self.results}
        document["summary"] = summary_rows(self.results)
        write_atomic(self.out, json.dumps(document, indent=2) + "\n")
        write_atomic(self.out.with_suffix(".md"), markdown_table(self.results))

    def run(self, configs: Sequence[RunConfig], variants: Sequence[Variant]) -> None:
        self.save()
        models = list(dict.fromkeys(c.model for c in configs))  # build each model once
        for model_name in models:
            spec = MODELS[model_name]
            begin = time.monotonic()
            model = build_model(spec, self.device, self.dtype, self.args.seed)
            params = sum(p.numel() for p in model.parameters())
            self.log(
                f"model {model_name}: {params:,} parameters, built on {self.device} in "
                f"{time.monotonic() - begin:.1f} s{self.memory()}"
            )
            for config in (c for c in configs if c.model == model_name):
                self.run_config(model, spec, config, variants)
            del model
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def memory(self) -> str:
        if self.device.type != "cuda":
            return ""
        return f" (GPU memory {torch.cuda.memory_allocated(self.device) / 2**30:.1f} GiB)"

    def run_config(self, model, spec, config: RunConfig, variants: Sequence[Variant]) -> None:
        args = self.args
        inputs = make_inputs(config, args.batch, self.device, self.dtype, args.seed + 1)
        repeats = args.repeats if args.repeats is not None else config.repeats
        flop = attention_flop(config, args.batch)
        self.log(
            f"config {config.name}: latent {list(config.latent_shape(args.batch))}, grid "
            f"{'x'.join(map(str, config.grid))} = {config.tokens:,} tokens, text "
            f"{config.text_tokens}, B = {args.batch}; self-attention {flop / 1e15:.2f} PFLOP a "
            f"step ({flop / 570e12:.1f} s at 570 TFLOP/s); {repeats} timed step(s) per variant"
        )
        dense_out: torch.Tensor | None = None
        for variant in variants:
            try:
                record, out = self.run_variant(model, spec, config, variant, inputs, repeats)
            except (RuntimeError, ValueError, TypeError) as error:  # reported; next variant
                self.log(f"    {variant.name}: failed: {type(error).__name__}: {error}")
                record = {"config": config.name, "tokens": config.tokens, "variant": variant.name}
                record.update(step_ms=None, skipped=f"error: {type(error).__name__}: {error}")
                record["sdpa"], out = None, None
            if out is not None:
                out = out.float().cpu()
                record["finite"] = bool(torch.isfinite(out).all())
                if variant.kind == "dense":
                    dense_out = out
                if dense_out is not None:
                    diff = (out - dense_out).norm() / dense_out.norm().clamp_min(1e-30)
                    record["rel_l2_vs_dense"] = float(diff)
            self.results.append(record)
            self.save()
        rows = [r for r in summary_rows(self.results) if r["config"] == config.name]
        for row in rows:
            share = row["attention_share"]
            self.log(
                f"  {config.name} {row['variant']:>10}: {row['step_ms']:10.1f} ms"
                + (f", x{row['x_dense']:.2f} dense" if row["x_dense"] else "")
                + (f", attention {share:.1%}" if share is not None else "")
                + (
                    f" ({row['attention_tflops']:.0f} dense-equivalent TFLOP/s)"
                    if row["attention_tflops"]
                    else ""
                )
            )

    def run_variant(self, model, spec, config, variant: Variant, inputs, repeats: int):
        args = self.args
        record: dict[str, Any] = {
            "config": config.name,
            "model": config.model,
            "tokens": config.tokens,
            "grid": list(config.grid),
            "batch": args.batch,
            "variant": variant.name,
            "kind": variant.kind,
            "sparsity": variant.sparsity,
            "attention_flop": attention_flop(config, args.batch),  # dense self-attention
            "step_ms": None,
            "times_ms": [],
            "warmup_ms": [],  # on the model cut to --warmup-blocks blocks
        }
        backends = [args.sdpa] if self.device.type == "cuda" else ["default"]
        if args.sdpa == "cudnn" and self.device.type == "cuda":
            backends.append("flash")  # cuDNN may refuse a shape; then FLASH, recorded

        def call() -> torch.Tensor:
            return model(**inputs, return_dict=False)[0]

        out = None
        with torch.inference_mode(), variant_installed(model, variant, spec, args.seed):
            backend = None
            warm_ms = None
            with first_blocks(model, args.warmup_blocks):
                for index in range(args.warmup):
                    if backend is None:
                        backend, (warm_ms, _) = self.first_call(call, backends, variant)
                    else:
                        with sdpa_backend(backend):
                            warm_ms, _ = timed_call(call, self.device)
                    record["warmup_ms"].append(warm_ms)
                    self.log(f"    {variant.name} warm-up {index + 1}: {warm_ms:.1f} ms")
            blocks = len(model.blocks)
            cut = args.warmup_blocks if 0 < args.warmup_blocks < blocks else blocks
            predicted_s = warm_ms * blocks / cut / 1e3 if warm_ms is not None else None
            record["predicted_step_ms"] = predicted_s * 1e3 if predicted_s is not None else None
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            for _ in range(repeats):
                if (
                    args.time_limit
                    and predicted_s is not None
                    and self.log.elapsed() + predicted_s > args.time_limit
                ):
                    record["skipped"] = (
                        f"time limit {args.time_limit:.0f} s: a step is predicted at "
                        f"{predicted_s:.1f} s, {self.log.elapsed():.0f} s gone"
                    )
                    self.log(f"    {variant.name}: skipped, {record['skipped']}")
                    break
                if backend is None:
                    backend, (ms, out) = self.first_call(call, backends, variant)
                else:
                    with sdpa_backend(backend):
                        ms, out = timed_call(call, self.device)
                record["times_ms"].append(ms)
                predicted_s = ms / 1e3
                self.log(f"    {variant.name} step: {ms:.1f} ms")
        record["sdpa"] = backend
        if record["times_ms"]:
            record["step_ms"] = statistics.median(record["times_ms"])
        if self.device.type == "cuda":
            record["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return record, out

    def first_call(self, call, backends: list[str], variant: Variant):
        """The first call of a variant: tries each SDPA backend in turn (cuDNN, then FLASH)."""
        for index, backend in enumerate(backends):
            try:
                with sdpa_backend(backend):
                    return backend, timed_call(call, self.device)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as error:
                if index + 1 == len(backends):
                    raise
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                self.log(f"    {variant.name}: SDPA backend {backend} failed ({first_line}); next")
        raise AssertionError("unreachable")


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import diffusers
    import veda.ops

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": list(args.argv),
        "commit": os.environ.get("VEDA_COMMIT"),  # the device copy may have no .git
        "device": str(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "veda_gpu_path": veda.ops.has_gpu_path(),
        "batch": args.batch,
        "warmup": args.warmup,
        "warmup_blocks": args.warmup_blocks,
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
        meta["cudnn"] = torch.backends.cudnn.version()
    return meta


# ---------------------------------------------------------------------------------------------
# Command line


def comma_list(choices: Sequence[str] | None, parse: Callable[[str], Any] | None = None):
    def convert(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is not known; expected one of {', '.join(choices)}"
                )
            if parse is not None:
                try:
                    parse(item)
                except ValueError as error:
                    raise argparse.ArgumentTypeError(str(error)) from None
        return items

    return convert


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        type=comma_list(tuple(CONFIGS)),
        default=None,
        help=f"comma-separated, of {', '.join(CONFIGS)} (default: {','.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--variants",
        type=comma_list(None, parse_variant),
        default=list(DEFAULT_VARIANTS),
        help="comma-separated: dense, noattn, vedaNN, profileNN (default: "
        f"{','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed steps (default: 2, 1 at 161 frames, 3 at 1.3B)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (default 2)")
    parser.add_argument(
        "--warmup-blocks",
        type=int,
        default=1,
        help="blocks of the model the warm-up runs (default 1; 0 = the whole model)",
    )
    parser.add_argument("--batch", type=int, default=2, help="batch (default 2: the CFG pair)")
    parser.add_argument(
        "--sdpa",
        choices=SDPA_CHOICES,
        default="cudnn",
        help="SDPA backend of dense attention (default cudnn; FLASH where cuDNN refuses)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=0.0, help="seconds; skip steps predicted past it"
    )
    parser.add_argument("--out", default=None, help="JSON path (default $OUT/wan_e2e.json)")
    parser.add_argument("--tiny", action="store_true", help="the tiny config on the CPU, float32")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    if args.device is None:
        args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.configs is None:
        args.configs = ["tiny"] if args.tiny else list(DEFAULT_CONFIGS)
    if args.out is None:
        args.out = str(Path(os.environ.get("OUT", ".")) / "wan_e2e.json")
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: expected cuda or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    full_size = [name for name in args.configs if name != "tiny"]
    if device.type == "cpu" and full_size:
        parser.error(
            f"configs {', '.join(full_size)} need a CUDA device (a full-size Wan step on the CPU "
            "would take hours); on the CPU use --tiny"
        )
    variants = [parse_variant(name) for name in args.variants]
    if device.type == "cpu" and any(v.kind == "profile" for v in variants):
        parser.error("profileNN variants (method 'veda') run on CUDA only")
    if min(args.warmup, args.warmup_blocks, args.batch - 1) < 0:
        parser.error("--warmup and --warmup-blocks must be >= 0, --batch >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.variant_objects = variants
    return args


def main(argv: Sequence[str] | None = None) -> int:
    log = Log()
    args = parse_args(argv)
    import veda.ops

    uses_veda = any(v.kind != "dense" for v in args.variant_objects)
    if args.device.startswith("cuda") and uses_veda and not veda.ops.has_gpu_path():
        print(
            f"wan_e2e: veda at {veda.__file__} has no GPU path; build it with CUDA "
            "(source bench/device_python_env.sh, or VEDA_CUDA=ON pip install .)",
            file=sys.stderr,
        )
        return 1
    configs = [CONFIGS[name] for name in args.configs]
    log(
        f"wan_e2e: configs {','.join(args.configs)}, variants {','.join(args.variants)}, "
        f"device {args.device}, out {args.out}"
    )
    benchmark = Benchmark(args, log)
    log(f"environment: {json.dumps(benchmark.meta)}")
    benchmark.run(configs, args.variant_objects)
    table = markdown_table(benchmark.results)
    print(table, flush=True)
    log(f"wan_e2e: done; {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
