#!/usr/bin/env python3
"""Train ik_mlp: an MLP surrogate of the inverse-kinematics forward process y = f(x), for
preimage search (POST /v1/models/ik_mlp/preimage), and export it.

    /usr/bin/python3 models/train/train_ik_mlp.py [--out models/ik_mlp.safetensors]

Network: Linear(4, H) -> SiLU -> Linear(H, H) -> SiLU -> Linear(H, H) -> SiLU -> Linear(H, 2)
on x standardized by the prior, predicting standardized y.  Trained by mean squared error on
x drawn from a prior widened by WIDEN (1.5), so the surrogate stays accurate where a
preimage search wanders; deterministic from --seed on one thread.
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
import kinematics as K  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "models", "ik_mlp.safetensors"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--widen", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    H = a.hidden
    net = nn.Sequential(nn.Linear(4, H), nn.SiLU(), nn.Linear(H, H), nn.SiLU(),
                        nn.Linear(H, H), nn.SiLU(), nn.Linear(H, 2))

    n = 1_000_000
    x_all = K.prior(n, rng) * a.widen
    y_all = K.forward(x_all)
    y_pred = K.forward(K.prior(n, rng))              # standardize y by the prior predictive
    y_mean, y_std = y_pred.mean(0), y_pred.std(0)
    X = torch.tensor(x_all / K.SIGMA, dtype=torch.float32)
    Y = torch.tensor((y_all - y_mean) / y_std, dtype=torch.float32)

    print("ik_mlp: hidden %d, %d parameters" % (H, sum(q.numel() for q in net.parameters())))
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    for it in range(a.steps):
        idx = torch.randint(0, n, (a.batch,))
        loss = ((net(X[idx]) - Y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 2000 == 0 or it == a.steps - 1:
            print("step %5d  mse %.3e  (%.0f s)" % (it, loss.item(), time.time() - t0), flush=True)
    print("trained in %.0f s" % (time.time() - t0))

    from innserve.export import export
    net.eval()
    export(net, a.out, kind="mlp", dims={"x": 4, "y": 2}, x_names=K.X_NAMES, y_names=K.Y_NAMES,
           standardize={"x": (np.zeros(4), K.SIGMA), "y": (y_mean, y_std)},
           description="MLP surrogate y = f(x) of the 4-DOF inverse-kinematics forward process "
                       "(3 x %d SiLU), trained on a %.1fx widened prior" % (H, a.widen),
           source={"framework": "PyTorch %s" % torch.__version__,
                   "script": "models/train/train_ik_mlp.py", "seed": a.seed})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
