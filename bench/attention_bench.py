"""Block-sparse attention benchmark: Veda's CUDA kernel vs cuDNN SDPA (dense) and FlexAttention
(same block mask), all measured in the same run on the same inputs.

Layout: q, k, v in [B, N, H, D] (diffusers), bf16 (or fp16). Tiles are 128 tokens; the last tile
of N is partial and counted on its real tokens. Index: per (b, h, query tile) a count and an
ascending int32 list padded to the budget (include/veda/block_index.h); every row keeps the same
number of key tiles, k = max(1, round((1 - sparsity) * Tk)).

  effective TFLOP/s = 4 * D * sum over kept (query tile i, key tile j) of rows(i) * keys(j) / time
  cuDNN TFLOP/s     = 4 * B * H * N^2 * D / time (dense)

Patterns: "random" (k distinct random key tiles per row) and "local3d" (the k key tiles nearest
the query tile on a 3-D grid of tiles, the shape of video attention locality).
Time: CUDA events around each call after warm-up, median of repeats (count chosen so each
measurement takes ~budget seconds, at least 3). Writes JSON; prints a table last.
"""

import argparse
import ctypes
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # pragma: no cover
    flex_attention = None

# N -> (heads, latent grid T x H x W) of the DESIGN.md models.
SHAPES = {
    32760: (12, (21, 30, 52)),
    75600: (40, (21, 45, 80)),
    147600: (40, (41, 45, 80)),
}
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class Veda:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        f = self.lib.veda_attention_forward
        f.restype = ctypes.c_int
        f.argtypes = (
            [ctypes.c_void_p] * 3
            + [ctypes.c_int]
            + [ctypes.c_int64] * 5
            + [
                ctypes.POINTER(ctypes.c_int64),
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_float,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_char_p,
                ctypes.c_int64,
            ]
        )
        self.error = ctypes.create_string_buffer(1024)

    def __call__(self, q, k, v, out, counts=None, indices=None, lse=None, kernel=-1):
        b, n, h, d = q.shape
        strides = (ctypes.c_int64 * 15)(
            *q.stride()[:3],
            *k.stride()[:3],
            *v.stride()[:3],
            *out.stride()[:3],
            *(lse.stride() if lse is not None else (0, 0, 0)),
        )
        budget = indices.shape[-1] if indices is not None else 0
        rc = self.lib.veda_attention_forward(
            q.data_ptr(),
            k.data_ptr(),
            v.data_ptr(),
            DTYPE_CODE[q.dtype],
            b,
            n,
            k.shape[1],
            h,
            d,
            strides,
            counts.data_ptr() if counts is not None else None,
            indices.data_ptr() if indices is not None else None,
            budget,
            1.0 / math.sqrt(d),
            out.data_ptr(),
            DTYPE_CODE[out.dtype],
            lse.data_ptr() if lse is not None else None,
            kernel,
            torch.cuda.current_stream().cuda_stream,
            self.error,
            len(self.error),
        )
        if rc != 0:
            raise ValueError(self.error.value.decode())


def time_call(fn, budget_s, min_reps=3, max_reps=50):
    """Median milliseconds of fn() over repeats, after one warm-up call (two when cheap)."""
    fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(stop)
    reps = int(min(max_reps, max(min_reps, budget_s * 1000.0 / max(first, 1e-3))))
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), reps


def tile_grid(grid, tiles):
    """A 3-D grid of tiles (tt, th, tw) for tile shape 1 x 8 x 16 over the latent grid, with
    coordinates of tile j in raster order (tiles past the grid's count are clamped)."""
    t, h, w = grid
    tt, th, tw = t, math.ceil(h / 8), math.ceil(w / 16)
    j = torch.arange(tiles, device="cuda")
    j = torch.clamp(j, max=tt * th * tw - 1)
    return torch.stack([j // (th * tw), (j // tw) % th, j % tw], dim=1).float()


def make_index(pattern, batch, heads, tiles, keep, grid, generator):
    """counts [B, H, T] int32 and indices [B, H, T, keep] int32, ascending."""
    if pattern == "random":
        scores = torch.rand((batch, heads, tiles, tiles), device="cuda", generator=generator)
        chosen = scores.topk(keep, dim=-1).indices
    else:  # local3d: nearest tiles by distance on the tile grid (ties broken by a little noise)
        coords = tile_grid(grid, tiles)
        distance = torch.cdist(coords, coords)  # [T, T]
        noise = torch.rand((heads, tiles, tiles), device="cuda", generator=generator) * 0.01
        chosen = (-(distance[None] + noise)).topk(keep, dim=-1).indices  # [H, T, keep]
        chosen = chosen[None].expand(batch, -1, -1, -1)
    indices = chosen.sort(dim=-1).values.to(torch.int32).contiguous()
    counts = torch.full((batch, heads, tiles), keep, dtype=torch.int32, device="cuda")
    return counts, indices


def kept_flop(indices, n, d):
    tiles = math.ceil(n / 128)
    sizes = torch.full((tiles,), 128.0, device="cuda", dtype=torch.float64)
    sizes[-1] = n - 128 * (tiles - 1)
    keys = sizes[indices.long()].sum(dim=-1)  # [B, H, T] keys kept per query tile
    return float(4 * d * (keys * sizes[None, None, :]).sum().item())


def flex_block_mask(counts, indices, n):
    b, h, tiles, keep = indices.shape
    full = torch.zeros((b, h, tiles, tiles), dtype=torch.int32, device="cuda")
    full[..., :keep] = indices
    empty = torch.zeros((b, h, tiles), dtype=torch.int32, device="cuda")
    return BlockMask.from_kv_blocks(
        empty, full.clone(), counts, full, BLOCK_SIZE=128, seq_lengths=(n, n)
    )


def cudnn_attention(q, k, v):
    """Dense attention by torch SDPA's cuDNN backend, q, k, v [B, H, N, D]."""
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


def rel_error(x, ref):
    return float((x.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


def run(args):
    torch.manual_seed(0)
    generator = torch.Generator(device="cuda")
    generator.manual_seed(1234)
    veda = Veda(args.lib)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    # One compiled Flex kernel per (B, N, D): raise dynamo's default limit of 8 recompilations,
    # past which it would silently fall back to the (slow, memory-hungry) eager path.
    torch._dynamo.config.cache_size_limit = 64
    flex = torch.compile(flex_attention, dynamic=False) if (flex_attention and args.flex) else None
    results = []
    for n in args.n:
        heads, grid = SHAPES[n]
        tiles = math.ceil(n / 128)
        for batch in args.batch:
            for d in args.dims:
                q, k, v = (
                    torch.randn((batch, n, heads, d), device="cuda", dtype=dtype) for _ in range(3)
                )
                # cuDNN and Flex get [B, H, N, D] contiguous copies: their best case.
                qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                out = torch.empty_like(q)
                dense_flop = 4.0 * batch * heads * n * n * d

                cudnn = functools.partial(cudnn_attention, qh, kh, vh)
                cudnn_ms, _ = time_call(cudnn, args.budget)
                reference = cudnn().transpose(1, 2)
                cudnn_tflops = dense_flop / cudnn_ms / 1e9
                print(
                    f"[cudnn] N={n} H={heads} B={batch} D={d}: {cudnn_ms:.2f} ms "
                    f"{cudnn_tflops:.0f} TFLOP/s",
                    flush=True,
                )

                for sparsity in args.sparsity:
                    patterns = ["dense"] if sparsity == 0 else args.patterns
                    for pattern in patterns:
                        keep = max(1, round((1 - sparsity / 100.0) * tiles))
                        if pattern == "dense":
                            counts = indices = None
                            idx_full = torch.arange(tiles, device="cuda", dtype=torch.int32)
                            idx_full = idx_full.expand(batch, heads, tiles, tiles).contiguous()
                            cnt_full = torch.full(
                                (batch, heads, tiles), tiles, device="cuda", dtype=torch.int32
                            )
                            flop = dense_flop
                        else:
                            counts, indices = make_index(
                                pattern, batch, heads, tiles, keep, grid, generator
                            )
                            idx_full, cnt_full = indices, counts
                            flop = kept_flop(indices, n, d)
                        row = {
                            "n": n,
                            "heads": heads,
                            "batch": batch,
                            "dim": d,
                            "dtype": args.dtype,
                            "sparsity": sparsity,
                            "pattern": pattern,
                            "kept_tiles_per_row": keep,
                            "key_tiles": tiles,
                            "kept_flop": flop,
                            "cudnn_dense_ms": cudnn_ms,
                            "cudnn_dense_tflops": cudnn_tflops,
                        }
                        for name, kernel in args.kernels:
                            try:
                                fn = functools.partial(
                                    veda, q, k, v, out, counts, indices, kernel=kernel
                                )
                                ms, reps = time_call(fn, args.budget)
                            except ValueError as error:
                                row[f"{name}_error"] = str(error)
                                continue
                            row[f"{name}_ms"] = ms
                            row[f"{name}_reps"] = reps
                            row[f"{name}_tflops"] = flop / ms / 1e9
                            row[f"{name}_speedup_vs_cudnn"] = cudnn_ms / ms
                            if pattern == "dense":
                                row[f"{name}_rel_error_vs_cudnn"] = rel_error(out, reference)
                        if flex is not None:
                            try:
                                mask = flex_block_mask(cnt_full, idx_full, n)
                                fn = functools.partial(flex, qh, kh, vh, block_mask=mask)
                                flex_ms, reps = time_call(fn, args.budget)
                                row["flex_ms"] = flex_ms
                                row["flex_tflops"] = flop / flex_ms / 1e9
                                row["flex_speedup_vs_cudnn"] = cudnn_ms / flex_ms
                                flex_out = fn().transpose(1, 2)
                                name = args.kernels[0][0]
                                veda(q, k, v, out, counts, indices, kernel=args.kernels[0][1])
                                row[f"{name}_rel_error_vs_flex"] = rel_error(out, flex_out)
                                if f"{name}_ms" in row:
                                    row[f"{name}_speedup_vs_flex"] = flex_ms / row[f"{name}_ms"]
                                del mask, flex_out
                            except Exception as error:  # noqa: BLE001 - record and go on
                                row["flex_error"] = f"{type(error).__name__}: {error}"[:300]
                        results.append(row)
                        print(json.dumps(row), flush=True)
                        del counts, indices, idx_full, cnt_full
                del q, k, v, qh, kh, vh, out, reference
                torch.cuda.empty_cache()
    return results


def table(results, kernels):
    name = kernels[0][0]
    lines = [
        (
            f"{'N':>6} {'H':>2} {'B':>1} {'D':>3} {'pattern':>7} {'sp%':>5} {'cuDNN TF':>8} "
            f"{name + ' ms':>10} {'TF':>5} {'%cuDNN':>6} {'x cuDNN':>7} {'flex TF':>7} "
            f"{'x flex':>6} {'err':>7}"
        )
    ]
    for r in results:
        tf = r.get(f"{name}_tflops")
        err = r.get(f"{name}_rel_error_vs_flex", r.get(f"{name}_rel_error_vs_cudnn"))
        lines.append(
            f"{r['n']:>6} {r['heads']:>2} {r['batch']:>1} {r['dim']:>3} {r['pattern']:>7} "
            f"{r['sparsity']:>5} {r['cudnn_dense_tflops']:>8.0f} "
            f"{r.get(f'{name}_ms', float('nan')):>10.2f} {tf or float('nan'):>5.0f} "
            f"{100 * (tf or float('nan')) / r['cudnn_dense_tflops']:>6.1f} "
            f"{r.get(f'{name}_speedup_vs_cudnn', float('nan')):>7.2f} "
            f"{r.get('flex_tflops', float('nan')):>7.0f} "
            f"{r.get(f'{name}_speedup_vs_flex', float('nan')):>6.2f} "
            f"{err if err is not None else float('nan'):>7.1e}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", required=True, help="path of libveda_attention_capi.so")
    parser.add_argument(
        "--out", default=os.path.join(os.environ.get("OUT", "."), "attention_bench.json")
    )
    parser.add_argument("--n", type=int, nargs="+", default=[32760, 75600, 147600])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0, 50, 75, 90, 95, 97.5])
    parser.add_argument("--patterns", nargs="+", default=["random", "local3d"])
    parser.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    parser.add_argument("--kernel", choices=["auto", "hopper", "portable", "both"], default="auto")
    parser.add_argument("--no-flex", dest="flex", action="store_false")
    parser.add_argument(
        "--budget",
        type=float,
        default=0.5,
        help="seconds of repeats per measurement (at least 3 repeats)",
    )
    args = parser.parse_args()
    args.kernels = {
        "auto": [("veda", -1)],
        "hopper": [("veda", 0)],
        "portable": [("portable", 1)],
        "both": [("veda", 0), ("portable", 1)],
    }[args.kernel]
    started = time.time()
    results = run(args)
    # The device copy of the tree has no .git: the caller passes VEDA_COMMIT.
    commit = os.environ.get("VEDA_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            commit = ""
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "commit": commit,
        "argv": sys.argv,
        "seconds": time.time() - started,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(json.dumps(meta))
    print(table(results, args.kernels))


if __name__ == "__main__":
    main()
