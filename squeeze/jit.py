"""numba's JIT options in one place: kernels cache their machine code on disk where they can, and never fail to load.

numba's `cache=True` picks its cache folder when a function is *decorated*: beside the source file, else the user's
cache folder (XDG_CACHE_HOME or ~/.cache), or NUMBA_CACHE_DIR when set. When none of them is writable (a read-only
install used by an account whose HOME is not writable, a container running as another user) it raises "cannot
cache function ...: no locator available", and the import of the module fails. Every kernel of the suite is
decorated with `njit` below instead of `numba.njit`, which then caches in a private folder under the temporary
directory, and compiles without a cache when even that is impossible.

Also here: `exp_nonpositive`, an exp that vectorises inside numba kernels (softmaxes, Gaussian weights).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import config as numba_config
from numba.extending import intrinsic

log = logging.getLogger(__name__)

_warned: set[str] = set()


def fallback_cache_dir() -> str | None:
    """A cache folder that only this user can write, under the temporary directory; None when there is none.

    The folder is created with mode 0700; an existing one is used only when it is a real folder owned by this user
    that nobody else can write, since numba loads what it finds there (pickled data).
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = os.path.join(tempfile.gettempdir(), f"squeeze-numba-cache-{uid if uid is not None else 'user'}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid) or st.st_mode & 0o022:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    return path


@contextlib.contextmanager
def _cache_dir(path: str) -> Iterator[None]:
    # numba reads config.CACHE_DIR when it chooses the folder, at decoration; the choice stays with the function.
    saved = numba_config.CACHE_DIR
    numba_config.CACHE_DIR = path
    try:
        yield
    finally:
        numba_config.CACHE_DIR = saved


def _no_locator(error: RuntimeError) -> bool:
    return "no locator available" in str(error)


def _warn_once(source: str, message: str) -> None:
    if source not in _warned:
        _warned.add(source)
        log.info(message)


def njit(*args: Any, cache: bool = True, **options: Any) -> Any:
    """numba.njit, caching compiled kernels on disk when a cache folder can be written (see the module doc).

    Use like numba.njit: `@njit`, `@njit(parallel=True)`, `@njit(cache=True, inline="always")`. cache=False
    compiles in every process, as numba does.
    """
    if args and callable(args[0]) and len(args) == 1:
        return njit(cache=cache, **options)(args[0])
    if args:
        raise TypeError("njit takes keyword options only (a signature is inferred when the kernel is first called)")

    def decorate(func: Callable) -> Any:
        if not cache:
            return numba.njit(cache=False, **options)(func)
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as e:
            if not _no_locator(e):
                raise
        source = getattr(func, "__module__", "?")
        folder = fallback_cache_dir()
        if folder is not None:
            try:
                with _cache_dir(folder):
                    kernel = numba.njit(cache=True, **options)(func)
                _warn_once(source, f"numba cannot write its cache beside {source} or in the user's cache folder; "
                                   f"caching compiled kernels in {folder}")
                return kernel
            except RuntimeError as e:
                if not _no_locator(e):
                    raise
        _warn_once(source, f"numba has no writable cache folder for {source}: its kernels are compiled in every "
                           f"process (set NUMBA_CACHE_DIR to a writable folder to cache them)")
        return numba.njit(cache=False, **options)(func)

    return decorate


# ------------------------------------------------------------------------------------ vectorisable maths
@intrinsic
def _f32_from_bits(typingctx, bits):  # noqa: ARG001 (numba's intrinsic signature)
    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=True)
def exp_nonpositive(x):
    # exp(x) for float32 x <= 0 (below -87: exp(-87)). x = k ln2 + r with |r| <= ln2 / 2; exp(r) by Cephes' expf
    # polynomial, 2^k from the exponent bits. Relative error <= 1.2e-7 over [-87, 0]. Branch-free, so LLVM
    # vectorises loops that call it; numba's np.exp is libm's scalar expf (numba vectorises it only with Intel's
    # SVML, absent from the PyPI llvmlite).
    x = max(x, np.float32(-87.0))
    k = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    r = x - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)  # ln2 in two parts: r stays exact
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
