"""Speed of SqueezeDet / SqueezeDet+ on this CPU against the machine's own fp32 matmul rate.

Batch 1, eval mode, 2 threads, each model at its KITTI input (SqueezeDet 1248 x 384, SqueezeDet+ 1242 x 375);
medians over interleaved rounds after warm-up (the machine is shared and noisy, so every figure is measured in the
same rounds as the matmul it is compared with). "network" is images -> ConvDet outputs with sigmoid/softmax (what
the ONNX export computes); "end_to_end" adds decoding, top-N and per-class NMS.
Bar (issue 4): SqueezeDet's network reaches >= 0.45 of the matmul's GFLOP/s. Prints one JSON object per line;
exits 1 when the bar is missed.
"""

from __future__ import annotations

import json
import sys

import torch
from timing import interleaved_medians

from squeeze.fire import conv_macs
from squeezedet.model import SqueezeDet, squeezedet_kitti, squeezedet_plus_kitti

MIN_MATMUL_FRACTION = 0.45
MATMUL_N = 2048


def main(rounds: int = 30) -> int:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    models = {"squeezedet": SqueezeDet(squeezedet_kitti()).eval(),
              "squeezedet_plus": SqueezeDet(squeezedet_plus_kitti()).eval()}
    images = {name: torch.randn(1, 3, m.config.image_height, m.config.image_width) for name, m in models.items()}
    runs = {"matmul": lambda: a @ b}
    for name, m in models.items():
        runs[f"{name}_network"] = lambda m=m, x=images[name]: m.raw_outputs(x)
        runs[f"{name}_end_to_end"] = lambda m=m, x=images[name]: m(x)
    macs = {name: conv_macs(m, lambda m=m, x=images[name]: m.raw_outputs(x)) for name, m in models.items()}
    med = interleaved_medians(runs, rounds)
    matmul_gflops = 2 * MATMUL_N**3 / med["matmul"] / 1e9
    print(json.dumps({"name": "matmul_fp32_gflops", "value": round(matmul_gflops, 1), "unit": "GFLOP/s",
                      "n": MATMUL_N, "threads": 2}))
    ok = True
    for name, m in models.items():
        seconds = med[f"{name}_network"]
        gflops = 2 * macs[name] / seconds / 1e9
        fraction = gflops / matmul_gflops
        row = {"name": f"det_{name}_network_latency_ms", "value": round(1e3 * seconds, 2), "unit": "ms", "batch": 1,
               "size": f"{m.config.image_width}x{m.config.image_height}", "threads": 2,
               "gmacs": round(macs[name] / 1e9, 3), "gflops": round(gflops, 1), "matmul_fraction": round(fraction, 3)}
        if name == "squeezedet":
            row |= {"bar": MIN_MATMUL_FRACTION, "passed": fraction >= MIN_MATMUL_FRACTION}
            ok &= fraction >= MIN_MATMUL_FRACTION
        print(json.dumps(row))
        print(json.dumps({"name": f"det_{name}_end_to_end_latency_ms", "value": round(1e3 * med[f"{name}_end_to_end"],
                                                                                      2),
                          "unit": "ms", "note": "network + decode + top-N + per-class NMS",
                          "fps": round(1 / med[f"{name}_end_to_end"], 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
