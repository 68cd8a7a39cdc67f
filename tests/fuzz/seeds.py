#!/usr/bin/env python3
"""seeds.py — gather the seed corpora of the fuzz targets into OUT/<target>/ (make fuzz).

  request: the committed seeds of tests/fuzz/corpus/request, every request body of the
           curl examples in docs/api.md, and generated bodies for every model kind and
           operation (v1 and V2), each prefixed with the target's selector byte
           (tests/fuzz/fuzz_request.c)
  loader:  every checkpoint of tests/fixtures (golden, corrupt, iresnet_cert) and models/
           but those of LOADER_SKIP (tests/fixtures/golden/conv_iresnet covers their blocks)
  http:    the committed seeds of tests/fuzz/corpus/http and one input per route
           (method, path, Accept, Content-Type, a string and number bits)
  image:   JSON (nested and flat) and .npy bodies for every model, operation and query
           variant of tests/fuzz/fuzz_image.c

Also writes OUT/<target>.max_len: the largest seed, at least 4096 bytes, the -max_len
make test-fuzz uses.  Standard library only.
"""
import json
import os
import re
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# selector bits 0-1 of fuzz_request.c: model
MODELS = {"iresnet_toy": 0, "ik_cinn": 1, "ik_inn": 2, "ik_mlp": 3}
OPS = {"forward": 0, "inverse": 1, "sample": 2, "log_prob": 3, "preimage": 4,
       "calibration": 5, "mmd": 6}
V2 = 7
# Checkpoints left out of the loader seeds: digits_iresnet's certificate (the spectral norms
# of 24 convolutions on 4 x 4 grids, through their explicit matrices) takes minutes under
# the fuzz build's instrumentation, so every input mutated from it would hit -timeout.
LOADER_SKIP = {"models/digits_iresnet.safetensors"}
KIND_DIMS = {0: (2, 0, 2), 1: (4, 2, 4), 2: (4, 2, 2), 3: (4, 2, 0)}  # x, y, z


def selector(model, entry, tight=False, fmt=0):
    return bytes([model | (entry << 2) | (0x20 if tight else 0) | (fmt << 6)])


def rows(n, w, start=0.1):
    return [[round(start * (i + 1) + 0.05 * j, 3) for j in range(w)] for i in range(n)]


def generated():
    """(name, bytes) of valid and near-valid requests for every model and operation."""
    out = []
    for model, k in MODELS.items():
        dx, dy, dz = KIND_DIMS[k]
        y = {"y": rows(1, dy, 1.0)} if dy else {}
        bodies = {
            "forward": dict({"x": rows(2, dx)}, **(y if k == 1 else {})),
            "inverse": dict({"z": rows(2, dz), "tol": 1e-5, "max_iter": 20,
                             "method": "newton"}, **(y if k in (1, 2) else {})),
            "sample": dict({"num_samples": 3, "seed": 5, "temperature": 0.8,
                            "outputs": ["samples", "log_prob", "summary"] +
                            (["resimulation"] if k == 2 else []),
                            "quantiles": [0.05, 0.5, 0.95]}, **(y if k in (1, 2) else {})),
            "log_prob": dict({"x": rows(2, dx)}, **(y if k in (1, 2) else {})),
            "calibration": dict({"x": rows(3, dx), "num_samples": 4, "seed": 2, "bins": 3,
                                 "coverage_points": 4, "confidence": 0.9, "tarp_bins": 2},
                                **({"y": rows(3, dy, 1.0)} if k in (1, 2) else {})),
            "mmd": dict({"reference": rows(4, dx), "num_samples": 6, "seed": 2,
                         "scales": [0.1, 1.0], "estimator": "biased", "permutations": 3},
                        **(y if k in (1, 2) else {})),
            "preimage": dict({"target": rows(1, dy if k in (2, 3) else dz), "num_solutions": 2,
                              "max_steps": 10, "seed": 1, "method": "gradient",
                              "bounds": {"low": [-2] * dx, "high": [2] * dx}},
                             **(y if k == 1 else {})),
        }
        for op, body in bodies.items():
            text = json.dumps(body).encode()
            out.append((f"{model}_{op}", selector(k, OPS[op]) + text))
            out.append((f"{model}_{op}_tight", selector(k, OPS[op], tight=True) + text))
        for fmt, name in ((1, "csv"), (2, "npy")):
            out.append((f"{model}_sample_{name}", selector(k, OPS["sample"], fmt=fmt) +
                        json.dumps(dict({"num_samples": 2, "seed": 1, "outputs": ["samples"]},
                                        **(y if k in (1, 2) else {}))).encode()))
        inputs = [{"name": "x", "shape": [2, dx], "datatype": "FP32",
                   "data": sum(rows(2, dx), [])}]
        if k == 1:
            inputs.append({"name": "y", "shape": [1, dy], "datatype": "FP64", "data": [1.0, 0.5]})
        out.append((f"{model}_v2_forward", selector(k, V2) + json.dumps(
            {"id": "a", "inputs": inputs, "outputs": [{"name": "log_det"}]}).encode()))
        if k != 3:
            v2s = {"inputs": [{"name": "y", "shape": [1, dy], "datatype": "FP32",
                               "data": [[1.5, 0.0]]}] if dy else [],
                   "parameters": {"operation": "sample", "num_samples": 2, "seed": 3,
                                  "temperature": 1.0}}
            out.append((f"{model}_v2_sample", selector(k, V2) + json.dumps(v2s).encode()))
            v2i = {"inputs": [{"name": "z", "shape": [1, dz], "datatype": "FP32",
                               "data": [0.5] * dz}] +
                   ([{"name": "y", "shape": [1, dy], "datatype": "FP32", "data": [1.5, 0.0]}]
                    if k in (1, 2) else []),
                   "parameters": {"operation": "inverse", "tol": 1e-4, "max_iter": 10,
                                  "method": "anderson"}}
            out.append((f"{model}_v2_inverse", selector(k, V2) + json.dumps(v2i).encode()))
    return out


def from_docs():
    out = []
    pat = re.compile(r"localhost:8080/(v1|v2)/models/([a-z_]+)/([a-z_]+) -d '([^']*)'")
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        for i, m in enumerate(pat.finditer(f.read())):
            api, model, op, body = m.groups()
            k = MODELS.get(model, 1)
            entry = V2 if api == "v2" else OPS.get(op, 0)
            out.append((f"docs_{i}_{model}_{op}", selector(k, entry) + body.encode()))
    return out


def copy_dir(src, dst):
    if os.path.isdir(src):
        for name in sorted(os.listdir(src)):
            p = os.path.join(src, name)
            if os.path.isfile(p):
                shutil.copyfile(p, os.path.join(dst, name))


def http_seeds():
    out = []
    paths = ["/healthz", "/readyz", "/metrics", "/v1/models", "/v1/models/ik_cinn",
             "/v1/models/ik_cinn/forward", "/v1/models/ik_cinn/sample",
             "/v1/models/ik_cinn/certificate", "/v2", "/v2/health/live",
             "/v2/models/ik_cinn/versions/1/infer", "/v2/models/ik_cinn/versions/1/ready"]
    bits = struct.pack("<4f2d", 1.5, -0.0, 3.4028235e38, 1e-45, 0.1, 5e-324)
    for i, p in enumerate(paths):
        for m in ("GET", "POST", "HEAD"):
            out.append((f"route_{i}_{m}", b"\0".join([
                m.encode(), p.encode(), b"text/csv, application/json;q=0.9",
                b"application/json; charset=utf-8", b"x1|x,2|\"q\"\n|"]) + b"\0" + bits))
    return out


# fuzz_image.c: models (row shape, dims.y) and operations
IMAGE_MODELS = [((1, 3, 4), 0), ((3, 2, 2), 2), ((2, 5), 0), ((4,), 2)]
IMAGE_OPS = ["forward", "inverse", "log_prob", "sample"]


def npy(shape, values, descr="<f4"):
    """The bytes numpy.save writes for a C-order array of this shape."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    d = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    pad = (64 - (10 + len(d) + 1) % 64) % 64
    head = d + " " * pad + "\n"
    fmt = "<%d%s" % (len(values), "f" if descr == "<f4" else "d")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + \
        struct.pack(fmt, *values)


def nested(vals, shape):
    if len(shape) == 1:
        return vals
    step = len(vals) // shape[0]
    return [nested(vals[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def image_seeds():
    out = []
    for m, (shape, dy) in enumerate(IMAGE_MODELS):
        d = 1
        for k in shape:
            d *= k
        vals = [round(0.05 * i - 0.4, 3) for i in range(2 * d)]
        for o, op in enumerate(IMAGE_OPS):
            for q in range(4):
                sel = m | (o << 2) | (q << 6)
                main = "z" if op == "inverse" else "x"
                if op == "sample":
                    body = {"num_samples": 2, "seed": 1}
                    if dy:
                        body["y"] = [[0.5, -0.5]]
                    out.append((f"img_{m}_{op}_q{q}_json", bytes([sel]) + json.dumps(body).encode()))
                    if dy:
                        out.append((f"img_{m}_{op}_q{q}_npy", bytes([sel | 0x10]) +
                                    npy((1, 2), [0.5, -0.5])))
                    continue
                body = {main: nested(vals, (2,) + shape)}
                if dy:
                    body["y"] = [0.5, -0.5]
                out.append((f"img_{m}_{op}_q{q}_json", bytes([sel]) + json.dumps(body).encode()))
                flat = {main: [vals[:d], vals[d:]]}
                if dy:
                    flat["y"] = [0.5, -0.5]
                out.append((f"img_{m}_{op}_q{q}_flat", bytes([sel | 0x20]) +
                            json.dumps(flat).encode()))
                y = npy((2,), [0.5, -0.5]) if dy else b""
                out.append((f"img_{m}_{op}_q{q}_npy", bytes([sel | 0x10]) +
                            npy((2,) + shape, vals) + y))
                out.append((f"img_{m}_{op}_q{q}_npy8", bytes([sel | 0x10]) +
                            npy((2, d), vals, "<f8") + y))
    return out


def write(dst, items):
    for name, data in items:
        with open(os.path.join(dst, name), "wb") as f:
            f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build-fuzz", "corpus")
    for t in ("request", "loader", "http", "image"):
        d = os.path.join(out, t)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    write(os.path.join(out, "request"), generated() + from_docs())
    copy_dir(os.path.join(ROOT, "tests", "fuzz", "corpus", "request"), os.path.join(out, "request"))
    for sub in ("tests/fixtures/golden", "tests/fixtures/corrupt", "tests/fixtures/iresnet_cert",
                "models", "tests/fuzz/corpus/loader"):
        src = os.path.join(ROOT, sub)
        if os.path.isdir(src):
            for name in sorted(os.listdir(src)):
                if os.path.join(sub, name) in LOADER_SKIP:
                    continue
                if name.endswith(".safetensors") or sub.endswith("/loader"):
                    shutil.copyfile(os.path.join(src, name), os.path.join(
                        out, "loader", sub.replace("/", "_") + "_" + name))
    write(os.path.join(out, "http"), http_seeds())
    write(os.path.join(out, "image"), image_seeds())
    copy_dir(os.path.join(ROOT, "tests", "fuzz", "corpus", "http"), os.path.join(out, "http"))
    for t in ("request", "loader", "http", "image"):
        d = os.path.join(out, t)
        sizes = [os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)]
        with open(os.path.join(out, t + ".max_len"), "w") as f:
            f.write(str(max([4096] + sizes)))
        print(f"{t}: {len(sizes)} seeds in {d}")


if __name__ == "__main__":
    main()
