"""glibc's malloc told to keep freed memory, so that per-frame numpy temporaries stop page-faulting.

A perception loop allocates and frees the same large arrays every frame: a KITTI image as float32 (5.5 MB), its
resized copy, the network's output. glibc mmaps a block above its mmap threshold and unmaps it on free, and trims
the freed top of its heap back to the system; its threshold adapts to one model's pattern, but in a process that
runs two networks in turn (LATTE, the deploy bench, a car computer with a camera and a LiDAR model) the blocks of
one come back as fresh pages for the other, and every 4 kB of them page-faults again. `bench/bench_allocator.py`
(OpenVINO int8 SqueezeDet on a KITTI image, a SqueezeSegV2 segmenting a scan between frames): 542 minor faults per
`detect` by default, 0.02 with `keep_freed_memory()`, end to end 20.5 -> 18.9 ms (0.92x); with the detector alone
in the process, 0.1 faults either way and 0.98x. The vectorised KITTI label reader (squeezedet.kitti_eval) had the
same trouble with its block temporaries.

The setting is process-wide, so commands choose it (`squeeze` sets it for every command, as do bench/ scripts that
time, and a bundle's infer.py); a library caller decides for itself. The cost: up to `trim_bytes` of freed memory
stays mapped in the process instead of going back to the system.
"""

from __future__ import annotations

__all__ = ["keep_freed_memory"]

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Above every per-frame temporary of the suite (a 1248 x 384 x 3 float32 input is 5.75 MB); also the ceiling glibc's
# own dynamic threshold rises to on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory(top_pad_bytes: int = 64 << 20, trim_bytes: int = 256 << 20,
                      mmap_threshold_bytes: int = MMAP_THRESHOLD) -> bool:
    """Keep freed heap memory for reuse: allocations up to `mmap_threshold_bytes` come from the heap (not a fresh
    mmap each), and the heap's free top is given back to the system only beyond `trim_bytes`, keeping
    `top_pad_bytes` when it is. True when glibc took all three settings; False where malloc is not glibc's
    (macOS, musl, Windows), which is left as it is."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold_bytes), (_M_TRIM_THRESHOLD, trim_bytes),
                (_M_TOP_PAD, top_pad_bytes))
    return all([bool(mallopt(param, int(value))) for param, value in settings])
