"""Typed access to the fields of an export file: each read checks type, rank and range.

A field that is missing, of the wrong kind (a group where a dataset belongs, an object
reference, a string where a number belongs), of the wrong rank (a list where a scalar belongs,
2-D where a shape vector belongs) or out of range raises ``SdmError`` with one line naming the
file and the field's HDF5 path (``/layer/3/depth``, ``/@T`` for a root attribute). The names a
group may hold are listed in ``h5format``; ``no_unknown`` refuses anything else.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import SdmError


def describe(a: np.ndarray) -> str:
    """A short description of what a field holds, for error messages."""
    if a.dtype.kind == "O":
        item = a.reshape(-1)[0] if a.size else None
        what = type(item).__name__ if item is not None else "object"
        return f"{what} (object dtype)" if a.shape == () else f"{what} array of shape {a.shape}"
    return f"{a.dtype} scalar" if a.shape == () else f"{a.dtype} array of shape {a.shape}"


class FieldReader:
    """Reads the fields of one open export file; every error names ``path`` and the field."""

    def __init__(self, path: str | Path, values: dict | None = None):
        self.path = Path(path)
        self.values = {} if values is None else values  # dataset values already read, by HDF5 path

    def fail(self, field: str, problem: str) -> SdmError:
        return SdmError(f"export file {self.path}: field '{field}' {problem}")

    @staticmethod
    def field(group: h5py.Group, key: str, attr: bool) -> str:
        base = group.name.rstrip("/")
        return f"{base}/@{key}" if attr else f"{base}/{key}"

    # -- structure ---------------------------------------------------------------------------

    def group(self, parent: h5py.Group, key: str) -> h5py.Group:
        if key not in parent:
            raise self.fail(self.field(parent, key, False), "is missing (incomplete or not an sdm-neuro export)")
        obj = parent.get(key, getlink=False)
        if not isinstance(obj, h5py.Group):
            raise self.fail(self.field(parent, key, False), "must be a group")
        return obj

    def no_unknown(self, group: h5py.Group, members: set[str], attrs: set[str] = frozenset()) -> None:
        """Refuse members (datasets, groups) and attributes of ``group`` that the format does not define,
        and members that are soft or external links (a field must be stored in this file, once)."""
        for key in group.keys():
            if not isinstance(group.get(key, getlink=True), h5py.HardLink):
                raise self.fail(self.field(group, key, False), "is a soft or external link; fields must be stored "
                                                               "in the file itself")
        extra = sorted(set(group.keys()) - set(members))
        if extra:
            raise self.fail(self.field(group, extra[0], False), "is not part of the format (unknown dataset or group)")
        extra = sorted(set(group.attrs.keys()) - set(attrs))
        if extra:
            raise self.fail(self.field(group, extra[0], True), "is not part of the format (unknown attribute)")

    def numbered(self, group: h5py.Group) -> int:
        """The member count of a group whose members must be named 0, 1, ..., n - 1."""
        keys = set(group.keys())
        n = len(keys)
        want = {str(i) for i in range(n)}
        if keys != want:
            bad = sorted(keys - want)[0]
            raise self.fail(self.field(group, bad, False), f"is not one of 0..{n - 1} (members must be numbered "
                                                            f"0, 1, ... without gaps)")
        return n

    def raw(self, group: h5py.Group, key: str, attr: bool = False, optional: bool = False):
        """The stored value as a numpy array (None if optional and absent)."""
        f = self.field(group, key, attr)
        if attr:
            if key not in group.attrs:
                if optional:
                    return None
                raise self.fail(f, "is missing (incomplete or not an sdm-neuro export)")
            return np.asarray(group.attrs[key])
        if key not in group:
            if optional:
                return None
            raise self.fail(f, "is missing (incomplete or not an sdm-neuro export)")
        obj = group.get(key, getlink=False)
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(f, "must be a dataset, not a group")
        if obj.name in self.values:
            return self.values[obj.name]
        return np.asarray(obj[()])

    # -- scalars -----------------------------------------------------------------------------

    def integer(self, group, key, lo: int, hi: int, attr: bool = False) -> int:
        a = self.raw(group, key, attr)
        if a.shape != () or a.dtype.kind not in "iu":
            raise self.fail(self.field(group, key, attr), f"must be an integer scalar, got {describe(a)}")
        v = int(a)
        if not lo <= v <= hi:
            raise self.fail(self.field(group, key, attr), f"is {v}, outside {lo}..{hi}")
        return v

    def real(self, group, key, attr: bool = False, allow_inf: bool = False) -> float:
        a = self.raw(group, key, attr)
        if a.shape != () or a.dtype.kind not in "fiu":
            raise self.fail(self.field(group, key, attr), f"must be a real scalar, got {describe(a)}")
        v = float(a)
        if np.isnan(v) or (np.isinf(v) and not allow_inf):
            raise self.fail(self.field(group, key, attr), f"is {v}; it must be finite")
        return v

    def boolean(self, group, key) -> bool:
        a = self.raw(group, key)
        if a.shape != () or a.dtype.kind != "b":
            raise self.fail(self.field(group, key, False), f"must be a boolean scalar, got {describe(a)}")
        return bool(a)

    def text(self, group, key, attr: bool = False, choices: tuple[str, ...] | None = None) -> str:
        """A string: a variable-length str, or a fixed-length byte string, UTF-8."""
        a = self.raw(group, key, attr)
        f = self.field(group, key, attr)
        v = a.reshape(-1)[0] if a.shape == () else None
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail(f, "is not UTF-8 text") from None
        if not isinstance(v, str):
            raise self.fail(f, f"must be a text scalar, got {describe(a)}")
        if choices is not None and v not in choices:
            raise self.fail(f, f"is {v!r}; expected {' or '.join(repr(c) for c in choices)}")
        return v

    # -- arrays ------------------------------------------------------------------------------

    def array(self, group, key, kinds: str, ndim: int, attr: bool = False, optional: bool = False,
              shape: tuple | None = None) -> np.ndarray | None:
        """A numeric array of rank ``ndim`` and dtype kind in ``kinds`` ("f" float, "i"/"u" integer);
        float arrays must be finite; ``shape``, if given, must match exactly."""
        a = self.raw(group, key, attr, optional)
        if a is None:
            return None
        f = self.field(group, key, attr)
        if a.dtype.kind not in kinds or a.ndim != ndim:
            want = {"f": "real", "fiu": "real", "iu": "integer", "i": "integer"}.get(kinds, kinds)
            raise self.fail(f, f"must be a {ndim}-D {want} array, got {describe(a)}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise self.fail(f, "holds NaN or infinite values")
        if shape is not None and a.shape != tuple(shape):
            raise self.fail(f, f"has shape {a.shape}; expected {tuple(shape)}")
        return a

    def shape3(self, group, key, attr: bool = False, limit: int = 1 << 20) -> tuple[int, int, int]:
        """A (C, H, W) shape: 3 integers in 1..limit."""
        a = self.array(group, key, "iu", 1, attr)
        if a.shape != (3,) or a.min() < 1 or a.max() > limit:
            raise self.fail(self.field(group, key, attr), f"is {a.tolist()}; expected (C, H, W), each in 1..{limit}")
        return tuple(int(v) for v in a)
