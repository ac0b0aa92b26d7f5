"""Speed of SqueezeSeg / SqueezeSegV2 on this CPU against the machine's own fp32 matmul rate.

Batch 1, 64 x 512, eval mode, 2 threads, medians over interleaved rounds after warm-up (the machine is shared
and noisy, so every figure is measured in the same rounds as the matmul it is compared with).
Bars (issue 3): SqueezeSeg without CRF reaches >= 0.45 of the matmul's GFLOP/s; the CRF adds <= 25% to the
network's time. Prints one JSON object per line; exits 1 when a bar is missed.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import torch
from timing import interleaved_medians

from squeeze.fire import conv_macs
from squeezeseg.squeezeseg import SqueezeSeg, squeezeseg_kitti, xyz_channels
from squeezeseg.squeezeseg_v2 import SqueezeSegV2, squeezeseg_v2_kitti

MIN_MATMUL_FRACTION = 0.45
MAX_CRF_OVERHEAD = 0.25
MATMUL_N = 2048


def main(rounds: int = 40) -> int:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(1, 5, 64, 512)
    mask = torch.rand(1, 64, 512) > 0.13
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    models = {
        "squeezeseg_no_crf": SqueezeSeg(dataclasses.replace(squeezeseg_kitti(), use_crf=False)).eval(),
        "squeezeseg_crf": SqueezeSeg(squeezeseg_kitti()).eval(),
        "squeezeseg_v2_no_crf": SqueezeSegV2(dataclasses.replace(squeezeseg_v2_kitti(), use_crf=False)).eval(),
        "squeezeseg_v2_crf": SqueezeSegV2(squeezeseg_v2_kitti()).eval(),
    }
    # The CRF alone, on the logits it would get: the network's own time is what it is compared with.
    crf = models["squeezeseg_crf"]
    with torch.inference_mode():
        logits = models["squeezeseg_no_crf"].logits(x, mask)
    xyz = xyz_channels(x, crf.config.crf_xyz_channels)
    runs = {"matmul": lambda: a @ b, "crf_only": lambda: crf.crf(logits, xyz, mask)}
    runs |= {name: (lambda m=m: m.logits(x, mask)) for name, m in models.items()}
    macs = {name: conv_macs(m, lambda m=m: m.logits(x, mask)) for name, m in models.items()}
    med = interleaved_medians(runs, rounds)
    matmul_gflops = 2 * MATMUL_N**3 / med["matmul"] / 1e9
    print(json.dumps({"name": "matmul_fp32_gflops", "value": round(matmul_gflops, 1), "unit": "GFLOP/s",
                      "n": MATMUL_N, "threads": 2}))
    ok = True
    for name in models:
        gflops = 2 * macs[name] / med[name] / 1e9
        fraction = gflops / matmul_gflops
        row = {"name": f"{name}_latency_ms", "value": round(1e3 * med[name], 2), "unit": "ms", "batch": 1,
               "size": "64x512", "threads": 2, "gmacs": round(macs[name] / 1e9, 3), "gflops": round(gflops, 1),
               "matmul_fraction": round(fraction, 3)}
        if name == "squeezeseg_no_crf":
            row |= {"bar": MIN_MATMUL_FRACTION, "passed": fraction >= MIN_MATMUL_FRACTION}
            ok &= fraction >= MIN_MATMUL_FRACTION
        print(json.dumps(row))
    overhead = med["crf_only"] / med["squeezeseg_no_crf"]
    ok &= overhead <= MAX_CRF_OVERHEAD
    print(json.dumps({"name": "crf_overhead", "value": round(overhead, 3), "unit": "fraction of network time",
                      "crf_ms": round(1e3 * med["crf_only"], 2), "bar": MAX_CRF_OVERHEAD,
                      "passed": overhead <= MAX_CRF_OVERHEAD}))
    end_to_end = med["squeezeseg_crf"] / med["squeezeseg_no_crf"] - 1
    print(json.dumps({"name": "crf_overhead_end_to_end", "value": round(end_to_end, 3),
                      "unit": "fraction (with CRF / without - 1)", "note": "same model twice, noisier"}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
