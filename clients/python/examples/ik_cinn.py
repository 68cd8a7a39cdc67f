#!/usr/bin/python3
"""The whole innserve workflow on the inverse-kinematics benchmark (Kruse et al. 2021):

  1. train a small conditional INN x <-> z given y by maximum likelihood (PyTorch; FrEIA
     when it is importable, else a few FrEIA-compatible classes defined below);
  2. export it with innserve.export (standardization, variable names, test vectors);
  3. serve it: start the daemon on a free port (--serve, the default when the innserve
     binary is found) or use a running one (--url; copy the file into its --models
     directory and send it SIGHUP);
  4. sample the posterior p(x | y*) through innserve.Client and report the re-simulation
     error mean ||f(x) - y*||^2 of the samples.

    /usr/bin/python3 clients/python/examples/ik_cinn.py                 # ~1-2 min of CPU
    /usr/bin/python3 clients/python/examples/ik_cinn.py --steps 300     # quick smoke run

The task (Kruse et al. 2021, inverse kinematics): x = (rail height, three
angles) ~ N(0, diag(0.25, 0.5, 0.5, 0.5)^2), segment lengths (0.5, 0.5, 1.0), y = the end
point of the arm.
"""

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))            # the innserve package, uninstalled
from innserve import Client  # noqa: E402
from innserve.export import export  # noqa: E402

SIGMA = torch.tensor([0.25, 0.5, 0.5, 0.5])
LENGTHS = (0.5, 0.5, 1.0)
X_NAMES = ["rail", "angle1", "angle2", "angle3"]
Y_NAMES = ["end_x", "end_y"]
NOISE = 0.02           # observation noise used in training


def forward_kinematics(x):
    """End point y (n, 2) of the arm for parameters x (n, 4) (torch or numpy)."""
    l1, l2, l3 = LENGTHS
    lib = torch if isinstance(x, torch.Tensor) else __import__("numpy")
    a1 = x[:, 1]
    a2 = a1 + x[:, 2]
    a3 = a2 + x[:, 3]
    y1 = l1 * lib.cos(a1) + l2 * lib.cos(a2) + l3 * lib.cos(a3)
    y2 = x[:, 0] + l1 * lib.sin(a1) + l2 * lib.sin(a2) + l3 * lib.sin(a3)
    return lib.stack([y1, y2], 1)


# ---- FrEIA, or a minimal stand-in with FrEIA's class names and state_dict layout -------

def freia():
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm
        return Ff.SequenceINN, Fm.AllInOneBlock, "FrEIA"
    except ImportError:
        return SequenceINN, AllInOneBlock, "built-in stand-in (FrEIA not installed)"


class AllInOneBlock(nn.Module):
    """FrEIA's AllInOneBlock for flat data: affine coupling with s = a*tanh(u/a), SOFTPLUS
    global affine scaling, hard permutation (what innserve.export reads: the attributes
    below and the state_dict keys subnet.*, global_scale, global_offset, w_perm)."""

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, affine_clamping=2.0):
        super().__init__()
        C = dims_in[0][0]
        self.dims_in, self.dims_c = dims_in, dims_c
        self.in_channels, self.input_rank = C, 0
        self.splits = [C - C // 2, C // 2]
        self.clamp, self.GIN, self.householder, self.reverse_pre_permute = affine_clamping, False, 0, False
        self.softplus = nn.Softplus(beta=0.5)
        self.global_scale_activation = lambda a: 0.1 * self.softplus(a)
        self.global_scale = nn.Parameter(torch.full((1, C), 2 * math.log(math.exp(5.0) - 1)))
        self.global_offset = nn.Parameter(torch.zeros(1, C))
        p = torch.randperm(C)
        self.w_perm = nn.Parameter(p, requires_grad=False)
        self.w_perm_inv = nn.Parameter(torch.argsort(p), requires_grad=False)
        cw = sum(d[0] for d in dims_c)
        self.subnet = subnet_constructor(self.splits[0] + cw, 2 * self.splits[1])

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        g = self.global_scale_activation(self.global_scale)
        if rev:
            x = (x[:, self.w_perm_inv] - self.global_offset) / g
        x1, x2 = torch.split(x, self.splits, 1)
        a = 0.1 * self.subnet(torch.cat([x1, *c], 1))
        n2 = self.splits[1]
        s = self.clamp * torch.tanh(a[:, :n2] / self.clamp)
        if not rev:
            u = torch.cat([x1, x2 * torch.exp(s) + a[:, n2:]], 1)
            return ((u * g + self.global_offset)[:, self.w_perm],), s.sum(1) + torch.log(g).sum()
        return (torch.cat([x1, (x2 - a[:, n2:]) * torch.exp(-s)], 1),), -(s.sum(1) + torch.log(g).sum())


class SequenceINN(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.shapes, self.conditions, self.module_list = [tuple(dims)], [], nn.ModuleList()

    def append(self, cls, cond=None, cond_shape=None, **kw):
        self.conditions.append(cond)
        self.module_list.append(cls([self.shapes[-1]], [cond_shape] if cond is not None else [], **kw))
        self.shapes.append(self.shapes[-1])

    def forward(self, x, c=None, rev=False, jac=True):
        ld = torch.zeros(x.shape[0])
        for i in (reversed(range(len(self.module_list))) if rev else range(len(self.module_list))):
            k = self.conditions[i]
            (x,), j = self.module_list[i]([x], c=[] if k is None else [c[k]], rev=rev, jac=jac)
            ld = ld + j
        return x, ld


# ---- training ------------------------------------------------------------------------

def train(steps, seed, log_every=500):
    torch.manual_seed(seed)
    Seq, AIO, which = freia()
    print("training a cINN with %s, %d steps" % (which, steps))
    torch.set_num_threads(min(4, torch.get_num_threads()))

    def subnet(cin, cout):
        net = nn.Sequential(nn.Linear(cin, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                            nn.Linear(128, cout))
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
        return net

    inn = Seq(4)
    for _ in range(6):
        inn.append(AIO, cond=0, cond_shape=(2,), subnet_constructor=subnet, affine_clamping=2.0)
    # standardization: x by the prior's sigma, y by its empirical moments
    with torch.no_grad():
        y_big = forward_kinematics(torch.randn(200_000, 4) * SIGMA)
    y_mean, y_std = y_big.mean(0), y_big.std(0)
    opt = torch.optim.Adam([p for p in inn.parameters() if p.requires_grad], lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    for step in range(1, steps + 1):
        x = torch.randn(512, 4) * SIGMA
        # a little observation noise (sigma 0.02) gives the posterior a density and makes
        # the problem much easier to learn in a few thousand steps
        y = forward_kinematics(x) + NOISE * torch.randn(512, 2)
        z, ld = inn(x / SIGMA, c=[(y - y_mean) / y_std])
        loss = (0.5 * (z ** 2).sum(1) - ld).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(inn.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            print("  step %5d  nll %.3f  (%.0fs)" % (step, float(loss), time.time() - t0))
    inn.eval()
    return inn, y_mean, y_std


# ---- serving -------------------------------------------------------------------------

def find_innserve(arg):
    for cand in (arg, os.environ.get("INNSERVE_BIN"),
                 os.path.join(HERE, "..", "..", "..", "build", "innserve"), shutil.which("innserve")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return None


def start_daemon(binary, models_dir):
    p = subprocess.Popen([binary, "--models", models_dir, "--host", "127.0.0.1", "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import json
    for line in p.stderr:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "listening":
            import threading
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, "http://127.0.0.1:%d" % ev["port"]
    raise RuntimeError("innserve did not start (exit %s)" % p.wait())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="checkpoint path (default: a temporary directory)")
    ap.add_argument("--url", default=None, help="use a running daemon instead of starting one")
    ap.add_argument("--innserve", default=None, help="path of the innserve binary")
    ap.add_argument("--samples", type=int, default=4000, help="posterior samples (default 4000)")
    ap.add_argument("--target", default="1.5,0", help="observation y* (default 1.5,0)")
    a = ap.parse_args()

    inn, y_mean, y_std = train(a.steps, a.seed)
    tmp = tempfile.mkdtemp(prefix="innserve-ik-")
    path = a.out or os.path.join(tmp, "ik.safetensors")
    res = export(inn, path, kind="cinn", x_names=X_NAMES, y_names=Y_NAMES,
                 standardize={"x": (torch.zeros(4), SIGMA), "y": (y_mean, y_std)},
                 description="cINN for 4-DOF inverse kinematics (examples/ik_cinn.py, %d steps)"
                 % a.steps, source={"example": "ik_cinn.py"})
    print("exported %s (%d tensors, blocks: %s)" % (path, len(res.tensors),
                                                    ", ".join(b["type"] for b in res.manifest["blocks"])))
    name = os.path.basename(path).rsplit(".", 1)[0]
    daemon = None
    url = a.url
    if url is None:
        binary = find_innserve(a.innserve)
        if binary is None:
            print("innserve binary not found (build it with `make`, or pass --innserve / --url).\n"
                  "To serve the model: innserve --models %s" % os.path.dirname(path))
            return 0
        daemon, url = start_daemon(binary, os.path.dirname(path))
        print("serving %s at %s" % (os.path.dirname(path), url))
    else:
        print("using the daemon at %s: it must serve %s as model '%s' (copy it into its --models "
              "directory and send SIGHUP)" % (url, path, name))
    try:
        c = Client(url, timeout=60)
        if not c.wait_ready(30):
            raise RuntimeError("the daemon at %s is not ready" % url)
        ystar = [float(v) for v in a.target.split(",")]
        post = c.sample(name, y=[ystar], num_samples=a.samples, seed=1,
                        outputs=["samples", "summary"])
        xs = torch.as_tensor(post["samples"][0], dtype=torch.float64)
        err = ((forward_kinematics(xs) - torch.tensor(ystar, dtype=torch.float64)) ** 2).sum(1)
        print("posterior p(x | y* = %s): %d samples, seed %d" % (ystar, len(xs), post["seed"]))
        for i, n in enumerate(X_NAMES):
            print("  %-7s mean %+.3f  std %.3f" % (n, post["summary"]["mean"][0][i],
                                                   post["summary"]["std"][0][i]))
        print("re-simulation error mean ||f(x) - y*||^2 = %.4f (median %.4f; the training "
              "noise alone gives %.4f)" % (float(err.mean()), float(err.median()), 2 * NOISE ** 2))
        prior_err = ((forward_kinematics(torch.randn(a.samples, 4, dtype=torch.float64) * SIGMA)
                      - torch.tensor(ystar, dtype=torch.float64)) ** 2).sum(1).mean()
        print("(for comparison, prior samples give %.4f)" % float(prior_err))
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
        if a.out is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
