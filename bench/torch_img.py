#!/usr/bin/python3
"""bench/torch_img.py — the image cINN of the engine benchmark, in PyTorch + FrEIA.

The model is the digits cINN of models/train/train_digits_cinn.py (its `build()`: a FrEIA
GraphINN on 1 x 8 x 8 images, Haar downsampling, 4 conv GLOW couplings per scale with y
broadcast over each scale's positions, PermuteRandom, a channel Split with an early latent,
Flatten and Concat), with x = 0.5 + 0.25 * (standardized x) as the training script exports it.
Weights: models/digits_cinn.safetensors when that file exists (loaded into the GraphINN by
tensor name and checked against the checkpoint's own test vectors), else the architecture's
initial weights from torch.manual_seed(0) (hidden 48, 4 blocks per scale: the script's
defaults), written as an innserve checkpoint by innserve.export.

  torch_img.py --export DIR   writes the checkpoint (the seeded one; the trained one is used
                              in place), DIR/sample.onnx (z, y -> x: the GraphINN's reverse
                              pass and the destandardization), DIR/log_prob.onnx (x, y -> log
                              density in x's units incl. log-det), DIR/check.json (inputs and
                              PyTorch's outputs, for ONNX Runtime) and DIR/check.bin (the same
                              for bench_engine --check, layout in write_check_bin)
  torch_img.py                times posterior sampling and log_prob in PyTorch+FrEIA,
                              single-threaded, at batch 1, 64 and 1024

y is the one-hot class; z and x are (B, 64) rows (x flattened in C order).  Needs the real
FrEIA (a vislearn/FrEIA tree on PYTHONPATH, or INNSERVE_FREIA_PATH): without it prints
{"missing": why} and exits with status 3.  Prints one JSON object on stdout.  Run with
/usr/bin/python3 (Debian's torch).
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAINED = os.path.join(ROOT, "models", "digits_cinn.safetensors")
BATCHES = (1, 64, 1024)
D, NCLASS = 64, 10
MEAN, STD = 0.5, 0.25          # the training script's standardization of x
HIDDEN, BLOCKS, SEED = 48, 4, 1  # its defaults (SEED also picks the permutations)
LEVELS = 17
Y_TIME = torch.eye(NCLASS)[3]   # the observation every timing uses: digit 3
sys.path.insert(0, os.path.join(ROOT, "models", "train"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
if os.environ.get("INNSERVE_FREIA_PATH"):
    sys.path.insert(0, os.environ["INNSERVE_FREIA_PATH"])


def freia():
    """(Ff, Fm) of the real FrEIA, or exits with {"missing": why}."""
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm
        return Ff, Fm
    except Exception as ex:
        print(json.dumps({"missing": "FrEIA is not importable (%s: %s); put a vislearn/FrEIA "
                          "tree on PYTHONPATH" % (type(ex).__name__, ex)}))
        sys.exit(3)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        raw = f.read()
    dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    out = {}
    for k, e in header.items():
        if k == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(raw[a:b], dtype=dt[e["dtype"]])
                                  .reshape(e["shape"]).copy())
    return json.loads(header["__metadata__"]["manifest"]), out


def conditions(y):
    return [y[:, :, None, None].expand(-1, -1, 4, 4), y[:, :, None, None].expand(-1, -1, 2, 2)]


class ImageCINN(torch.nn.Module):
    """The GraphINN behind x-unit calls: sample(z, y) -> x and log_prob(x, y), rows of 64."""

    def __init__(self, inn, mean, std):
        super().__init__()
        self.inn, self.mean, self.std = inn, mean, std

    def sample(self, z, y):
        x = self.inn(z, c=conditions(y), rev=True)[0]
        return (x * self.std + self.mean).reshape(z.shape[0], D)

    def log_prob(self, x, y):
        xs = ((x - self.mean) / self.std).reshape(x.shape[0], 1, 8, 8)
        z, ld = self.inn(xs, c=conditions(y))
        return (-0.5 * (z * z).sum(1) - 0.5 * D * math.log(2 * math.pi) + ld
                - D * math.log(self.std))


class SampleGraph(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, z, y):
        return self.m.sample(z, y)


class LogProbGraph(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x, y):
        return self.m.log_prob(x, y)


def load_trained(inn, path):
    """Copies the checkpoint's tensors into the GraphINN (names graph.NODE.PARAM, as the
    exporter writes them) and checks the result against the checkpoint's test vectors."""
    manifest, t = read_safetensors(path)
    used = 0
    for node in inn.node_list_fwd:
        if node.module is None:
            continue
        sd = node.module.state_dict()
        for k in sd:
            key = "graph.%s.%s" % (node.name, k)
            if key in t:
                sd[k] = t[key].to(sd[k].dtype).reshape(sd[k].shape)
                used += 1
        if "perm" in sd and "perm_inv" in sd:
            sd["perm_inv"] = torch.argsort(sd["perm"])
        node.module.load_state_dict(sd)
    graph_keys = [k for k in t if k.startswith("graph.")]
    if used != len(graph_keys):
        raise SystemExit("%s: %d of its %d graph tensors fit the GraphINN of train_digits_cinn."
                         "build()" % (path, used, len(graph_keys)))
    std = manifest["standardize"]["x"]
    mean, sd_ = t[std["mean"]].double(), t[std["std"]].double()
    if (mean - mean[0]).abs().max() > 0 or (sd_ - sd_[0]).abs().max() > 0:
        raise SystemExit("%s: per-pixel standardization; the benchmark expects one mean and std"
                         % path)
    m = ImageCINN(inn, float(mean[0]), float(sd_[0]))
    tests = manifest["tests"]
    with torch.no_grad():
        x = t[tests["x"]].float()
        xs = ((x - m.mean) / m.std).reshape(-1, 1, 8, 8)
        z, _ = inn(xs, c=conditions(t[tests["y"]].float()))
    diff = (z.double() - t[tests["z"]].double()).abs().max().item()
    if diff > 1e-3:
        raise SystemExit("%s: the GraphINN with its tensors gives z off by %.2g from the "
                         "checkpoint's test vectors" % (path, diff))
    return m


def model():
    """(ImageCINN, weights description, checkpoint path or None when it must be written)."""
    Ff, Fm = freia()
    import train_digits_cinn
    torch.manual_seed(0)
    if os.path.exists(TRAINED):
        # width and depth as trained: the first subnet's width, the first scale's couplings
        _, t = read_safetensors(TRAINED)
        hidden = t["graph.s1_glow0.subnet1.0.weight"].shape[0]
        blocks = len({k.split(".")[1] for k in t if k.startswith("graph.s1_glow")})
        inn = train_digits_cinn.build(Ff, Fm, hidden, blocks, SEED).eval()
        return (load_trained(inn, TRAINED), "trained (models/digits_cinn.safetensors, hidden "
                "%d, %d blocks per scale)" % (hidden, blocks), TRAINED)
    inn = train_digits_cinn.build(Ff, Fm, HIDDEN, BLOCKS, SEED).eval()
    return (ImageCINN(inn, MEAN, STD), "untrained: the architecture's initial weights, "
            "torch.manual_seed(0), hidden %d, %d blocks per scale" % (HIDDEN, BLOCKS), None)


def conv_flops(m):
    """Effective FLOPs per row of one log_prob call: 2 per multiply-add of every subnet
    convolution as PyTorch runs it (zero padding included); the Haar downsamplings' 768 are
    left out."""
    total = [0]

    def hook(mod, inp, out):
        w = mod.weight
        total[0] += 2 * out.numel() // out.shape[0] * (w.shape[1] * w.shape[2] * w.shape[3])

    hs = [mod.register_forward_hook(hook) for mod in m.modules()
          if isinstance(mod, torch.nn.Conv2d)]
    with torch.no_grad():
        m.log_prob(torch.rand(1, D), torch.eye(NCLASS)[:1])
    for h in hs:
        h.remove()
    return total[0]


def write_check_bin(path, z, y, x_sample, x_lp, lp, y_time):
    """bench_engine --check: int32 n, dx, dy; float32 z (n x dx), y (n x dy), x_sample
    (n x dx, PyTorch's reverse pass of z), x_lp (n x dx); float64 lp (n, PyTorch's log_prob of
    x_lp); float32 y_time (dy, the observation the timings use).  Little-endian."""
    n = z.shape[0]
    with open(path, "wb") as f:
        f.write(struct.pack("<3i", n, D, NCLASS))
        for a in (z, y, x_sample, x_lp):
            f.write(a.float().contiguous().numpy().astype("<f4").tobytes())
        f.write(lp.double().contiguous().numpy().astype("<f8").tobytes())
        f.write(y_time.float().contiguous().numpy().astype("<f4").tobytes())


def export_all(m, weights, ckpt, out_dir):
    import warnings
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    n = 8
    z = torch.randn(n, D, generator=g)
    y = torch.eye(NCLASS)[torch.arange(n) % NCLASS]
    with torch.no_grad():
        x_sample = m.sample(z, y)
        # log_prob at images in the data's range (dequantized-looking values in [0, 1])
        x_lp = torch.rand(n, D, generator=g)
        lp = m.log_prob(x_lp, y)
    if ckpt is None:
        from innserve.export import export
        ckpt = os.path.join(out_dir, "digits_cinn_init.safetensors")
        export(m.inn, ckpt, kind="cinn", broadcast_conditions=True,
               standardize={"x": (np.full(D, m.mean), np.full(D, m.std))},
               x_names=["c0_h%d_w%d" % (h, w) for h in range(8) for w in range(8)],
               y_names=["digit%d" % k for k in range(NCLASS)],
               image={"low": 0.0, "high": 1.0, "levels": LEVELS},
               test_inputs=(x_lp.double().numpy(), y.double().numpy()),
               description="benchmark image cINN: train_digits_cinn.py's architecture with "
                           "its initial weights (torch.manual_seed(0))")
    onnx_impl, note = "FrEIA GraphINN", ""
    try:
        # traced at batch 3, checked at batch n: a batch size frozen into the graph shows
        for name, graph, first in (("sample", SampleGraph(m), z[:3]),
                                   ("log_prob", LogProbGraph(m), x_lp[:3])):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FrEIA's shape checks trace as constants
                torch.onnx.export(graph, (first, y[:3]), os.path.join(out_dir, name + ".onnx"),
                                  input_names=["in", "y"], output_names=["out"],
                                  dynamic_axes={"in": {0: "batch"}, "y": {0: "batch"},
                                                "out": {0: "batch"}},
                                  opset_version=17, do_constant_folding=True)
    except Exception as ex:
        onnx_impl, note = None, "torch.onnx.export failed on the GraphINN (%s: %s)" % (
            type(ex).__name__, str(ex).splitlines()[0] if str(ex) else "")
    check = {"in": z.tolist(), "in_log_prob": x_lp.tolist(), "y": y.tolist(),
             "sample": x_sample.tolist(), "log_prob": lp.tolist(),
             "y_time": Y_TIME.tolist(), "batches": list(BATCHES)}
    with open(os.path.join(out_dir, "check.json"), "w") as f:
        json.dump(check, f)
    write_check_bin(os.path.join(out_dir, "check.bin"), z, y, x_sample, x_lp, lp, Y_TIME)
    return {"checkpoint": ckpt, "onnx_impl": onnx_impl, "note": note, "dir": out_dir,
            "flops_per_row": conv_flops(m),
            "params": sum(p.numel() for p in m.inn.parameters() if p.requires_grad)}


def freia_version():
    """FrEIA's git commit (or package version) as found on the path."""
    import subprocess
    import FrEIA
    src = os.path.dirname(os.path.dirname(os.path.abspath(FrEIA.__file__)))
    try:
        return "commit " + subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True,
                                          check=True).stdout.strip()
    except Exception:
        try:
            from importlib.metadata import version
            return version("FrEIA")
        except Exception:
            return "version unknown"


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
    m, weights, ckpt = model()
    out = {"impl": "FrEIA", "freia": freia_version(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "weights": weights}
    if len(sys.argv) > 2 and sys.argv[1] == "--export":
        out.update(export_all(m, weights, ckpt, sys.argv[2]))
        print(json.dumps(out))
        return
    out["sample"], out["log_prob"] = {}, {}
    y1 = Y_TIME[None]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for b in BATCHES:
            yb = y1.expand(b, NCLASS)
            xb = m.sample(torch.randn(b, D, generator=g), yb).clamp(0.0, 1.0)

            def sample():
                return m.sample(torch.randn(b, D), yb)

            def logp():
                return m.log_prob(xb, yb)

            out["sample"][str(b)] = b / timeit(sample, min_time)
            out["log_prob"][str(b)] = b / timeit(logp, min_time)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
