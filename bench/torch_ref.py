#!/usr/bin/python3
"""bench/torch_ref.py — the reference cINN of the engine benchmark, in PyTorch.

Builds the documented reference model (8 AllInOneBlocks, x 16, y 8, subnets
16 -> 256 -> 256 -> 16 with ReLU, hard permutations, SOFTPLUS global affine, HEAD clamp)
and writes it as an innserve checkpoint (bench/ref_cinn.safetensors, with PyTorch's own
outputs as test vectors, which the engine checks when it loads it).  Then either

  torch_ref.py                 times posterior sampling and log_prob in PyTorch,
                               single-threaded, at batch 1, 64 and 4096, or
  torch_ref.py --export DIR    exports the same module to ONNX (DIR/sample.onnx: z, y -> x,
                               the reverse pass; DIR/log_prob.onnx: x, y -> log density incl.
                               log-det; dynamic batch axis) plus DIR/check.json, inputs and
                               PyTorch's outputs for checking the ONNX graphs.

Uses FrEIA when it is importable (the real thing, as users run it); otherwise a
line-for-line PyTorch port of AllInOneBlock's math (same ops per call).  Prints one JSON
object on stdout.  Run with /usr/bin/python3 (Debian's torch).
"""
import json
import math
import os
import struct
import sys
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
DX, DY, H, NB = 16, 8, 256, 8
N1 = DX - DX // 2
N2 = DX // 2
HERE = os.path.dirname(os.path.abspath(__file__))


def make_subnet(c_in, c_out):
    net = torch.nn.Sequential(torch.nn.Linear(c_in, H), torch.nn.ReLU(),
                              torch.nn.Linear(H, H), torch.nn.ReLU(),
                              torch.nn.Linear(H, c_out))
    with torch.no_grad():
        net[-1].weight.mul_(0.3)
    return net


def port_params(k):
    """Block k's parameters for the port when FrEIA is absent (same seeds every run)."""
    subnet = make_subnet(N1 + DY, 2 * N2)
    g = torch.Generator().manual_seed(100 + k)
    scale = torch.full((1, DX), 2 * math.log(math.exp(5 * 1.0) - 1)) + 0.1 * torch.randn(1, DX, generator=g)
    offset = 0.1 * torch.randn(1, DX, generator=g)
    return dict(subnet=subnet, global_scale=scale, global_offset=offset,
                w_perm=torch.randperm(DX, generator=g))


class PortBlock(torch.nn.Module):
    """AllInOneBlock (HEAD semantics, hard permutation, SOFTPLUS) from its math."""

    def __init__(self, p):
        super().__init__()
        self.subnet = p["subnet"]
        self.alpha = 2.0
        self.global_scale = torch.nn.Parameter(p["global_scale"].clone())
        self.global_offset = torch.nn.Parameter(p["global_offset"].clone())
        self.register_buffer("w_perm", p["w_perm"].long().clone())
        self.register_buffer("w_perm_inv", torch.argsort(self.w_perm))

    def scale(self):
        return 0.1 * torch.nn.functional.softplus(self.global_scale, beta=0.5)

    def st(self, x1, c):
        a = 0.1 * self.subnet(torch.cat([x1, c], 1))
        s = self.alpha * torch.tanh(a[:, :N2] / self.alpha)
        return s, a[:, N2:]

    def forward(self, x, c, rev=False):
        g = self.scale()
        if not rev:
            x1, x2 = x[:, :N1], x[:, N1:]
            s, t = self.st(x1, c)
            u = torch.cat([x1, x2 * torch.exp(s) + t], 1)
            v = u * g + self.global_offset
            y = v[:, self.w_perm]
            return y, s.sum(1) + torch.log(g).sum()
        v = x[:, self.w_perm_inv]
        u = (v - self.global_offset) / g
        u1, u2 = u[:, :N1], u[:, N1:]
        s, t = self.st(u1, c)
        xo = torch.cat([u1, (u2 - t) * torch.exp(-s)], 1)
        return xo, -(s.sum(1) + torch.log(g).sum())


class PortINN(torch.nn.Module):
    """inn(x, c, rev) -> (out, logdet) over the given per-block parameter dicts."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = torch.nn.ModuleList([PortBlock(p) for p in blocks])

    def forward(self, x, c, rev=False):
        ld = torch.zeros(x.shape[0], dtype=x.dtype)
        seq = reversed(self.blocks) if rev else self.blocks
        for b in seq:
            x, l = b(x, c, rev)
            ld = ld + l
        return x, ld


class FreiaINN(torch.nn.Module):
    """FrEIA's SequenceINN behind the same inn(x, c, rev) -> (out, logdet) call."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x, c, rev=False):
        return self.seq(x, c=[c], rev=rev)


def build():
    """Returns (module inn(x, c, rev) -> (out, logdet), per-block parameter dicts, name)."""
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm
    except Exception:
        blocks = [port_params(k) for k in range(NB)]
        return PortINN(blocks).eval(), blocks, "torch port of AllInOneBlock"
    seq = Ff.SequenceINN(DX)
    for _ in range(NB):
        seq.append(Fm.AllInOneBlock, cond=0, cond_shape=(DY,), subnet_constructor=make_subnet,
                   affine_clamping=2.0)
    seq.eval()
    blocks = []
    for m in seq.module_list:
        with torch.no_grad():
            m.global_offset.add_(0.1 * torch.randn_like(m.global_offset))
        blocks.append(dict(subnet=m.subnet, global_scale=m.global_scale.detach(),
                           global_offset=m.global_offset.detach(), w_perm=m.w_perm.detach()))
    return FreiaINN(seq).eval(), blocks, "FrEIA"


def log_prob(inn, x, y):
    z, ld = inn(x, y, False)
    return -0.5 * (z * z).sum(1) - 0.5 * DX * math.log(2 * math.pi) + ld


class SampleGraph(torch.nn.Module):
    """(z, y) -> x: the reverse pass."""

    def __init__(self, inn):
        super().__init__()
        self.inn = inn

    def forward(self, z, y):
        return self.inn(z, y, True)[0]


class LogProbGraph(torch.nn.Module):
    """(x, y) -> log p(x | y): the forward pass, Gaussian log-density plus log-det."""

    def __init__(self, inn):
        super().__init__()
        self.inn = inn

    def forward(self, x, y):
        return log_prob(self.inn, x, y)


def export_onnx(inn, blocks, impl, out_dir):
    """Writes DIR/sample.onnx, DIR/log_prob.onnx and DIR/check.json; returns what ran."""
    import warnings
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    a, y = torch.randn(5, DX, generator=g), torch.randn(5, DY, generator=g)

    def export(model):
        for name, graph in (("sample", SampleGraph(model)), ("log_prob", LogProbGraph(model))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FrEIA's shape checks trace as constants
                torch.onnx.export(graph, (a, y), os.path.join(out_dir, name + ".onnx"),
                                  input_names=["in", "y"], output_names=["out"],
                                  dynamic_axes={"in": {0: "batch"}, "y": {0: "batch"},
                                                "out": {0: "batch"}},
                                  opset_version=17, do_constant_folding=True)

    onnx_impl, note = impl, ""
    try:
        export(inn)
    except Exception as ex:  # export the port of the same weights instead
        note = f"torch.onnx.export failed on {impl} ({type(ex).__name__}: {ex}); exported the port"
        onnx_impl = "torch port of AllInOneBlock (same weights)"
        export(PortINN(blocks).eval())
    with torch.no_grad():  # the reference is the module that was timed, FrEIA's when it ran
        check = {"in": a.tolist(), "y": y.tolist(), "sample": inn(a, y, True)[0].tolist(),
                 "log_prob": log_prob(inn, a, y).tolist()}
    with open(os.path.join(out_dir, "check.json"), "w") as f:
        json.dump(check, f)
    return {"onnx_impl": onnx_impl, "note": note, "dir": out_dir}


def write_checkpoint(path, blocks, inn):
    tensors = {}
    mblocks = []
    for k, b in enumerate(blocks):
        p = f"module_list.{k}."
        layers = []
        for i, layer in enumerate(b["subnet"]):
            if isinstance(layer, torch.nn.Linear):
                tensors[f"{p}subnet.{i}.weight"] = layer.weight.detach().float()
                tensors[f"{p}subnet.{i}.bias"] = layer.bias.detach().float()
                layers.append({"type": "linear", "weight": f"{p}subnet.{i}.weight",
                               "bias": f"{p}subnet.{i}.bias"})
            else:
                layers.append({"type": "relu"})
        tensors[p + "global_scale"] = b["global_scale"].float()
        tensors[p + "global_offset"] = b["global_offset"].float()
        tensors[p + "w_perm"] = b["w_perm"].long()
        mblocks.append({"type": "AllInOneBlock", "cond": 0, "affine_clamping": 2.0,
                        "clamp_formula": "head", "global_affine_type": "SOFTPLUS",
                        "global_scale": p + "global_scale", "global_offset": p + "global_offset",
                        "permutation": {"type": "hard", "perm": p + "w_perm"},
                        "subnet": {"layers": layers}})
    g = torch.Generator().manual_seed(7)
    tx = torch.randn(4, DX, generator=g)
    ty = torch.randn(4, DY, generator=g)
    with torch.no_grad():
        z, ld = inn(tx, ty, False)
    tensors["test.x"], tensors["test.y"] = tx, ty
    tensors["test.z"], tensors["test.log_det"] = z.float(), ld.double()
    manifest = {"format": "innserve-manifest", "version": 1, "kind": "cinn",
                "description": "benchmark reference cINN: 8 AllInOneBlocks, x 16, y 8, subnets 2x256 ReLU",
                "dims": {"x": DX, "y": DY}, "conditions": [{"net": None}], "blocks": mblocks,
                "tests": {"x": "test.x", "y": "test.y", "z": "test.z", "log_det": "test.log_det",
                          "rtol": 1e-4, "atol": 1e-4}}
    header = {"__metadata__": {"format": "innserve", "manifest": json.dumps(manifest)}}
    blobs, off = [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        dt = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def timeit(fn, min_time):
    fn()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_time:
            return el / reps


def main():
    min_time = float(os.environ.get("BENCH_SECONDS", "1.0"))
    inn, blocks, impl = build()
    path = os.path.join(HERE, "ref_cinn.safetensors")
    write_checkpoint(path, blocks, inn)
    out = {"impl": impl, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "checkpoint": path}
    if len(sys.argv) > 2 and sys.argv[1] == "--export":
        out.update(export_onnx(inn, blocks, impl, sys.argv[2]))
        print(json.dumps(out))
        return
    out["sample"], out["log_prob"] = {}, {}
    y = torch.randn(1, DY)
    with torch.no_grad():
        for b in (1, 64, 4096):
            yb = y.expand(b, DY)

            def sample():
                return inn(torch.randn(b, DX), yb, True)[0]

            def logp():
                return log_prob(inn, torch.randn(b, DX), yb)

            out["sample"][str(b)] = b / timeit(sample, min_time)
            out["log_prob"][str(b)] = b / timeit(logp, min_time)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
