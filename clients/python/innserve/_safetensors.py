"""A minimal safetensors reader and writer in pure Python (no numpy, no torch needed).

The file is ``8-byte little-endian header length | JSON header | raw tensor data`` as
specified by https://github.com/huggingface/safetensors; innserve keeps its manifest in
the header's ``__metadata__`` (see docs/checkpoint-format.md).

Tensors are given to :func:`write` as ``(dtype, shape, raw_bytes)`` triples, or as
anything :func:`encode` understands (a numpy array, a torch tensor, nested lists).
"""

import json
import struct
from array import array
import sys

__all__ = ["DTYPE_SIZE", "encode", "write", "serialize", "read", "read_header", "decode"]

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
              "I8": 1, "U8": 1, "BOOL": 1}
_ARRAY_CODE = {"F64": "d", "F32": "f", "I64": "q", "I32": "i", "I16": "h", "I8": "b",
               "U8": "B", "BOOL": "B"}
_MAX_HEADER = 64 << 20


def _flatten(value):
    """Nested lists/tuples of numbers -> (flat list, shape)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return [], [0]
        parts = [_flatten(v) for v in value]
        shape0 = parts[0][1]
        for _, s in parts:
            if s != shape0:
                raise ValueError("ragged nested list")
        flat = []
        for f, _ in parts:
            flat.extend(f)
        return flat, [len(value)] + shape0
    return [value], []


def encode(value, dtype=None):
    """Turn ``value`` into ``(dtype, shape, raw little-endian bytes)``.

    ``value`` may be a torch tensor, a numpy array, a Python number or nested lists.
    ``dtype`` (a safetensors name such as ``"F32"``) converts; by default torch/numpy
    keep their dtype (float64 stays F64, int64 I64, bool BOOL) and lists become F32.
    """
    mod = type(value).__module__
    if mod.startswith("torch"):
        value = value.detach().cpu()
        if dtype is None:
            dtype = {"torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16",
                     "torch.bfloat16": "BF16", "torch.int64": "I64", "torch.int32": "I32",
                     "torch.int16": "I16", "torch.int8": "I8", "torch.uint8": "U8",
                     "torch.bool": "BOOL"}[str(value.dtype)]
        if dtype == "BF16":
            import torch
            raw = value.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
            return dtype, list(value.shape), raw
        value = value.numpy()
        mod = "numpy"
    if mod == "numpy":
        import numpy as np
        if dtype is None:
            dtype = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64",
                     "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
                     "bool": "BOOL"}[str(value.dtype)]
        np_t = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}[dtype]
        arr = np.ascontiguousarray(np.asarray(value).astype(np_t))
        return dtype, list(arr.shape), arr.tobytes()
    flat, shape = _flatten(value)
    dtype = dtype or "F32"
    if dtype not in _ARRAY_CODE:
        raise ValueError("dtype %s needs numpy or torch" % dtype)
    a = array(_ARRAY_CODE[dtype], [int(v) if dtype[0] in "IUB" else float(v) for v in flat])
    if sys.byteorder != "little":
        a.byteswap()
    return dtype, shape, a.tobytes()


def serialize(tensors, metadata=None):
    """tensors: ordered mapping name -> value (see :func:`encode`) -> file bytes."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    off = 0
    for name, value in tensors.items():
        if isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], bytes):
            dtype, shape, raw = value
        else:
            dtype, shape, raw = encode(value)
        n = 1
        for s in shape:
            n *= s
        if len(raw) != n * DTYPE_SIZE[dtype]:
            raise ValueError("tensor %s: %d bytes for shape %s %s" % (name, len(raw), shape, dtype))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def write(path, tensors, metadata=None):
    """Write a .safetensors file atomically (temp file + rename)."""
    import os
    data = serialize(tensors, metadata)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_header(path):
    """Return (header dict, data offset) of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > _MAX_HEADER:
            raise ValueError("%s: header of %d bytes is too large" % (path, n))
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def decode(entry, raw):
    """One tensor's raw bytes -> (flat list of Python numbers, shape)."""
    dtype = entry["dtype"]
    if dtype in ("F16", "BF16"):
        if dtype == "F16":
            vals = list(struct.unpack("<%de" % (len(raw) // 2), raw))
        else:
            ints = struct.unpack("<%dH" % (len(raw) // 2), raw)
            vals = [struct.unpack("<f", struct.pack("<I", i << 16))[0] for i in ints]
    else:
        a = array(_ARRAY_CODE[dtype])
        a.frombytes(raw)
        if sys.byteorder != "little":
            a.byteswap()
        vals = list(a)
        if dtype == "BOOL":
            vals = [bool(v) for v in vals]
    return vals, list(entry["shape"])


def read(path):
    """Read a whole file: (tensors {name: (flat values, shape)}, metadata dict)."""
    header, base = read_header(path)
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    with open(path, "rb") as f:
        for name, e in header.items():
            b, end = e["data_offsets"]
            f.seek(base + b)
            out[name] = decode(e, f.read(end - b))
    return out, meta
