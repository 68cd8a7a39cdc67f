#!/usr/bin/env python3
"""Train ik_inn: an Ardizzone et al. (2019) INN for the inverse-kinematics benchmark, and
export it.

    /usr/bin/python3 models/train/train_ik_inn.py [--out models/ik_inn.safetensors]

Layout (freia-modules.md §10): [x] <-> [z, y] with x in R^4, z in R^2, y in R^2, so no zero
padding is needed.  Model: FrEIA SequenceINN(4) of BLOCKS x [GLOWCouplingBlock (clamp 2,
ATAN), PermuteRandom(seed=k)], subnets Linear(2, H) -> ReLU -> Linear(H, 4).  x is
standardized by the prior, y by the prior predictive.

Training: the maximum-likelihood variant of Ardizzone et al. (§10.3),
  0.5 |z|^2 + 0.5 |y_hat - y|^2 / SIGMA_Y^2 - log|det J|   (y standardized),
which fits y_hat = f(x) and makes z standard normal and independent of y at the same time;
posterior samples are x = INN^-1([z ~ N(0, I), y*]).  SIGMA_Y is written into the manifest
(inn.sigma_y), so the served log_prob is the density this loss trained.  Adam with a
one-cycle schedule; deterministic from --seed on one thread.  Uses FrEIA when importable,
else freia_compat.py.
"""

import argparse
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
    p.add_argument("--out", default=os.path.join(ROOT, "models", "ik_inn.safetensors"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--sigma-y", type=float, default=0.05, help="in standardized y units")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    Ff, Fm = freia_compat.load()

    def subnet(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, a.hidden), nn.ReLU(), nn.Linear(a.hidden, c_out))

    inn = Ff.SequenceINN(4)
    for k in range(a.blocks):
        inn.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=2.0)
        inn.append(Fm.PermuteRandom, seed=k)

    n = 1_000_000
    x_all = K.prior(n, rng)
    y_all = K.forward(x_all)
    y_mean, y_std = y_all.mean(0), y_all.std(0)
    X = torch.tensor(x_all / K.SIGMA, dtype=torch.float32)
    Y = torch.tensor((y_all - y_mean) / y_std, dtype=torch.float32)

    params = [q for q in inn.parameters() if q.requires_grad]
    print("ik_inn: %d GLOW blocks, hidden %d, %d parameters" % (a.blocks, a.hidden,
                                                             sum(q.numel() for q in params)))
    opt = torch.optim.Adam(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    for it in range(a.steps):
        idx = torch.randint(0, n, (a.batch,))
        out, log_det = inn(X[idx])
        z, y_hat = out[:, :2], out[:, 2:]
        fit = ((y_hat - Y[idx]) ** 2).sum(1)
        loss = (0.5 * (z ** 2).sum(1) + 0.5 * fit / a.sigma_y ** 2 - log_det).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        if it % 1000 == 0 or it == a.steps - 1:
            print("step %5d  loss %.4f  y mse %.2e  (%.0f s)"
                  % (it, loss.item(), fit.mean().item() / 2, time.time() - t0), flush=True)
    print("trained in %.0f s" % (time.time() - t0))

    from innserve.export import export
    inn.eval()
    export(inn, a.out, kind="inn", dims={"x": 4, "y": 2, "z": 2, "pad_x": 0, "pad_y": 0},
           x_names=K.X_NAMES, y_names=K.Y_NAMES,
           standardize={"x": (np.zeros(4), K.SIGMA), "y": (y_mean, y_std)},
           inn_sigma={"sigma_y": a.sigma_y, "sigma_pad": 0.05},
           description="Ardizzone INN [x] <-> [z, y] for 4-DOF inverse kinematics (Kruse et "
                       "al.): %d GLOW coupling blocks + random permutations, subnets %d hidden "
                       "ReLU, maximum-likelihood loss, sigma_y %.2g" % (a.blocks, a.hidden, a.sigma_y),
           source={"framework": "PyTorch %s" % torch.__version__,
                   "modules": "FrEIA" if Ff is not freia_compat else "freia_compat (FrEIA HEAD math)",
                   "script": "models/train/train_ik_inn.py", "seed": a.seed})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
