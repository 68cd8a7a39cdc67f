#!/usr/bin/python3
"""Build the small model repository that docs/clients.md's curl and innctl examples use:

  ik            cinn  the inverse-kinematics cINN of ik_cinn.py (trained here)
  ik_surrogate  mlp   a surrogate y = f(x) of the same arm (for preimage search)
  ik_iresnet    flow  a 4-D i-ResNet flow (numeric inverse, contraction certificate)

    /usr/bin/python3 clients/python/examples/demo_models.py --out /tmp/demo [--steps 3000]
    innserve --models /tmp/demo
"""

import argparse
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import ik_cinn  # noqa: E402
from innserve.export import Residual, export  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    p = lambda n: os.path.join(a.out, n + ".safetensors")
    S = ik_cinn.SIGMA

    inn, y_mean, y_std = ik_cinn.train(a.steps, 0)
    export(inn, p("ik"), kind="cinn", x_names=ik_cinn.X_NAMES, y_names=ik_cinn.Y_NAMES,
           standardize={"x": (torch.zeros(4), S), "y": (y_mean, y_std)},
           description="cINN for 4-DOF inverse kinematics")

    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(4, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    for step in range(1500):
        x = torch.randn(512, 4) * S
        loss = ((mlp(x / S) - ik_cinn.forward_kinematics(x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print("surrogate mse %.2e" % float(loss))
    export(mlp, p("ik_surrogate"), kind="mlp", x_names=ik_cinn.X_NAMES, y_names=ik_cinn.Y_NAMES,
           standardize={"x": (torch.zeros(4), S)},
           description="MLP surrogate of the arm's forward kinematics")

    torch.manual_seed(2)
    blocks = []
    for _ in range(3):
        g = nn.Sequential(nn.Linear(4, 32), nn.ELU(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 4))
        with torch.no_grad():
            for lin in (g[0], g[2], g[4]):
                lin.weight.mul_(0.9 / torch.linalg.matrix_norm(lin.weight, 2))
        blocks.append(Residual(g))
    export(blocks, p("ik_iresnet"), kind="flow", x_names=ik_cinn.X_NAMES,
           description="i-ResNet flow (3 residual blocks, per-layer norm 0.9)")
    print("wrote", sorted(os.listdir(a.out)))


if __name__ == "__main__":
    main()
