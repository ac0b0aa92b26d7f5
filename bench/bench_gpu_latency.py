"""GPU latency of the three networks in torch, CUDA fp16, batch 1, replayed as CUDA graphs, against the papers'
Titan X figures (issue 11, item 7). A prepared script: run it whenever a CUDA GPU is at hand (under 5 minutes).

Figures (network only, random weights: latency does not depend on them), one JSON line each:
- SqueezeSeg 64 x 512 without and with its recurrent CRF, SqueezeSegV2 64 x 512 (with its CRF, as trained):
  the paper reports 8.7 +- 0.5 ms a frame for SqueezeSeg on a Titan X (abstract; whether the CRF is included is
  unconfirmed, /work/shared/reference/models.md 2.7; SqueezeSegV2's speed is not reported);
- SqueezeDet 1248 x 384, network outputs with sigmoid / softmax (what the ONNX export computes): 57.2 FPS on a
  Titan X (paper, table 1; confirmed).

Method: model in fp16 and channels_last on the GPU, cudnn.benchmark, warm-up on a side stream, then the forward
captured once in a torch.cuda.CUDAGraph and replayed; each replay is timed with CUDA events, median over `--runs`.
When capture fails (an op that syncs with the host), the figure is timed eagerly and says so. Eager fp16 is
reported beside each graph figure so the gain of graphs shows.

`--device cpu --dry-run` runs the same code path once per network on the CPU in fp32 (no graphs, no events) to
check the script without a GPU. Without a CUDA device (and no --device cpu) it prints one line and exits 0. A
network that fails (an fp16 op missing on that GPU) prints a row with its error, the others still run, exit 1.

    python bench/bench_gpu_latency.py [--runs 200] [--warmup 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from squeezedet.model import SqueezeDet, squeezedet_kitti
from squeezeseg.squeezeseg import SqueezeSeg, squeezeseg_kitti
from squeezeseg.squeezeseg_v2 import SqueezeSegV2, squeezeseg_v2_kitti

PAPER = {  # name -> (paper's Titan X milliseconds a frame, source)
    "squeezeseg_no_crf": (8.7, "SqueezeSeg abstract: 8.7 +- 0.5 ms/frame, Titan X (CRF inclusion unconfirmed)"),
    "squeezeseg_crf": (8.7, "SqueezeSeg abstract: 8.7 +- 0.5 ms/frame, Titan X (CRF inclusion unconfirmed)"),
    "squeezeseg_v2": (None, "SqueezeSegV2: speed not reported"),
    "squeezedet": (1e3 / 57.2, "SqueezeDet table 1: 57.2 FPS, Titan X"),
}


def networks(device: torch.device, dtype: torch.dtype) -> dict[str, tuple[torch.nn.Module, Callable[[], object]]]:
    """name -> (model, forward of one fixed batch-1 input), models in eval mode on `device` in `dtype`."""
    torch.manual_seed(0)
    seg_x = torch.randn(1, 5, 64, 512, device=device, dtype=dtype)
    mask = torch.rand(1, 64, 512, device=device) > 0.13
    det_x = torch.randn(1, 3, 384, 1248, device=device, dtype=dtype)
    models = {
        "squeezeseg_no_crf": SqueezeSeg(dataclasses.replace(squeezeseg_kitti(), use_crf=False)),
        "squeezeseg_crf": SqueezeSeg(squeezeseg_kitti()),
        "squeezeseg_v2": SqueezeSegV2(squeezeseg_v2_kitti()),
        "squeezedet": SqueezeDet(squeezedet_kitti()),
    }
    out = {}
    for name, m in models.items():
        m = m.to(device=device, dtype=dtype).eval()
        if name == "squeezedet":
            out[name] = (m, lambda m=m: m.raw_outputs(det_x))
        else:
            out[name] = (m, lambda m=m: m.logits(seg_x, mask))  # V2 adds its mask channel inside the model
    return out


def event_times(fn: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of each of `runs` calls, timed with CUDA events on the current stream."""
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def time_cuda(forward: Callable[[], object], runs: int, warmup: int) -> dict[str, object]:
    """Median ms of the forward eagerly and replayed as a CUDA graph (None and the error when capture fails)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture requires
        for _ in range(warmup):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    eager = statistics.median(event_times(forward, runs))
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward()
        for _ in range(warmup):
            graph.replay()
        torch.cuda.synchronize()
        return {"graph_ms": statistics.median(event_times(graph.replay, runs)), "eager_ms": eager, "graph_error": None}
    except RuntimeError as e:  # capture failed: report eager
        torch.cuda.synchronize()
        return {"graph_ms": None, "eager_ms": eager, "graph_error": str(e).splitlines()[0][:200]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dry-run", action="store_true",
                        help="a few calls per network, to check the script (--device cpu: one fp32 call, no graphs)")
    parser.add_argument("--runs", type=int, default=200, help="timed replays per figure (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="calls before capture and timing (default 20)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_latency: no CUDA device here; nothing timed (run it on a machine with an NVIDIA GPU)")
        return 0
    if args.device == "cpu" and not args.dry_run:
        parser.error("--device cpu only checks the script: add --dry-run")
    device = torch.device(args.device)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    t0, failed = time.perf_counter(), 0
    with torch.inference_mode():
        for name, (_, forward) in networks(device, dtype).items():
            paper_ms, source = PAPER[name]
            try:
                if args.dry_run and args.device == "cpu":
                    start = time.perf_counter()
                    forward()
                    timing = {"graph_ms": None, "eager_ms": 1e3 * (time.perf_counter() - start),
                              "graph_error": "dry run: no graph on the CPU"}
                else:
                    runs, warmup = (3, 1) if args.dry_run else (args.runs, args.warmup)
                    timing = time_cuda(forward, runs, warmup)
            except Exception as e:  # one network failing in fp16 must not lose the other figures
                print(json.dumps({"name": f"{name}_latency_ms", "value": None, "device": gpu,
                                  "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}),
                      flush=True)
                failed += 1
                continue
            ms = timing["graph_ms"] if timing["graph_ms"] is not None else timing["eager_ms"]
            row = {"name": f"{name}_latency_ms", "value": round(ms, 3), "unit": "ms", "fps": round(1e3 / ms, 1),
                   "device": gpu, "dtype": str(dtype).removeprefix("torch."), "batch": 1,
                   "cuda_graph": timing["graph_ms"] is not None, "eager_ms": round(timing["eager_ms"], 3),
                   "paper_titan_x_ms": None if paper_ms is None else round(paper_ms, 2),
                   "paper_titan_x_fps": None if paper_ms is None else round(1e3 / paper_ms, 1),
                   "speedup_vs_paper": None if paper_ms is None else round(paper_ms / ms, 2), "paper": source,
                   "dry_run": args.dry_run}
            if timing["graph_error"] and not args.dry_run:
                row["graph_error"] = timing["graph_error"]
            print(json.dumps(row), flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
