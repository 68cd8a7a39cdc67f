"""Test-only look-alikes of FrEIA (HEAD) modules, written from the math in
FrEIA's source and docs/blocks.md, so that the exporter tests run without FrEIA.

They copy what the exporter looks at: class names, constructor arguments and attributes,
state_dict layout, and the calling convention module([x], c=[...], rev=..., jac=...) ->
((out,), log_det).  They are NOT FrEIA; with INNSERVE_FREIA_PATH set (or FrEIA installed)
the same tests also run against the real modules (see freia_impl() in util.py).
Only what the tests need is implemented (flat 1-D data).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class InvertibleModule(nn.Module):
    def __init__(self, dims_in, dims_c=None):
        super().__init__()
        self.dims_in = list(dims_in)
        self.dims_c = list(dims_c or [])

    def output_dims(self, input_dims):
        return input_dims


def _jac(v, n, ref):
    if isinstance(v, torch.Tensor):
        return v.reshape(-1).expand(n) if v.numel() == 1 else v
    return torch.full((n,), float(v), dtype=ref.dtype)


# ---------------------------------------------------------------------------------------
# AllInOneBlock (HEAD: s = a tanh(x / a); int64 hard permutation)
# ---------------------------------------------------------------------------------------

class AllInOneBlock(InvertibleModule):
    LEGACY = False

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, affine_clamping=2.,
                 gin_block=False, global_affine_init=1., global_affine_type='SOFTPLUS',
                 permute_soft=False, learned_householder_permutation=0,
                 reverse_permutation=False):
        super().__init__(dims_in, dims_c)
        C = dims_in[0][0]
        self.input_rank = len(dims_in[0]) - 1
        self.sum_dims = tuple(range(1, 2 + self.input_rank))
        self.conditional = len(dims_c) > 0
        self.condition_channels = sum(dc[0] for dc in dims_c)
        self.splits = [C - C // 2, C // 2]
        self.in_channels = C
        self.clamp = affine_clamping
        self.GIN = gin_block
        self.reverse_pre_permute = reverse_permutation
        self.householder = learned_householder_permutation
        if global_affine_type == 'SIGMOID':
            g0 = 2. - np.log(10. / global_affine_init - 1.)
            self.global_scale_activation = lambda a: 10 * torch.sigmoid(a - 2.)
        elif global_affine_type == 'SOFTPLUS':
            g0 = 2. * np.log(np.exp(0.5 * 10. * global_affine_init) - 1)
            self.softplus = nn.Softplus(beta=0.5)
            self.global_scale_activation = lambda a: 0.1 * self.softplus(a)
        elif global_affine_type == 'EXP':
            g0 = np.log(global_affine_init)
            self.global_scale_activation = torch.exp
        else:
            raise ValueError(global_affine_type)
        self.global_scale = nn.Parameter(torch.ones(1, C) * float(g0))
        self.global_offset = nn.Parameter(torch.zeros(1, C))
        self.soft = bool(permute_soft or learned_householder_permutation)
        if self.soft:
            q, r = torch.linalg.qr(torch.randn(C, C, dtype=torch.float64))
            w = (q * torch.sign(torch.diagonal(r))).numpy()
        if self.householder:
            self.vk_householder = nn.Parameter(0.2 * torch.randn(self.householder, C))
            self.w_perm = None
            self.w_perm_inv = None
            self.w_0 = nn.Parameter(torch.from_numpy(w).float(), requires_grad=False)
        elif permute_soft:
            self.w_perm = nn.Parameter(torch.from_numpy(w).float(), requires_grad=False)
            self.w_perm_inv = nn.Parameter(torch.from_numpy(w.T).float(), requires_grad=False)
        else:
            self._make_hard_perm(C)
        self.subnet = subnet_constructor(self.splits[0] + self.condition_channels, 2 * self.splits[1])

    def _make_hard_perm(self, C):
        idx = torch.randperm(C)
        self.w_perm = nn.Parameter(idx, requires_grad=False)
        self.w_perm_inv = nn.Parameter(torch.argsort(idx), requires_grad=False)

    def _P(self, x, w):
        if self.soft:
            return F.linear(x, w)
        return x[:, w]

    def _householder_w(self):
        w = self.w_0
        eye = torch.eye(self.in_channels, dtype=w.dtype)
        for vk in self.vk_householder:
            w = w @ (eye - 2 * torch.outer(vk, vk) / torch.dot(vk, vk))
        return w

    def _s(self, a):
        if self.LEGACY:
            return self.clamp * torch.tanh(a)
        return self.clamp * torch.tanh(a / self.clamp)

    def forward(self, x, c=[], rev=False, jac=True):
        x = x[0]
        w_perm, w_perm_inv = self.w_perm, self.w_perm_inv
        if self.householder:
            w_perm = self._householder_w()
            w_perm_inv = w_perm.t()
        if self.GIN:
            scale, logs = 1., 0.
        else:
            scale = self.global_scale_activation(self.global_scale)
            logs = torch.sum(torch.log(scale))
        if rev:
            x = (self._P(x, w_perm_inv) - self.global_offset) / scale
        elif self.reverse_pre_permute:
            x = self._P(x, w_perm_inv)
        x1, x2 = torch.split(x, self.splits, dim=1)
        x1c = torch.cat([x1, *c], 1) if self.conditional else x1
        a = self.subnet(x1c) * 0.1
        n2 = self.splits[1]
        s = self._s(a[:, :n2])
        if self.GIN:
            s = s - s.mean(1, keepdim=True)
        if not rev:
            x2 = x2 * torch.exp(s) + a[:, n2:]
            j = s.sum(1)
        else:
            x2 = (x2 - a[:, n2:]) * torch.exp(-s)
            j = -s.sum(1)
        out = torch.cat([x1, x2], 1)
        if not rev:
            out = self._P(out * scale + self.global_offset, w_perm)
        elif self.reverse_pre_permute:
            out = self._P(out, w_perm)
        return (out,), j + (-1) ** rev * logs


# ---------------------------------------------------------------------------------------
# coupling family
# ---------------------------------------------------------------------------------------

class _BaseCouplingBlock(InvertibleModule):
    def __init__(self, dims_in, dims_c=[], clamp=2., clamp_activation="ATAN", split_len=0.5):
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
        if isinstance(clamp_activation, str):
            self.f_clamp = {"ATAN": lambda u: 0.636 * torch.atan(u), "TANH": torch.tanh,
                            "SIGMOID": lambda u: 2. * (torch.sigmoid(u) - 0.5)}[clamp_activation]
        else:
            self.f_clamp = clamp_activation

    def forward(self, x, c=[], rev=False, jac=True):
        x1, x2 = torch.split(x[0], [self.split_len1, self.split_len2], dim=1)
        cat = lambda u: torch.cat([u, *c], 1) if self.conditional else u
        if not rev:
            y1, j1 = self._coupling1(x1, cat(x2))
            y2, j2 = self._coupling2(x2, cat(y1))
        else:
            y2, j2 = self._coupling2(x2, cat(x1), rev=True)
            y1, j1 = self._coupling1(x1, cat(y2), rev=True)
        return (torch.cat((y1, y2), 1),), j1 + j2

    def _affine(self, xh, s, t, rev, vp=False):
        j = 0. if vp else s.sum(1)
        if rev:
            return (xh - t) * torch.exp(-s), (-j if not vp else 0.)
        return xh * torch.exp(s) + t, j


class NICECouplingBlock(_BaseCouplingBlock):
    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, split_len=0.5):
        super().__init__(dims_in, dims_c, clamp=0., clamp_activation=(lambda u: u), split_len=split_len)
        self.F = subnet_constructor(self.split_len2 + self.condition_length, self.split_len1)
        self.G = subnet_constructor(self.split_len1 + self.condition_length, self.split_len2)

    def _coupling1(self, x1, u2, rev=False):
        return (x1 - self.F(u2) if rev else x1 + self.F(u2)), 0.

    def _coupling2(self, x2, u1, rev=False):
        return (x2 - self.G(u1) if rev else x2 + self.G(u1)), 0.


class RNVPCouplingBlock(_BaseCouplingBlock):
    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.,
                 clamp_activation="ATAN", split_len=0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        l1, l2, cl = self.split_len1, self.split_len2, self.condition_length
        self.subnet_s1 = subnet_constructor(l1 + cl, l2)
        self.subnet_t1 = subnet_constructor(l1 + cl, l2)
        self.subnet_s2 = subnet_constructor(l2 + cl, l1)
        self.subnet_t2 = subnet_constructor(l2 + cl, l1)

    def _coupling1(self, x1, u2, rev=False):
        s = self.clamp * self.f_clamp(self.subnet_s2(u2))
        return self._affine(x1, s, self.subnet_t2(u2), rev)

    def _coupling2(self, x2, u1, rev=False):
        s = self.clamp * self.f_clamp(self.subnet_s1(u1))
        return self._affine(x2, s, self.subnet_t1(u1), rev)


class GLOWCouplingBlock(_BaseCouplingBlock):
    VP = False

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.,
                 clamp_activation="ATAN", split_len=0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        self.subnet1 = subnet_constructor(self.split_len1 + self.condition_length, self.split_len2 * 2)
        self.subnet2 = subnet_constructor(self.split_len2 + self.condition_length, self.split_len1 * 2)

    def _st(self, a, k):
        s = self.clamp * self.f_clamp(a[:, :k])
        if self.VP:
            s = s - s.mean(1, keepdim=True)
        return s, a[:, k:]

    def _coupling1(self, x1, u2, rev=False):
        s, t = self._st(self.subnet2(u2), self.split_len1)
        return self._affine(x1, s, t, rev, self.VP)

    def _coupling2(self, x2, u1, rev=False):
        s, t = self._st(self.subnet1(u1), self.split_len2)
        return self._affine(x2, s, t, rev, self.VP)


class GINCouplingBlock(GLOWCouplingBlock):
    VP = True


class AffineCouplingOneSided(_BaseCouplingBlock):
    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.,
                 clamp_activation="ATAN", split_len=0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        self.subnet = subnet_constructor(self.split_len1 + self.condition_length, 2 * self.split_len2)

    def forward(self, x, c=[], rev=False, jac=True):
        x1, x2 = torch.split(x[0], [self.split_len1, self.split_len2], dim=1)
        a = self.subnet(torch.cat([x1, *c], 1) if self.conditional else x1)
        s = self.clamp * self.f_clamp(a[:, :self.split_len2])
        y2, j = self._affine(x2, s, a[:, self.split_len2:], rev)
        return (torch.cat((x1, y2), 1),), j


class ConditionalAffineTransform(_BaseCouplingBlock):
    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.,
                 clamp_activation="ATAN", split_len=0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        if not self.conditional:
            raise ValueError("ConditionalAffineTransform needs a condition")
        self.subnet = subnet_constructor(self.condition_length, 2 * self.channels)

    def forward(self, x, c=[], rev=False, jac=True):
        a = self.subnet(torch.cat(c, 1))
        s = self.clamp * self.f_clamp(a[:, :self.channels])
        y, j = self._affine(x[0], s, a[:, self.channels:], rev)
        return (y,), j


# ---------------------------------------------------------------------------------------
# rational-quadratic spline coupling
# ---------------------------------------------------------------------------------------

class BinnedSplineBase(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, bins=10, parameter_counts=None,
                 min_bin_sizes=(0.1, 0.1), default_domain=(-3.0, 3.0, -3.0, 3.0),
                 identity_tails=False, domain_clamping=None):
        super().__init__(dims_in, dims_c)
        self.register_buffer("bins", torch.tensor(bins, dtype=torch.int32))
        self.register_buffer("min_bin_sizes", torch.as_tensor(min_bin_sizes, dtype=torch.float32))
        self.register_buffer("default_domain", torch.as_tensor(default_domain, dtype=torch.float32))
        self.register_buffer("identity_tails", torch.tensor(identity_tails, dtype=torch.bool))
        self.register_buffer("default_width", torch.as_tensor(default_domain[1] - default_domain[0],
                                                              dtype=torch.float32))
        self.domain_clamping = domain_clamping
        counts = {"widths": bins, "heights": bins}
        if identity_tails:
            counts["total_width"] = 1
        else:
            counts["bottom"] = 1
            counts["left"] = 1
        counts.update(parameter_counts or {})
        self.parameter_counts = counts


class RationalQuadraticSpline(_BaseCouplingBlock):
    """Forward/inverse via the same knot construction FrEIA uses (freia-modules.md §4)."""

    def __init__(self, dims_in, dims_c=None, subnet_constructor=None, split_len=0.5, bins=10,
                 **kwargs):
        dims_c = dims_c or []
        super().__init__(dims_in, dims_c, clamp=0.0, clamp_activation=lambda u: u, split_len=split_len)
        self.spline_base = BinnedSplineBase(dims_in, dims_c, bins=bins,
                                            parameter_counts={"deltas": bins - 1}, **kwargs)
        P = sum(self.spline_base.parameter_counts.values())
        self.subnet1 = subnet_constructor(self.split_len2 + self.condition_length, self.split_len1 * P)
        self.subnet2 = subnet_constructor(self.split_len1 + self.condition_length, self.split_len2 * P)

    def _spline(self, x, raw, rev):
        sb = self.spline_base
        K = int(sb.bins)
        n, l = x.shape
        identity = bool(sb.identity_tails)
        dom = sb.default_domain.to(x.dtype)
        mins = sb.min_bin_sizes.to(x.dtype)
        D = sb.domain_clamping
        raw = raw.reshape(n, l, -1)
        rw, rh = raw[..., :K], raw[..., K:2 * K]
        if identity:
            tw = (dom[1] - dom[0]) * F.softplus(raw[..., 2 * K:2 * K + 1] + math.log(math.e - 1))
            if D is not None:
                tw = D * torch.tanh(tw / D)
            left = bottom = -tw / 2
            widths, heights = tw * torch.softmax(rw, -1), tw * torch.softmax(rh, -1)
            rd = raw[..., 2 * K + 1:]
        else:
            bottom = raw[..., 2 * K:2 * K + 1] + dom[2]
            left = raw[..., 2 * K + 1:2 * K + 2] + dom[0]
            rd = raw[..., 2 * K + 2:]
            xs = torch.log(torch.exp((dom[1] - dom[0]) / K - mins[0]) - 1)
            ys = torch.log(torch.exp((dom[3] - dom[2]) / K - mins[1]) - 1)
            widths = mins[0] + F.softplus(rw + xs)
            heights = mins[1] + F.softplus(rh + ys)
            if D is not None:
                Wt, Ht = widths.sum(-1, keepdim=True), heights.sum(-1, keepdim=True)
                rW, rH = D * torch.tanh(Wt / D) / Wt, D * torch.tanh(Ht / D) / Ht
                widths, left, heights, bottom = widths * rW, left * rW, heights * rH, bottom * rH
        scale = heights.sum(-1, keepdim=True) / widths.sum(-1, keepdim=True)
        deriv = torch.cat([scale, F.softplus(rd + math.log(math.e - 1)), scale], -1)
        kx = torch.cat([left, left + torch.cumsum(widths, -1)], -1)
        ky = torch.cat([bottom, bottom + torch.cumsum(heights, -1)], -1)
        shift = (bottom - scale * left)[..., 0]
        scale = scale[..., 0]
        knots = ky if rev else kx
        inside = (x > knots[..., 0]) & (x <= knots[..., K])
        v = torch.where(inside, x, 0.5 * (knots[..., 0] + knots[..., 1]))
        up = torch.searchsorted(knots.contiguous(), v.unsqueeze(-1).contiguous()).clamp(1, K)
        lo = up - 1
        g = lambda t, i: torch.gather(t, -1, i).squeeze(-1)
        xk, xk1, yk, yk1, dk, dk1 = g(kx, lo), g(kx, up), g(ky, lo), g(ky, up), g(deriv, lo), g(deriv, up)
        dx, dy = xk1 - xk, yk1 - yk
        sk = dy / dx
        e = dk1 + dk - 2 * sk
        if not rev:
            xi = (v - xk) / dx
            vin = yk + dy * (sk * xi ** 2 + dk * xi * (1 - xi)) / (sk + e * xi * (1 - xi))
        else:
            dl = v - yk
            A, B, Q = dy * (sk - dk) + dl * e, dy * dk - dl * e, -sk * dl
            xi = 2 * Q / (-B - torch.sqrt((B * B - 4 * A * Q).clamp(min=0)))
            vin = xk + xi * dx
        ldi = torch.log(sk ** 2 * (dk1 * xi ** 2 + 2 * sk * xi * (1 - xi) + dk * (1 - xi) ** 2)) \
            - 2 * torch.log(sk + e * xi * (1 - xi))
        ld = torch.where(inside, ldi, torch.log(scale)).sum(1)
        if not rev:
            return torch.where(inside, vin, scale * x + shift), ld
        return torch.where(inside, vin, (x - shift) / scale), -ld

    def _coupling1(self, x1, u2, rev=False):
        return self._spline(x1, self.subnet1(u2), rev)

    def _coupling2(self, x2, u1, rev=False):
        return self._spline(x2, self.subnet2(u1), rev)


class ElementwiseRationalQuadraticSpline(BinnedSplineBase):
    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, bins=10, **kw):
        super().__init__(dims_in, dims_c, bins=bins, parameter_counts={"deltas": bins - 1}, **kw)
        self.spline_parameters = nn.Parameter(torch.zeros(dims_in[0][0] * (3 * bins + 1)))


# ---------------------------------------------------------------------------------------
# fixed and other transforms
# ---------------------------------------------------------------------------------------

class PermuteRandom(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, seed=None):
        super().__init__(dims_in, dims_c)
        self.in_channels = dims_in[0][0]
        rng = np.random.RandomState(seed)
        p = rng.permutation(self.in_channels)
        self.perm = nn.Parameter(torch.LongTensor(p), requires_grad=False)
        self.perm_inv = nn.Parameter(torch.LongTensor(np.argsort(p)), requires_grad=False)

    def forward(self, x, rev=False, jac=True):
        return [x[0][:, self.perm_inv if rev else self.perm]], 0.


class ActNorm(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, init_data=None):
        super().__init__(dims_in, dims_c)
        self.register_buffer("is_initialized", torch.tensor(False))
        C = dims_in[0][0]
        self.log_scale = nn.Parameter(torch.zeros(1, C))
        self.loc = nn.Parameter(torch.zeros(1, C))
        if init_data is not None:
            self.initialize(init_data)

    def initialize(self, batch):
        self.log_scale.data[:] = torch.log(batch.std(0, keepdim=True))
        self.loc.data[:] = batch.mean(0, keepdim=True)
        self.is_initialized.data = torch.tensor(True)

    def forward(self, x, c=None, rev=False, jac=True):
        x = x[0]
        if not self.is_initialized:
            self.initialize(x)
        ls = self.log_scale.sum()
        if not rev:
            return ((x - self.loc) * torch.exp(-self.log_scale),), -ls.expand(x.shape[0])
        return (x * torch.exp(self.log_scale) + self.loc,), ls.expand(x.shape[0])


class FixedLinearTransform(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, M=None, b=None):
        super().__init__(dims_in, dims_c)
        self.register_buffer("M", M.t())
        self.register_buffer("M_inv", M.t().inverse())
        self.register_buffer("b", torch.tensor(0.) if b is None else b.unsqueeze(0))
        self.register_buffer("logDetM", torch.slogdet(M)[1])

    def forward(self, x, rev=False, jac=True):
        j = self.logDetM.expand(x[0].shape[0])
        if not rev:
            return (x[0].mm(self.M) + self.b,), j
        return ((x[0] - self.b).mm(self.M_inv),), -j


class LearnedElementwiseScaling(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, init_scale=1.0):
        super().__init__(dims_in, dims_c)
        self.s = nn.Parameter(np.log(init_scale) * torch.ones(1, *dims_in[0]))

    def forward(self, x, rev=False, jac=True):
        # FrEIA returns +sum(s) in both directions (a known bug); copied here
        return [x[0] * torch.exp(-self.s if rev else self.s)], torch.sum(self.s).unsqueeze(0)


class OrthogonalTransform(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, correction_interval=256, clamp=5.):
        super().__init__(dims_in, dims_c)
        self.width = dims_in[0][0]
        self.clamp = clamp
        w = torch.randn(self.width, self.width)
        w, _, _ = torch.svd(w + w.t())
        self.weights = nn.Parameter(w)
        self.bias = nn.Parameter(0.05 * torch.randn(1, self.width))
        self.scaling = nn.Parameter(0.02 * torch.randn(1, self.width))

    def forward(self, x, rev=False, jac=True):
        ls = self.clamp * 0.636 * torch.atan(self.scaling / self.clamp)
        j = ls.sum(1).expand(x[0].shape[0])
        if rev:
            return [(x[0] * torch.exp(-ls) - self.bias).mm(self.weights.t())], -j
        return [(x[0].mm(self.weights) + self.bias) * torch.exp(ls)], j


class HouseholderPerm(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, n_reflections=1, fixed=False):
        super().__init__(dims_in, dims_c)
        self.width = dims_in[0][0]
        self.n_reflections = n_reflections
        self.fixed = fixed
        self.conditional = dims_c is not None and len(dims_c) > 0
        if n_reflections < 2:
            raise ValueError("Need at least 2 householder reflections.")
        if not self.conditional:
            init = torch.eye(self.width, n_reflections) + 0.1 * torch.randn(self.width, n_reflections)
            self.Vs = nn.Parameter(init.t().contiguous())

    def _W(self, vs):
        W = torch.eye(self.width, dtype=vs.dtype)
        for v in vs:
            W = W @ (torch.eye(self.width, dtype=vs.dtype) - 2 * torch.outer(v, v) / torch.dot(v, v))
        return W

    def forward(self, x, c=[], rev=False, jac=True):
        W = self._W(self.Vs)
        return [x[0].mm(W.t() if rev else W)], 0.


class InvertibleSigmoid(InvertibleModule):
    def __init__(self, dims_in, **kwargs):
        super().__init__(dims_in, kwargs.get("dims_c"))

    def forward(self, x, c=None, rev=False, jac=True):
        x = x[0]
        r = torch.log(x / (1 - x)) if rev else torch.sigmoid(x)
        inp = r if rev else x
        lj = -(F.softplus(inp) + F.softplus(-inp)).sum(1)
        return (r,), (-lj if rev else lj)


class IResNetLayer(InvertibleModule):
    def __init__(self, dims_in, dims_c=[], internal_size=None, n_internal_layers=1,
                 jacobian_iterations=20, hutchinson_samples=1, fixed_point_iterations=50,
                 lipschitz_iterations=10, lipschitz_batchsize=10, spectral_norm_max=0.8):
        super().__init__(dims_in, dims_c)
        d = dims_in[0][0]
        self.internal_size = internal_size or 2 * d
        self.fixed_point_iterations = fixed_point_iterations
        self.spectral_norm_max = spectral_norm_max
        self.dims_in = dims_in[0]
        self.layers = [nn.Linear(d, self.internal_size)]
        for _ in range(n_internal_layers):
            self.layers.append(nn.Linear(self.internal_size, self.internal_size))
        self.layers.append(nn.Linear(self.internal_size, d))
        mods = []
        for i, l in enumerate(self.layers):
            mods.append(l)
            if i + 1 < len(self.layers):
                mods.append(nn.ELU())
        self.residual = nn.Sequential(*mods)

    def lipschitz_correction(self):
        with torch.no_grad():
            for l in self.layers:
                s = torch.linalg.matrix_norm(l.weight, 2)
                if s > self.spectral_norm_max:
                    l.weight.data *= self.spectral_norm_max / s

    def forward(self, x, c=[], rev=False, jac=True):
        if not rev:
            return [x[0] + self.residual(x[0])], None
        y = x[0]
        xh = y
        for _ in range(self.fixed_point_iterations):
            xh = y - self.residual(xh)
        return [y - self.residual(xh)], None


class Split(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, section_sizes=None, dim=0):
        super().__init__(dims_in, dims_c)
        n = dims_in[0][dim]
        sizes = [section_sizes, n - section_sizes] if isinstance(section_sizes, int) else \
            list(section_sizes)
        if sum(sizes) < n:
            sizes.append(n - sum(sizes))
        self.sizes, self.dim = sizes, dim

    def output_dims(self, input_dims):
        d = input_dims[0]
        return [tuple(s if j == self.dim else d[j] for j in range(len(d))) for s in self.sizes]

    def forward(self, x, c=[], rev=False, jac=True):
        if rev:
            return [torch.cat(x, self.dim + 1)], 0.
        return list(torch.split(x[0], self.sizes, self.dim + 1)), 0.


class Concat(InvertibleModule):
    def __init__(self, dims_in, dims_c=None, dim=0):
        super().__init__(dims_in, dims_c)
        self.dim = dim
        self.sizes = [d[dim] for d in dims_in]

    def output_dims(self, input_dims):
        d = list(input_dims[0])
        d[self.dim] = sum(x[self.dim] for x in input_dims)
        return [tuple(d)]

    def forward(self, x, c=[], rev=False, jac=True):
        if rev:
            return list(torch.split(x[0], self.sizes, self.dim + 1)), 0.
        return [torch.cat(x, self.dim + 1)], 0.


# ---------------------------------------------------------------------------------------
# frameworks
# ---------------------------------------------------------------------------------------

class SequenceINN(InvertibleModule):
    def __init__(self, *dims):
        super().__init__([dims])
        self.shapes = [tuple(dims)]
        self.conditions = []
        self.module_list = nn.ModuleList()

    def append(self, module_class, cond=None, cond_shape=None, **kwargs):
        dims_in = [self.shapes[-1]]
        self.conditions.append(cond)
        if isinstance(module_class, InvertibleModule):
            module = module_class
        else:
            if cond is not None:
                kwargs['dims_c'] = [cond_shape]
            module = module_class(dims_in, **kwargs)
        self.module_list.append(module)
        self.shapes.append(module.output_dims(dims_in)[0])

    def forward(self, x_or_z, c=None, rev=False, jac=True):
        order = range(len(self.module_list) - 1, -1, -1) if rev else range(len(self.module_list))
        log_det = torch.zeros(x_or_z.shape[0], dtype=x_or_z.dtype)
        for i in order:
            m = self.module_list[i]
            if self.conditions[i] is None:
                out, j = m([x_or_z], rev=rev, jac=jac)
            else:
                out, j = m([x_or_z], c=[c[self.conditions[i]]], rev=rev, jac=jac)
            x_or_z = out[0]
            if j is not None:
                log_det = log_det + j
        return x_or_z, log_det


class _Node:
    def __init__(self, inputs, module_type, module_args, conditions=None, name=None):
        self.name = name or hex(id(self))[-6:]
        if isinstance(inputs, _Node):
            inputs = [(inputs, 0)]
        elif isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], int):
            inputs = [inputs]
        self.inputs = [(i, 0) if isinstance(i, _Node) else tuple(i) for i in (inputs or [])]
        conditions = conditions or []
        if not isinstance(conditions, (list, tuple)):
            conditions = [conditions]
        self.conditions = [(cn, 0) if isinstance(cn, _Node) else tuple(cn) for cn in conditions]
        self.module_type = module_type
        self.module_args = module_args
        in_shapes = [n.output_dims[k] for n, k in self.inputs]
        c_shapes = [n.output_dims[k] for n, k in self.conditions]
        self.module, self.output_dims = self.build_module(c_shapes, in_shapes)
        self.outputs = [None] * len(self.output_dims)
        for in_idx, (n, k) in enumerate(self.inputs):
            n.outputs[k] = (self, in_idx)
        for i in range(len(self.output_dims)):
            setattr(self, "out%d" % i, (self, i))

    def build_module(self, c_shapes, in_shapes):
        args = dict(self.module_args or {})
        if c_shapes:
            m = self.module_type(in_shapes, dims_c=c_shapes, **args)
        else:
            m = self.module_type(in_shapes, **args)
        return m, m.output_dims(in_shapes)


Node = _Node


class InputNode(_Node):
    def __init__(self, *dims, name=None):
        self.dims = dims
        super().__init__([], None, None, name=name)

    def build_module(self, c, i):
        return None, [self.dims]


class ConditionNode(_Node):
    def __init__(self, *dims, name=None):
        self.dims = dims
        super().__init__([], None, None, name=name)
        self.outputs = []

    def build_module(self, c, i):
        return None, [self.dims]


class OutputNode(_Node):
    def __init__(self, in_node, name=None):
        super().__init__(in_node, None, None, name=name)

    def build_module(self, c, i):
        return None, []


class FeedForwardNode(_Node):
    def __init__(self, conditions, output_dims, module_type, module_args=None, name=None):
        self.module_output_dims = output_dims
        super().__init__([], module_type, module_args, conditions=conditions, name=name)
        self.outputs = []

    def build_module(self, c, i):
        m = self.module_type if isinstance(self.module_type, nn.Module) else self.module_type(**(self.module_args or {}))
        return m, [self.module_output_dims]


class GraphINN(InvertibleModule):
    def __init__(self, node_list):
        self.in_nodes_ = [n for n in node_list if isinstance(n, InputNode)]
        super().__init__([n.dims for n in self.in_nodes_])
        self.in_nodes = self.in_nodes_
        self.out_nodes = [n for n in node_list if isinstance(n, OutputNode)]
        self.condition_nodes = [n for n in node_list if isinstance(n, ConditionNode)]
        self.node_list = list(node_list)
        # deliberately scramble the module order (FrEIA's is not stable, issue #168)
        mods = [n.module for n in node_list if n.module is not None]
        self.module_list = nn.ModuleList(mods[::-1])

    def forward(self, x_or_z, c=None, rev=False, jac=True):
        """Any DAG with one InputNode and one OutputNode (nodes run after their inputs)."""
        c = c or []
        vals = {}
        for t, cn in zip(c, self.condition_nodes):
            vals[(cn, 0)] = t
        order, done = [], {self.in_nodes[0]}
        todo = [n for n in self.node_list if n.module is not None and
                not isinstance(n, (ConditionNode, FeedForwardNode))]
        while todo:
            n = next(n for n in todo if all(p in done for p, _ in n.inputs))
            todo.remove(n)
            order.append(n)
            done.add(n)

        def conds(n):
            cs = []
            for cn, k in n.conditions:
                if isinstance(cn, FeedForwardNode):
                    cs.append(cn.module(vals[cn.conditions[0]]))
                else:
                    cs.append(vals[(cn, k)])
            return cs

        def run(n, ins, rev):
            cs = conds(n)
            return n.module(ins, c=cs, rev=rev, jac=jac) if cs else n.module(ins, rev=rev, jac=jac)

        ld = torch.zeros(x_or_z.shape[0], dtype=x_or_z.dtype)
        out_ref = self.out_nodes[0].inputs[0]
        if not rev:
            vals[(self.in_nodes[0], 0)] = x_or_z
            for n in order:
                out, j = run(n, [vals[r] for r in n.inputs], False)
                for k, o in enumerate(out):
                    vals[(n, k)] = o
                ld = ld + _jac(j, x_or_z.shape[0], x_or_z) if j is not None else ld
            return vals[out_ref], ld
        vals[out_ref] = x_or_z
        for n in reversed(order):
            ins, j = run(n, [vals[(n, k)] for k in range(len(n.outputs))], True)
            for r, v in zip(n.inputs, ins):
                vals[r] = v
            ld = ld + _jac(j, x_or_z.shape[0], x_or_z) if j is not None else ld
        return vals[(self.in_nodes[0], 0)], ld
