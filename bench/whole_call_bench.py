"""Veda's whole sparse attention call against cuDNN dense attention, measured in the same run.

Times, per size and batch (bf16, D = 128, q, k, v [B, N, H, D] as diffusers passes them):
  cudnn       torch SDPA with the cuDNN backend (dense), on [B, H, N, D] views of the same tensors
  veda dense  torch.ops.veda.attention (our kernel, every tile)
  veda S%     torch.ops.veda.sparse_attention with method "veda" (the distilled estimator with
              random diagonal parameters [H, 3, D], the structure calibration gives by default)
              and two tile shapes on alternate heads (1x8x16, 8x4x4): the whole call, gather +
              statistics + selection + block-sparse attention, plan cached after the first call,
              as a model's layer runs it, with low_memory=False (tile-major copies of k and v)
  veda S% low-mem  the same with low_memory=True, the default (no copies: attention loads full
              boxes of the grid by TMA and gathers the rows of edge tiles)
Timing: every variant is warmed up twice (the first call also builds the plan), then timed once
per round, the variants in turn, over --rounds rounds; a variant's time is the median of its
rounds and its speedup the median of its per-round ratios to cuDNN, so drift of the GPU's clocks
over the run (power, heat after the dense calls) falls on both sides of each ratio. CUDA events;
each timed call starts behind ~0.3 ms of queued GPU work (a 1 GB memset), so that, as in a
model's forward pass, its host-side dispatch overlaps the GPU instead of counting as GPU time
(the same for cuDNN); with --cuda-graph every variant is captured once in a CUDA graph and its
replays are timed (no host work at all, as under torch.compile(mode="reduce-overhead")). Needs a
CUDA build of veda (bench/device_python_env.sh). Writes JSON and prints a table last.

  python3 bench/whole_call_bench.py --out whole_call.json [--sizes 75600] [--batches 1 2]
"""

import argparse
import functools
import json
import statistics

import torch
import torch.nn.functional as F
import veda.ops  # noqa: F401  (registers torch.ops.veda)
from torch.nn.attention import SDPBackend, sdpa_kernel

# N -> (heads, latent grid T x H x W), as in bench/attention_bench.py.
SIZES = {32760: (12, (21, 30, 52)), 75600: (40, (21, 45, 80)), 147600: (40, (41, 45, 80))}
SHAPES = ((1, 8, 16), (8, 4, 4))


def prepared(call, cuda_graph):
    """`call` after two warm-up calls, or the replay of a CUDA graph that captured it."""
    for _ in range(2):
        call()
    if not cuda_graph:
        return call
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    graph.replay()
    return graph.replay


def timed_rounds(calls, rounds):
    """{name: [ms per round]}: each round times every call once, in turn, with CUDA events."""
    busy = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            busy.zero_()  # queued ahead of the start event
            start.record()
            call()
            stop.record()
            stop.synchronize()
            times[name].append(start.elapsed_time(stop))
    return times


def cudnn_dense(q, k, v):
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )


def time_variants(n, batch, sparsities, rounds, cuda_graph):
    """{variant: ms per round} at size n and this batch, on fresh random inputs."""
    heads, grid = SIZES[n]
    tiles = [side for h in range(heads) for side in SHAPES[h % 2]]
    p_q, p_k = (0.5 * torch.randn(heads, 3, 128, device="cuda") for _ in range(2))
    q, k, v = (
        torch.randn(batch, n, heads, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    sparse = functools.partial(torch.ops.veda.sparse_attention, q, k, v, list(grid), tiles, "veda")
    calls = {
        "cudnn": functools.partial(cudnn_dense, q, k, v),
        "veda dense": functools.partial(torch.ops.veda.attention, q, k, v, None),
    }
    for sparsity in sparsities:
        for low_memory in (False, True):
            name = f"veda {sparsity:.0%}{' low-mem' if low_memory else ''}"
            calls[name] = functools.partial(
                sparse, sparsity, None, None, p_q, p_k, 0, "after", None, low_memory
            )
    return timed_rounds({name: prepared(call, cuda_graph) for name, call in calls.items()}, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32760, 75600])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cuda-graph", action="store_true", help="time CUDA graph replays")
    parser.add_argument("--out", default="whole_call.json")
    args = parser.parse_args()
    for n in args.sizes:
        if n not in SIZES:
            parser.error(f"size {n} is not one of {sorted(SIZES)}")

    torch.manual_seed(0)
    rows = []
    for n in args.sizes:
        for batch in args.batches:
            times = time_variants(n, batch, args.sparsities, args.rounds, args.cuda_graph)
            torch.cuda.empty_cache()
            for name, ms in times.items():
                ratios = [dense / t for dense, t in zip(times["cudnn"], ms)]
                rows.append(
                    {
                        "n": n,
                        "heads": SIZES[n][0],
                        "batch": batch,
                        "variant": name,
                        "ms": statistics.median(ms),
                        "ms_rounds": ms,
                        "speedup_vs_cudnn": statistics.median(ratios),
                        "speedup_range": [min(ratios), max(ratios)],
                    }
                )
    with open(args.out, "w") as f:
        json.dump(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(),
                "cuda_graph": args.cuda_graph,
                "rounds": args.rounds,
                "rows": rows,
            },
            f,
            indent=1,
        )
    print(f"{'N':>7} {'H':>3} {'B':>2} {'variant':<16} {'ms':>9} {'vs cuDNN':>9} {'rounds':>15}")
    for r in rows:
        low, high = r["speedup_range"]
        print(
            f"{r['n']:>7} {r['heads']:>3} {r['batch']:>2} {r['variant']:<16} {r['ms']:>9.2f} "
            f"{r['speedup_vs_cudnn']:>8.2f}x {low:>6.2f}-{high:.2f}x"
        )


if __name__ == "__main__":
    main()
