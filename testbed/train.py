"""Flow-matching training of the testbed model on synthesised clips.

    python -m testbed.train --out runs/testbed                 # CUDA: default 16-minute budget
    python -m testbed.train --device cpu --tiny --max-steps 3 --out /tmp/tb   # smoke run

Rectified flow: x_t = (1 - t) x0 + t noise with t ~ logit-normal(0, 1), the model predicts the
velocity noise - x0 (MSE). AdamW, linear warm-up then constant LR, EMA of the weights (saved as
the checkpoint's weights), classifier-free-guidance dropout of the class (the null class).
bf16 autocast on CUDA. --low-res-steps N (or --low-res-minutes M) trains the first N steps (M
minutes) on clips of half the height and width (the same scenes at half the resolution: a quarter
of the tokens; --low-res-batch clips a step), then the rest at full size: progressive resolution,
as video DiTs are trained (the 3D rotary embedding carries over; torch.compile keeps one static
graph per size). config.json's args record the step of the switch as low_res_steps, which
reproduces a time-switched run (and is what --resume needs). Stops at
--max-steps or after --minutes, whichever comes first; saves every
--save-minutes and at the end: DIR/model*.safetensors (EMA weights), DIR/config.json (model
config, arguments, steps, losses) and DIR/train_state.pt (raw weights and optimiser, for
--resume; not meant to be committed). Seeds: model init, the clips of every step
(testbed.data.training_seeds) and the noise/time draws come from --seed; the number of steps done
is written to config.json so `--max-steps N` reproduces a run that the time budget stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import ClipGenerator, training_seeds
from .model import ModelConfig, Testbed, load_checkpoint, parameter_count, save_checkpoint

TRAIN_STATE = "train_state.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny model and clip (CPU smoke test)")
    p.add_argument("--minutes", type=float, default=16.0, help="time budget of the loop")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cond-drop", type=float, default=0.1, help="P(null class), for CFG")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--save-dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the transformer (default: on CUDA; ~1 min to compile, then 1.5x faster)",
    )
    p.add_argument(
        "--low-res-steps",
        type=int,
        default=0,
        help="train the first N steps on clips of half the height and width (progressive resolution)",
    )
    p.add_argument(
        "--low-res-minutes",
        type=float,
        default=0.0,
        help="the same for the first M minutes (the step reached is recorded as low_res_steps)",
    )
    p.add_argument(
        "--low-res-batch",
        type=int,
        default=None,
        help="clips per step on half-size clips (default --batch; 4x keeps the tokens per step)",
    )
    p.add_argument("--resume", default=None, help="folder with train_state.pt to continue")
    p.add_argument("--frames", type=int, default=None, help="override the clip frames")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--layers", type=int, default=None, help="override the number of layers")
    p.add_argument("--heads", type=int, default=None, help="override heads (of dim 128)")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_config(args: argparse.Namespace) -> ModelConfig:
    config = ModelConfig.tiny() if args.tiny else ModelConfig()
    for name, attr in (
        ("frames", "frames"),
        ("height", "height"),
        ("width", "width"),
        ("layers", "num_layers"),
        ("heads", "num_heads"),
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(config, attr, value)
    return config


def lr_at(step: int, args: argparse.Namespace) -> float:
    return args.lr * min(1.0, (step + 1) / max(1, args.warmup))


@torch.no_grad()
def ema_update(ema: Testbed, model: Testbed, decay: float, step: int) -> None:
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def flow_matching_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,  # [B, C, F, H, W]
    class_ids: torch.Tensor,  # [B]
    generator: torch.Generator,
    autocast: bool,
) -> torch.Tensor:
    b = x0.shape[0]
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device)  # [B, C, F, H, W]
    t = torch.sigmoid(torch.randn(b, generator=generator, device=device))  # [B] logit-normal
    t_ = t.view(b, 1, 1, 1, 1)
    x_t = (1 - t_) * x0 + t_ * noise
    target = noise - x0
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        prediction = model(x_t, t, class_ids)
    return torch.nn.functional.mse_loss(prediction.float(), target)


def train(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    config = model_config(args)
    grid = config.grid(config.frames, config.height, config.width)
    if args.low_res_steps < 0 or args.low_res_minutes < 0:
        raise ValueError(
            f"--low-res-steps {args.low_res_steps}, --low-res-minutes {args.low_res_minutes}: "
            "expected 0 or more"
        )
    if args.low_res_steps and args.low_res_minutes:
        raise ValueError("give --low-res-steps or --low-res-minutes, not both")
    low_res_batch = args.batch if args.low_res_batch is None else args.low_res_batch
    if low_res_batch < 1 or args.batch < 1:
        raise ValueError(f"--batch {args.batch}, --low-res-batch {low_res_batch}: expected >= 1")
    low_res = (config.frames, config.height // 2, config.width // 2)
    # Steps before this one train on half-size clips; infinite until --low-res-minutes pass.
    low_res_until = args.low_res_steps or (math.inf if args.low_res_minutes else 0)
    if low_res_until:
        config.grid(*low_res)  # half the clip must still be a multiple of the patch
    model = Testbed(config).to(device)
    ema = Testbed(config).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay
    )
    step = 0
    history: list[dict[str, float]] = []
    if args.resume:
        state = torch.load(Path(args.resume) / TRAIN_STATE, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        history = list(state.get("history", []))
        torch.set_rng_state(state["torch_rng"])
    if args.compile is None:
        args.compile = device.type == "cuda"
    # One static graph per clip size (progressive resolution compiles twice).
    forward = torch.compile(model, dynamic=False) if args.compile else model

    data = ClipGenerator(config.frames, config.height, config.width, device=str(device))
    low_res_data = ClipGenerator(*low_res, device=str(device)) if low_res_until else None
    # noise and times: drawn on the device (no host transfer); class dropout on the host
    generator = torch.Generator(device=device).manual_seed(args.seed * 7919 + step)
    drop_generator = torch.Generator().manual_seed(args.seed * 7919 + step + 1)
    autocast = device.type == "cuda"
    tokens = grid[0] * grid[1] * grid[2]
    print(
        f"testbed: {parameter_count(model) / 1e6:.2f} M parameters, {config.num_layers} layers x "
        f"{config.num_heads} heads x {config.head_dim}; clip {config.frames}x{config.height}x"
        f"{config.width}, grid {grid[0]}x{grid[1]}x{grid[2]} = {tokens} tokens; batch "
        f"{args.batch}; device {device}",
        flush=True,
    )
    if low_res_until:
        first = (
            f"steps 0-{args.low_res_steps - 1}"
            if args.low_res_steps
            else f"steps of the first {args.low_res_minutes:g} minutes"
        )
        print(
            f"testbed: {first} on clips {'x'.join(map(str, low_res))}, grid "
            f"{'x'.join(map(str, config.grid(*low_res)))}, batch {low_res_batch}",
            flush=True,
        )

    first_step = step
    start = time.time()
    last_save = start
    budget = args.minutes * 60
    running = 0.0
    count = 0

    def save(final: bool) -> None:
        if low_res_until == math.inf:  # still on half-size clips: every step so far was
            args.low_res_steps = step
        elapsed = time.time() - start
        info = {
            "steps": step,
            "train_seconds_this_run": round(elapsed, 1),
            "args": vars(args),
            "grid": list(grid),
            "history": history,
            "final": final,
            "torch": torch.__version__,
        }
        dtype = torch.bfloat16 if args.save_dtype == "bf16" else torch.float32
        save_checkpoint(ema, out, info, dtype=dtype)
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "history": history,
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, out / (TRAIN_STATE + ".tmp"))
        os.replace(out / (TRAIN_STATE + ".tmp"), out / TRAIN_STATE)

    model.train()
    while True:
        elapsed = time.time() - start
        if (args.max_steps is not None and step >= args.max_steps) or elapsed >= budget:
            break
        if low_res_until == math.inf and elapsed >= args.low_res_minutes * 60:
            low_res_until = args.low_res_steps = step
            print(f"testbed: full-size clips from step {step}", flush=True)
        low = step < low_res_until
        clips, batch = (low_res_data, low_res_batch) if low else (data, args.batch)
        x0, class_ids = clips.batch(training_seeds(args.seed, step, batch))
        drop = torch.rand(batch, generator=drop_generator) < args.cond_drop
        class_ids = torch.where(
            drop.to(device), torch.full_like(class_ids, model.null_class), class_ids
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        loss = flow_matching_loss(forward, x0, class_ids, generator, autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        ema_update(ema, model, args.ema, step)
        step += 1
        running += loss.item()
        count += 1
        if step % args.log_every == 0 or step == 1:
            mean = running / count
            rate = (step - first_step) / max(1e-9, time.time() - start)
            history.append(
                {"step": step, "loss": round(mean, 5), "seconds": round(time.time() - start, 1)}
            )
            print(
                f"step {step:6d}  loss {mean:.4f}  lr {lr_at(step, args):.2e}  "
                f"{time.time() - start:7.1f} s  {rate:.2f} step/s",
                flush=True,
            )
            running, count = 0.0, 0
            if not math.isfinite(mean):
                raise FloatingPointError(f"loss is {mean} at step {step}")
        if time.time() - last_save > args.save_minutes * 60:
            save(final=False)
            last_save = time.time()
    save(final=True)
    summary = {
        "steps": step,
        "seconds": round(time.time() - start, 1),
        "out": str(out),
        "model": asdict(config),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "model"}), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()


__all__ = ["flow_matching_loss", "load_checkpoint", "main", "train"]
