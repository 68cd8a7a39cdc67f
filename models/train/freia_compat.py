"""The few FrEIA (HEAD, vislearn/FrEIA 4212496) modules the demo models use, for machines
without FrEIA: SequenceINN, AllInOneBlock (SOFTPLUS global affine, hard permutation),
GLOWCouplingBlock (ATAN clamp) and PermuteRandom.

They follow FrEIA's math (its AllInOneBlock, coupling blocks, ActNorm and permutations), its class
and attribute names, state_dict keys and calling convention module([x], c=[...], rev, jac)
-> ((out,), log_det), so the training scripts run unchanged on the real FrEIA
(`import FrEIA.framework as Ff, FrEIA.modules as Fm`) and innserve.export reads both.
The training scripts use FrEIA when it is importable and these otherwise.
"""

import math

import numpy as np
import torch
import torch.nn as nn


class InvertibleModule(nn.Module):
    def __init__(self, dims_in, dims_c=None):
        super().__init__()
        self.dims_in = list(dims_in)
        self.dims_c = list(dims_c or [])

    def output_dims(self, input_dims):
        return input_dims


class AllInOneBlock(InvertibleModule):
    """FrEIA AllInOneBlock, flat data, hard permutation, SOFTPLUS global affine, HEAD clamp
    s = a * tanh(x / a)."""

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, affine_clamping=2.0,
                 global_affine_init=1.0):
        super().__init__(dims_in, dims_c)
        C = dims_in[0][0]
        self.input_rank = len(dims_in[0]) - 1
        self.conditional = len(dims_c) > 0
        self.condition_channels = sum(dc[0] for dc in dims_c)
        self.splits = [C - C // 2, C // 2]
        self.in_channels = C
        self.clamp = affine_clamping
        self.GIN = False
        self.reverse_pre_permute = False
        self.householder = 0
        self.softplus = nn.Softplus(beta=0.5)
        self.global_scale_activation = lambda a: 0.1 * self.softplus(a)
        g0 = 2.0 * math.log(math.exp(0.5 * 10.0 * global_affine_init) - 1)
        self.global_scale = nn.Parameter(torch.ones(1, C) * g0)
        self.global_offset = nn.Parameter(torch.zeros(1, C))
        perm = torch.randperm(C)
        self.w_perm = nn.Parameter(perm, requires_grad=False)
        self.w_perm_inv = nn.Parameter(torch.argsort(perm), requires_grad=False)
        self.subnet = subnet_constructor(self.splits[0] + self.condition_channels,
                                         2 * self.splits[1])

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        scale = self.global_scale_activation(self.global_scale)
        logs = torch.sum(torch.log(scale))
        if rev:
            x = (x[:, self.w_perm_inv] - self.global_offset) / scale
        x1, x2 = torch.split(x, self.splits, dim=1)
        a = 0.1 * self.subnet(torch.cat([x1, *c], 1) if self.conditional else x1)
        n2 = self.splits[1]
        s = self.clamp * torch.tanh(a[:, :n2] / self.clamp)
        t = a[:, n2:]
        if not rev:
            out = torch.cat([x1, x2 * torch.exp(s) + t], 1)
            out = (out * scale + self.global_offset)[:, self.w_perm]
            return (out,), s.sum(1) + logs
        out = torch.cat([x1, (x2 - t) * torch.exp(-s)], 1)
        return (out,), -(s.sum(1) + logs)


class GLOWCouplingBlock(InvertibleModule):
    """FrEIA GLOWCouplingBlock, flat data, clamp activation ATAN (0.636 * atan)."""

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.0, split_len=0.5):
        super().__init__(dims_in, dims_c)
        self.channels = dims_in[0][0]
        self.ndims = len(dims_in[0])
        if isinstance(split_len, float):
            split_len = round(self.channels * split_len)
        self.split_len1 = split_len
        self.split_len2 = self.channels - split_len
        self.clamp = clamp
        self.conditional = len(dims_c) > 0
        self.condition_length = sum(d[0] for d in dims_c)
        self.f_clamp = lambda u: 0.636 * torch.atan(u)
        self.subnet1 = subnet_constructor(self.split_len1 + self.condition_length,
                                          2 * self.split_len2)
        self.subnet2 = subnet_constructor(self.split_len2 + self.condition_length,
                                          2 * self.split_len1)

    def _affine(self, x, a, k, rev):
        s = self.clamp * self.f_clamp(a[:, :k])
        t = a[:, k:]
        if rev:
            return (x - t) * torch.exp(-s), -s.sum(1)
        return x * torch.exp(s) + t, s.sum(1)

    def forward(self, x, c=[], rev=False, jac=True):
        x1, x2 = torch.split(x[0], [self.split_len1, self.split_len2], dim=1)
        cat = (lambda u: torch.cat([u, *c], 1)) if self.conditional else (lambda u: u)
        l1, l2 = self.split_len1, self.split_len2
        if not rev:
            y1, j1 = self._affine(x1, self.subnet2(cat(x2)), l1, False)
            y2, j2 = self._affine(x2, self.subnet1(cat(y1)), l2, False)
        else:
            y2, j2 = self._affine(x2, self.subnet1(cat(x1)), l2, True)
            y1, j1 = self._affine(x1, self.subnet2(cat(y2)), l1, True)
        return (torch.cat([y1, y2], 1),), j1 + j2


class PermuteRandom(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, seed=None):
        super().__init__(dims_in, dims_c)
        self.in_channels = dims_in[0][0]
        p = np.random.RandomState(seed).permutation(self.in_channels)
        self.perm = nn.Parameter(torch.LongTensor(p), requires_grad=False)
        self.perm_inv = nn.Parameter(torch.LongTensor(np.argsort(p)), requires_grad=False)

    def forward(self, x, rev=False, jac=True):
        return (x[0][:, self.perm_inv if rev else self.perm],), 0.0


class SequenceINN(InvertibleModule):
    def __init__(self, *dims):
        super().__init__([dims])
        self.shapes = [tuple(dims)]
        self.conditions = []
        self.module_list = nn.ModuleList()

    def append(self, module_class, cond=None, cond_shape=None, **kwargs):
        dims_in = [self.shapes[-1]]
        self.conditions.append(cond)
        if cond is not None:
            kwargs["dims_c"] = [cond_shape]
        module = module_class(dims_in, **kwargs)
        self.module_list.append(module)
        self.shapes.append(module.output_dims(dims_in)[0])

    def forward(self, x_or_z, c=None, rev=False, jac=True):
        order = range(len(self.module_list) - 1, -1, -1) if rev else range(len(self.module_list))
        log_det = torch.zeros(x_or_z.shape[0], dtype=x_or_z.dtype, device=x_or_z.device)
        for i in order:
            m = self.module_list[i]
            if self.conditions[i] is None:
                out, j = m([x_or_z], rev=rev, jac=jac)
            else:
                out, j = m([x_or_z], c=[c[self.conditions[i]]], rev=rev, jac=jac)
            x_or_z = out[0]
            log_det = log_det + j
        return x_or_z, log_det


def load():
    """(Ff, Fm): FrEIA's framework and modules when importable, else this file's."""
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm
        return Ff, Fm
    except ImportError:
        import sys
        me = sys.modules[__name__]
        return me, me
