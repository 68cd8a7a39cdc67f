"""Test-only look-alikes of the official i-ResNet and Residual Flows dense layers (class
names, attributes, buffers and eval-mode math as iresnet.md §3 describes them), so that the
exporter's spectral-norm handling is tested without those repositories."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpectralNorm(object):
    """i-ResNet spectral_norm_fc: soft normalisation W_orig / max(1, u^T W_orig v / coeff)."""

    def __init__(self, coeff, name='weight', n_power_iterations=1, dim=0, eps=1e-12):
        self.coeff = coeff
        self.name = name
        self.n_power_iterations = n_power_iterations
        self.dim = dim
        self.eps = eps

    def compute_weight(self, module, do_power_iteration):
        w = getattr(module, self.name + '_orig')
        u = getattr(module, self.name + '_u')
        v = getattr(module, self.name + '_v')
        if do_power_iteration:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(w.t() @ u, dim=0, eps=self.eps))
                    u.copy_(F.normalize(w @ v, dim=0, eps=self.eps))
        sigma = torch.dot(u, w @ v)
        factor = torch.max(torch.ones(1, dtype=w.dtype), sigma / self.coeff)
        getattr(module, self.name + '_sigma').copy_(sigma.detach())
        return w / factor

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, module.training))

    @staticmethod
    def apply(module, coeff, name='weight', n_power_iterations=1):
        fn = SpectralNorm(coeff, name, n_power_iterations)
        w = module._parameters[name]
        h, wd = w.shape
        u = F.normalize(torch.randn(h), dim=0)
        v = F.normalize(torch.randn(wd), dim=0)
        del module._parameters[name]
        module.register_parameter(name + "_orig", w)
        setattr(module, name, w.data)
        module.register_buffer(name + "_u", u)
        module.register_buffer(name + "_v", v)
        module.register_buffer(name + "_sigma", torch.ones(1))
        module.register_forward_pre_hook(fn)
        return fn


def spectral_norm_fc(module, coeff, name='weight', n_power_iterations=1):
    SpectralNorm.apply(module, coeff, name, n_power_iterations)
    return module


class InducedNormLinear(nn.Module):
    """Residual Flows (2 -> 2 norms): W / max(1, u^T W v / coeff) with stored u, v."""

    def __init__(self, in_features, out_features, bias=True, coeff=0.97, domain=2, codomain=2):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.coeff, self.domain, self.codomain = coeff, domain, codomain
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(out_features)) if bias else None
        self.register_buffer('scale', torch.tensor(0.))
        self.register_buffer('u', F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer('v', F.normalize(torch.randn(in_features), dim=0))
        self.compute_weight(True, 50)

    def compute_weight(self, update=True, n_iterations=5):
        u, v, w = self.u, self.v, self.weight
        if update:
            with torch.no_grad():
                for _ in range(n_iterations):
                    v.copy_(F.normalize(w.t() @ u, dim=0))
                    u.copy_(F.normalize(w @ v, dim=0))
        sigma = torch.dot(u, w @ v)
        with torch.no_grad():
            self.scale.copy_(sigma)
        return w / torch.max(torch.ones(1, dtype=w.dtype), sigma / self.coeff)

    def forward(self, x):
        return F.linear(x, self.compute_weight(update=self.training), self.bias)


class Swish(nn.Module):
    """Residual Flows' LipSwish: x * sigmoid(x * softplus(beta)) / 1.1."""

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor([0.5]))

    def forward(self, x):
        return x * torch.sigmoid(x * F.softplus(self.beta)) / 1.1


class iResBlock(nn.Module):  # noqa: N801 - the original's name
    def __init__(self, nnet):
        super().__init__()
        self.nnet = nnet
        self.geom_p = nn.Parameter(torch.tensor(0.))
        self.lamb = nn.Parameter(torch.tensor(2.))

    def forward(self, x, logpx=None):
        return x + self.nnet(x)


class ActNorm1d(nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.weight = nn.Parameter(0.1 * torch.randn(num_features))
        self.bias = nn.Parameter(0.1 * torch.randn(num_features))
        self.register_buffer('initialized', torch.tensor(1))

    def forward(self, x, logpx=None):
        return (x + self.bias) * torch.exp(self.weight)


class SequentialFlow(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.chain = nn.ModuleList(layers)

    def forward(self, x, logpx=None):
        for m in self.chain:
            x = m(x)
        return x
