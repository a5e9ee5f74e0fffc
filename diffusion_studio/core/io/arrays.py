"""Arrays from strangers: a .npy file read without pickle, its header checked against the shape the caller needs
before any data is read, so a header claiming gigabytes allocates nothing."""
from __future__ import annotations

import os
import tokenize
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from .safeio import open_regular

FLOAT_KINDS = ("float16", "float32", "float64")
MAX_NPY_BYTES = 4 << 30


def read_float_npy(path: str | os.PathLike, shape: tuple[int, ...], what: str = "array") -> torch.Tensor:
    """The float array in ``path`` (a .npy of float16/32/64, C or Fortran order) as a float32 tensor of exactly
    ``shape``; CheckpointError (one line naming the file) for anything else: another format, another dtype or shape,
    too little data, NaN or ∞."""
    p = Path(path)
    want = tuple(int(s) for s in shape)
    need = int(np.prod(want)) if want else 1
    with open_regular(p, MAX_NPY_BYTES, CheckpointError, what) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                header = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
            else:
                raise ValueError(f"npy version {version}")
        except (ValueError, OSError, SyntaxError, TypeError, KeyError, EOFError, RecursionError, MemoryError,
                tokenize.TokenError) as e:  # numpy's header parser lets each of these through on some bytes
            raise CheckpointError(p, f"not a .npy array file ({str(e).splitlines()[0][:80]})") from None
        got_shape, fortran, dtype = header
        if dtype.hasobject:
            raise CheckpointError(p, "holds Python objects (a pickle), which are never loaded")
        if dtype.name not in FLOAT_KINDS:
            raise CheckpointError(p, f"dtype {dtype.name}: must be a float array ({', '.join(FLOAT_KINDS)})")
        if tuple(got_shape) != want:
            shown = "×".join(map(str, got_shape)) or "a scalar"
            raise CheckpointError(p, f"shape {shown}; this needs {'×'.join(map(str, want))}")
        raw = f.read(need * dtype.itemsize + 1)
    if len(raw) != need * dtype.itemsize:
        raise CheckpointError(p, f"holds {len(raw):,} bytes of data where its header promises "
                                 f"{need * dtype.itemsize:,}")
    arr = np.frombuffer(raw, dtype=dtype, count=need)
    arr = arr.reshape(want[::-1]).transpose() if fortran else arr.reshape(want)
    out = torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))  # a writable copy
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(p, "holds NaN or infinite values")
    return out
