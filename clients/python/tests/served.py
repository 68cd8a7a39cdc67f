"""A small model repository for the client and innctl tests, exported once per process:

  ik      cinn  x (h, a1, a2, a3) given y (px, py), standardized, AllInOneBlocks
  flow    flow  3-D GLOW flow
  inn     inn   Ardizzone layout [x(3), pad(1)] <-> [z(2), pad(0), y(2)]
  surr    mlp   surrogate y = f(x), 3 -> 2
  ires    flow  two i-ResNet blocks (numeric inverse, certificate)
"""

import atexit
import os

import util
import torch
import torch.nn as nn

from innserve.export import Residual, export

F = util.mimic("head")
_STATE = {}


def sn(cin, cout):
    return nn.Sequential(nn.Linear(cin, 24), nn.ReLU(), nn.Linear(24, cout))


def _perturb(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.is_floating_point() and p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def repository():
    """-> (models dir, {name: ExportResult}); built once, removed at exit."""
    if _STATE:
        return _STATE["dir"], _STATE["res"]
    tmp = util.TmpDir("innserve-served-")
    atexit.register(tmp.cleanup)
    torch.manual_seed(0)
    res = {}
    p = lambda n: os.path.join(tmp.path, n + ".safetensors")

    ik = F.SequenceINN(4)
    for _ in range(3):
        ik.append(F.AllInOneBlock, cond=0, cond_shape=(2,), subnet_constructor=sn)
    _perturb(ik, 1)
    res["ik"] = export(ik, p("ik"), kind="cinn", x_names=["h", "a1", "a2", "a3"],
                       y_names=["px", "py"], description="test cINN",
                       standardize={"x": ([0, 0, 0, 0], [0.25, 0.5, 0.5, 0.5]),
                                    "y": ([1.0, 0.0], [0.6, 0.8])})
    fl = F.SequenceINN(3)
    fl.append(F.GLOWCouplingBlock, subnet_constructor=sn)
    fl.append(F.PermuteRandom, seed=1)
    fl.append(F.GLOWCouplingBlock, subnet_constructor=sn)
    _perturb(fl, 2)
    res["flow"] = export(fl, p("flow"), description="test flow")
    inn = F.SequenceINN(4)
    inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
    inn.append(F.PermuteRandom, seed=2)
    inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
    _perturb(inn, 3)
    res["inn"] = export(inn, p("inn"), kind="inn",
                        dims={"x": 3, "y": 2, "z": 2, "pad_x": 1, "pad_y": 0},
                        x_names=["a", "b", "c"], y_names=["u", "v"])
    mlp = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
    res["surr"] = export(mlp, p("surr"), kind="mlp", x_names=["p", "q", "r"], y_names=["f", "g"])
    blocks = []
    for k in range(2):
        g = nn.Sequential(nn.Linear(3, 16), nn.ELU(), nn.Linear(16, 3))
        with torch.no_grad():
            for lin in (g[0], g[2]):
                lin.weight.mul_(0.8 / torch.linalg.matrix_norm(lin.weight, 2))
        blocks.append(Residual(g))
    res["ires"] = export(blocks, p("ires"), description="i-ResNet test flow")
    _STATE.update(dir=tmp.path, res=res)
    return tmp.path, res
