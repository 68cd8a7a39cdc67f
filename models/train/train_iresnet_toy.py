#!/usr/bin/env python3
"""Train iresnet_toy: an i-ResNet normalizing flow (Behrmann et al. 2019) on a 2-D toy
density with a closed form, and export it with innserve.export.

    /usr/bin/python3 models/train/train_iresnet_toy.py [--out models/iresnet_toy.safetensors]

Density ("banana"):  x1 ~ N(0, 1),  x2 | x1 ~ N(0.5 x1^2 - 1, 0.4^2)   (toy_density.py).

Model: standardization, then BLOCKS residual blocks x + g(x) with
g = Linear(2, H) -> ELU -> Linear(H, H) -> ELU -> Linear(H, 2).  Every weight is softly
spectrally normalised, W / max(1, sigma / c), sigma by power iteration (one step per
training step, converged before export), c = --coeff, so Lip(g) <= c^3 < 1: each block is a bijection, its inverse the fixed point of
x = y - g(x).  Trained by exact maximum likelihood: log p(x) = log N(z) + sum log det(I + J_g),
the 2x2 Jacobians by forward-mode propagation of two tangents (no stochastic estimator).

The exported file holds the effective (normalised) weights as plain Linear layers; the
engine recomputes the spectral norms at load and certifies L < 1 (GET .../certificate),
inverts numerically and computes exact log-dets.  Deterministic from --seed on one thread.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import toy_density  # noqa: E402


class SNLinear(nn.Module):
    """Linear with soft spectral normalisation W / max(1, sigma / c), sigma = u^T W v by
    power iteration on persistent vectors (one step per training step, as the official
    i-ResNet code; converged before export)."""

    def __init__(self, i, o, coeff):
        super().__init__()
        self.lin = nn.Linear(i, o)
        self.coeff = coeff
        self.register_buffer("u", F.normalize(torch.randn(o), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(i), dim=0))

    @torch.no_grad()
    def power_iteration(self, n=1):
        W = self.lin.weight
        for _ in range(n):
            self.v.copy_(F.normalize(W.t() @ self.u, dim=0))
            self.u.copy_(F.normalize(W @ self.v, dim=0))

    def weight(self):
        W = self.lin.weight
        s = torch.dot(self.u, W @ self.v)
        return W / torch.clamp(s / self.coeff, min=1.0)

    def forward(self, x):
        return F.linear(x, self.weight(), self.lin.bias)


class ResBlock(nn.Module):
    def __init__(self, d, h, coeff):
        super().__init__()
        self.l1, self.l2, self.l3 = SNLinear(d, h, coeff), SNLinear(h, h, coeff), SNLinear(h, d, coeff)

    def forward(self, x):
        """-> (x + g(x), log det(I + J_g(x))) for 2-D x, exactly."""
        W1, W2, W3 = self.l1.weight(), self.l2.weight(), self.l3.weight()
        u1 = F.linear(x, W1, self.l1.lin.bias)
        a1 = F.elu(u1)
        d1 = torch.where(u1 > 0, torch.ones_like(u1), torch.exp(torch.clamp(u1, max=0.0)))
        u2 = F.linear(a1, W2, self.l2.lin.bias)
        a2 = F.elu(u2)
        d2 = torch.where(u2 > 0, torch.ones_like(u2), torch.exp(torch.clamp(u2, max=0.0)))
        g = F.linear(a2, W3, self.l3.lin.bias)
        # J_g = W3 diag(d2) W2 diag(d1) W1, per row: tangents of the two input directions
        T = d1.unsqueeze(2) * W1.unsqueeze(0)            # (B, H, 2)
        T = d2.unsqueeze(2) * torch.einsum("ij,bjk->bik", W2, T)
        J = torch.einsum("ij,bjk->bik", W3, T)           # (B, 2, 2)
        det = (1 + J[:, 0, 0]) * (1 + J[:, 1, 1]) - J[:, 0, 1] * J[:, 1, 0]
        return x + g, torch.log(det)

    def plain(self):
        """The block with its effective weights baked into plain Linear layers."""
        layers = []
        for sn in (self.l1, self.l2, self.l3):
            lin = nn.Linear(sn.lin.in_features, sn.lin.out_features)
            with torch.no_grad():
                lin.weight.copy_(sn.weight())
                lin.bias.copy_(sn.lin.bias)
            layers += [lin, nn.ELU()]
        return nn.Sequential(*layers[:-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "models", "iresnet_toy.safetensors"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--coeff", type=float, default=0.97)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    data = toy_density.sample(200_000, rng)
    mean, std = data.mean(0), data.std(0)
    X = torch.tensor((data - mean) / std, dtype=torch.float32)
    blocks = nn.ModuleList([ResBlock(2, a.hidden, a.coeff) for _ in range(a.blocks)])
    sns = [m for m in blocks.modules() if isinstance(m, SNLinear)]
    for m in sns:
        m.power_iteration(50)
    opt = torch.optim.Adam(blocks.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    log_std = float(np.log(std).sum())
    t0 = time.time()
    for it in range(a.steps):
        x = X[torch.randint(0, len(X), (a.batch,))]
        for m in sns:
            m.power_iteration()
        ld = torch.zeros(a.batch)
        for b in blocks:
            x, l = b(x)
            ld = ld + l
        nll = (0.5 * (x ** 2).sum(1) + math.log(2 * math.pi) - ld).mean() + log_std
        opt.zero_grad()
        nll.backward()
        opt.step()
        sched.step()
        if it % 1000 == 0 or it == a.steps - 1:
            print("step %5d  nll %.4f  (%.0f s)" % (it, nll.item(), time.time() - t0), flush=True)
    print("trained in %.0f s; true entropy %.4f nats" % (time.time() - t0, toy_density.ENTROPY))

    for m in sns:                       # converge sigma before baking the weights in
        m.power_iteration(200)
    from innserve.export import Residual, export
    model = [Residual(b.plain()) for b in blocks]
    res = export(model, a.out, kind="flow", dims={"x": 2}, x_names=["x1", "x2"],
                 standardize={"x": (mean, std)},
                 description="i-ResNet flow (%d residual blocks, ELU, hidden %d, soft spectral "
                             "norm c=%.2f per layer) on the 2-D banana density "
                             "x1 ~ N(0,1), x2 | x1 ~ N(0.5 x1^2 - 1, 0.4^2)"
                             % (a.blocks, a.hidden, a.coeff),
                 source={"framework": "PyTorch %s" % torch.__version__,
                         "script": "models/train/train_iresnet_toy.py", "seed": a.seed})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))
    return res


if __name__ == "__main__":
    main()
