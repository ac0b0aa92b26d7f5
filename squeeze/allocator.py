"""glibc's malloc told to keep freed memory, so that per-frame numpy temporaries stop page-faulting.

A perception loop allocates and frees the same large arrays every frame: a KITTI image as float32 (5.5 MB), its
resized copy, the network's output. With glibc's defaults each of them is either mmap'ed (above the mmap threshold)
and unmapped on free, or taken from the top of the heap that `free` trims back to the system; either way the next
frame touches fresh pages and page-faults every 4 kB of them again. Measured on this suite's 2-core VM
(ru_minflt, OpenVINO int8 SqueezeDet, 1242 x 375 image): 541 minor faults per `detect` by default, 0.05 with
`keep_freed_memory()`; end to end 22.1-25.4 ms before, 20.2-21.2 ms after (interleaved processes, medians of 80).
The vectorised KITTI label reader (squeezedet.kitti_eval) had the same trouble with its block temporaries.

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
