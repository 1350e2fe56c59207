"""idx files (the MNIST / Fashion-MNIST format), read safely with numpy: no pickle, bounded size,
the header checked against the body."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import SdmError

MAX_IDX_BYTES = 64 << 20  # the full Fashion-MNIST train images are 47 MB decompressed


def read_idx_bytes(path: Path) -> bytes:
    """The (decompressed) content of ``path``, at most ``MAX_IDX_BYTES``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_IDX_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise SdmError(f"cannot read idx file {path}: {exc}") from None
    if len(data) > MAX_IDX_BYTES:
        raise SdmError(f"{path} is larger than {MAX_IDX_BYTES >> 20} MiB: not an MNIST-style idx file")
    return data


def parse_idx(data: bytes, ndim: int, what: str) -> np.ndarray:
    """Parse idx bytes (big-endian header: 0x0000, dtype 0x08 = uint8, ``ndim``, then ``ndim``
    uint32 sizes) into a read-only uint8 array of that shape. ``what`` names the file in errors."""
    kind = {3: "idx3 image file", 1: "idx1 label file"}.get(ndim, f"idx{ndim} file")
    if len(data) < 4:
        raise SdmError(f"{what} is not an {kind} (only {len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != 0x0800 + ndim:
        raise SdmError(f"{what} is not an {kind} (magic 0x{magic:08x}, expected 0x{0x800 + ndim:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SdmError(f"{what} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != expected:
        state = "truncated" if body < expected else "longer than its header says"
        raise SdmError(f"{what} is {state}: header {'x'.join(map(str, dims))} = {expected} bytes, found {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
