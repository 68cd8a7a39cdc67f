#!/usr/bin/env python3
"""Train ik_cinn: a conditional INN for the inverse-kinematics benchmark, and export it.

    /usr/bin/python3 models/train/train_ik_cinn.py [--out models/ik_cinn.safetensors]

Task: kinematics.py (Kruse et al. 2021, inverse kinematics).  Model:
FrEIA SequenceINN(4) of BLOCKS AllInOneBlocks (SOFTPLUS global affine, hard permutations,
clamp 2), each conditioned on the standardized end point y; subnets
Linear(2 + 2, H) -> ReLU -> Linear(H, 4).  x is standardized by the prior (mean 0, std
sigma), y by the prior predictive's mean and std.

Training: maximum likelihood of x given y, x from the prior, y = f(x) + u with u uniform in
a disk of radius EPS (0.02).  With that noise the target is exactly the posterior that
rejection sampling with tolerance EPS defines (ABC, inverse-kinematics.md §2.1), which is
what models/evaluate.py compares against; without it the posterior is a 2-D sheet in R^4
and the likelihood has no maximum.  Adam with a one-cycle schedule; deterministic from
--seed on one thread.  Uses FrEIA when importable, else freia_compat.py (same modules).
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import freia_compat  # noqa: E402
import kinematics as K  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "models", "ik_cinn.safetensors"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eps", type=float, default=0.02, help="radius of the y noise disk")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    Ff, Fm = freia_compat.load()

    def subnet(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, a.hidden), nn.ReLU(), nn.Linear(a.hidden, c_out))

    inn = Ff.SequenceINN(4)
    for _ in range(a.blocks):
        inn.append(Fm.AllInOneBlock, cond=0, cond_shape=(2,), subnet_constructor=subnet,
                   affine_clamping=2.0)

    n = 1_000_000
    x_all = K.prior(n, rng)
    y_all = K.forward(x_all)
    y_mean, y_std = y_all.mean(0), y_all.std(0)
    X = torch.tensor(x_all / K.SIGMA, dtype=torch.float32)
    Y = torch.tensor(y_all, dtype=torch.float32)
    ym, ys = torch.tensor(y_mean, dtype=torch.float32), torch.tensor(y_std, dtype=torch.float32)

    params = [q for q in inn.parameters() if q.requires_grad]
    print("ik_cinn: %d blocks, hidden %d, %d parameters" % (a.blocks, a.hidden,
                                                          sum(q.numel() for q in params)))
    opt = torch.optim.Adam(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    for it in range(a.steps):
        idx = torch.randint(0, n, (a.batch,))
        r = a.eps * torch.sqrt(torch.rand(a.batch))
        th = 2 * math.pi * torch.rand(a.batch)
        y = Y[idx] + torch.stack([r * torch.cos(th), r * torch.sin(th)], 1)
        z, log_det = inn(X[idx], c=[(y - ym) / ys])
        loss = (0.5 * (z ** 2).sum(1) - log_det).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        if it % 1000 == 0 or it == a.steps - 1:
            print("step %5d  loss %.4f  (%.0f s)" % (it, loss.item(), time.time() - t0), flush=True)
    print("trained in %.0f s" % (time.time() - t0))

    from innserve.export import export
    inn.eval()
    export(inn, a.out, kind="cinn", x_names=K.X_NAMES, y_names=K.Y_NAMES,
           standardize={"x": (np.zeros(4), K.SIGMA), "y": (y_mean, y_std)},
           description="cINN for 4-DOF inverse kinematics (Kruse et al.): %d AllInOneBlocks, "
                       "subnets %d hidden ReLU, trained on y + U(disk %.2g)"
                       % (a.blocks, a.hidden, a.eps),
           source={"framework": "PyTorch %s" % torch.__version__,
                   "modules": "FrEIA" if Ff is not freia_compat else "freia_compat (FrEIA HEAD math)",
                   "script": "models/train/train_ik_cinn.py", "seed": a.seed})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
