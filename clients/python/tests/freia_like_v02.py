"""Test-only look-alikes of the PyPI FrEIA 0.2 storage formats (freia-modules.md §9):
AllInOneBlock with s = a*tanh(x) and a one-hot float permutation matrix, ActNorm with
scale/bias, FixedLinearTransform with parameters and no b.  Everything else is as HEAD."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from freia_like import *  # noqa: F401,F403 - same module set, 0.2 versions below
from freia_like import AllInOneBlock as _AIO
from freia_like import InvertibleModule


class AllInOneBlock(_AIO):
    LEGACY = True

    def _make_hard_perm(self, C):
        idx = torch.randperm(C)
        w = torch.zeros(C, C)
        w[torch.arange(C), idx] = 1.0
        self.w_perm = nn.Parameter(w, requires_grad=False)
        self.w_perm_inv = nn.Parameter(w.t().contiguous(), requires_grad=False)
        self.soft = True          # applied as a linear map, as 0.2 does


class ActNorm(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, init_data=None):
        super().__init__(dims_in, dims_c)
        C = dims_in[0][0]
        self.scale = nn.Parameter(torch.zeros(1, C))
        self.bias = nn.Parameter(torch.zeros(1, C))
        self.init_on_next_batch = init_data is None
        if init_data is not None:
            self._initialize_with_data(init_data)

    def _initialize_with_data(self, data):
        self.scale.data = -torch.log(data.std(0, keepdim=True))
        self.bias.data = -data.mean(0, keepdim=True) * torch.exp(self.scale.data)
        self.init_on_next_batch = False

    def forward(self, x, rev=False, jac=True):
        x = x[0]
        if self.init_on_next_batch:
            self._initialize_with_data(x)
        j = self.scale.sum().expand(x.shape[0])
        if not rev:
            return [torch.exp(self.scale) * x + self.bias], j
        return [(x - self.bias) / torch.exp(self.scale)], -j


class FixedLinearTransform(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, M=None, b=None):
        super().__init__(dims_in, dims_c)
        self.M = nn.Parameter(M.t(), requires_grad=False)
        self.M_inv = nn.Parameter(M.t().inverse(), requires_grad=False)
        self.b = 0. if b is None else nn.Parameter(b.unsqueeze(0), requires_grad=False)
        self.logDetM = nn.Parameter(torch.slogdet(M)[1], requires_grad=False)

    def forward(self, x, rev=False, jac=True):
        j = self.logDetM.expand(x[0].shape[0])
        if not rev:
            return [x[0].mm(self.M) + self.b], j
        return [(x[0] - self.b).mm(self.M_inv)], -j
