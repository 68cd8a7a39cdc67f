"""Reference evaluation of an innserve manifest in PyTorch (float64).

The exporter writes test vectors computed here, from the tensors exactly as they are
stored in the checkpoint (float32-rounded), so that what the engine checks at load is what
the file says; it also compares these values with the user's own torch model to catch
a module whose behaviour the manifest does not capture.  The math is that of
docs/checkpoint-format.md (FrEIA's, see docs/blocks.md for the deviations).

Everything works on (n, d) float64 tensors; `T(name)` returns a stored tensor as float64.
"""

import math

import torch
import torch.nn.functional as F

F64 = torch.float64
LOG2PI = math.log(2.0 * math.pi)


class Store:
    """name -> torch tensor (the stored values, any dtype)."""

    def __init__(self, tensors):
        self.t = tensors

    def T(self, name):
        return self.t[name].to(F64)

    def I(self, name):
        return self.t[name].to(torch.int64)


# ---------------------------------------------------------------------------------------
# subnets
# ---------------------------------------------------------------------------------------

def activation(u, L):
    t = L["type"]
    if t == "relu":
        return F.relu(u)
    if t == "leaky_relu":
        return F.leaky_relu(u, L.get("negative_slope", 0.01))
    if t == "elu":
        return F.elu(u, L.get("alpha", 1.0))
    if t == "tanh":
        return torch.tanh(u)
    if t == "sigmoid":
        return torch.sigmoid(u)
    if t == "softplus":
        return F.softplus(u, L.get("beta", 1.0), L.get("threshold", 20.0))
    if t == "gelu":
        return F.gelu(u, approximate=L.get("approximate", "none"))
    if t == "silu":
        return F.silu(u)
    if t == "lipswish":
        return F.silu(u) / 1.1
    raise ValueError("unknown activation %r" % t)


_CONVS = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")


def _conv_layer(S, L, u):
    """One convolution layer of a subnet on an image batch u (n, C, [H,] W)."""
    t = L["type"]
    one = t.endswith("1d")
    W = S.T(L["weight"])
    b = S.T(L["bias"]) if L.get("bias") else None

    def arg(name, default):
        v = L.get(name, default)
        return tuple(v) if isinstance(v, list) else v
    stride, dil, groups = arg("stride", 1), arg("dilation", 1), L.get("groups", 1)
    pad = arg("padding", 0)
    if t.startswith("conv_transpose"):
        f = F.conv_transpose1d if one else F.conv_transpose2d
        return f(u, W, b, stride, pad, arg("output_padding", 0), groups, dil)
    f = F.conv1d if one else F.conv2d
    if L.get("padding_mode", "zeros") == "circular":
        p = pad if isinstance(pad, tuple) else ((pad,) if one else (pad, pad))
        u = F.pad(u, (p[-1], p[-1]) + (() if one else (p[0], p[0])), mode="circular")
        pad = 0
    return f(u, W, b, stride, pad, dil, groups)


def subnet(S, net, u, sp=None):
    """net on rows u (n, d).  sp: the spatial shape (H, W) / (L,) of image rows, whose
    channel-major flat layout u is (convolutional subnets; the result is flattened back)."""
    n = u.shape[0]
    if sp:
        u = u.reshape(n, -1, *sp)
    for L in net["layers"]:
        t = L["type"]
        if t == "linear":
            u = u @ S.T(L["weight"]).T
            if L.get("bias"):
                u = u + S.T(L["bias"]).reshape(-1)
        elif t in _CONVS:
            u = _conv_layer(S, L, u)
        elif t == "flatten":
            u = u.reshape(n, -1)
        elif t == "unflatten":
            u = u.reshape(n, *L["shape"])
        else:
            u = activation(u, L)
    return u.reshape(n, -1)


def _sp(shape):
    """(channels, positions per channel, spatial shape) of a per-row shape (None: flat)."""
    if not shape or len(shape) < 2:
        return None, 1, ()
    return shape[0], int(math.prod(shape[1:])), tuple(shape[1:])


def _cat(u, c):
    return u if c is None else torch.cat([u, c], 1)


# ---------------------------------------------------------------------------------------
# blocks: f(S, b, x, c, rev) -> (out, log_det of the map applied)
# ---------------------------------------------------------------------------------------

def _clamp_f(act, u):
    if act == "ATAN":
        return 0.636 * torch.atan(u)
    if act == "TANH":
        return torch.tanh(u)
    if act == "SIGMOID":
        return 2.0 * (torch.sigmoid(u) - 0.5)
    raise ValueError(act)


def _split(b, d):
    return b.get("split", round(d * 0.5))


def householder(vs, left=None):
    """left @ H(v_0) @ H(v_1) @ ...,  H(v) = I - 2 v v^T / |v|^2."""
    d = vs.shape[1]
    W = torch.eye(d, dtype=vs.dtype) if left is None else left
    for v in vs:
        W = W @ (torch.eye(d, dtype=vs.dtype) - 2.0 * torch.outer(v, v) / torch.dot(v, v))
    return W


def _perm_vector(S, name):
    t = S.t[name]
    if t.is_floating_point():          # PyPI 0.2: one-hot matrix, row i has its 1 at perm[i]
        return t.reshape(t.shape[0], -1).argmax(1)
    return t.to(torch.int64).reshape(-1)


def global_scale(gtype, a):
    if gtype == "SOFTPLUS":
        return 0.1 * F.softplus(a, beta=0.5, threshold=20.0)
    if gtype == "SIGMOID":
        return 10.0 * torch.sigmoid(a - 2.0)
    if gtype == "EXP":
        return torch.exp(a)
    raise ValueError(gtype)


def blk_allinone(S, b, x, c, rev, shape=None):
    n, d = x.shape
    C, Pp, sp = _sp(shape)
    C = C or d
    n1 = b.get("split", (C - C // 2) * Pp)
    n2 = d - n1
    alpha = b.get("affine_clamping", 2.0)
    legacy = b.get("clamp_formula", "head") == "legacy"
    gin = b.get("gin_block", False)
    go = S.T(b["global_offset"]).reshape(C).repeat_interleave(Pp)
    if gin:
        g = torch.ones(d, dtype=F64)
        logg = torch.zeros((), dtype=F64)
    else:
        g = global_scale(b.get("global_affine_type", "SOFTPLUS"),
                         S.T(b["global_scale"]).reshape(C)).repeat_interleave(Pp)
        logg = torch.log(g).sum()
    P = b["permutation"]

    def mat(M):           # y = M v per position (a 1x1 convolution on images)
        return lambda v: torch.einsum("oi,nip->nop", M, v.reshape(n, C, Pp)).reshape(n, d)
    if P["type"] == "hard":
        p = _perm_vector(S, P["perm"])
        if Pp > 1:
            p = (p[:, None] * Pp + torch.arange(Pp)).reshape(-1)
        pinv = torch.argsort(p)
        fwdP, invP = (lambda v: v[:, p]), (lambda y: y[:, pinv])
    elif P["type"] == "soft":
        W, Wi = S.T(P["w"]).reshape(C, C), S.T(P["w_inv"]).reshape(C, C)
        fwdP, invP = mat(W), mat(Wi)
    else:
        W = householder(S.T(P["v"]), S.T(P["w0"]).reshape(C, C))
        fwdP, invP = mat(W), mat(W.T)
    rp = b.get("reverse_permutation", False)

    def coeffs(x1):
        a = 0.1 * subnet(S, b["subnet"], _cat(x1, c), sp)
        s = alpha * torch.tanh(a[:, :n2]) if legacy else alpha * torch.tanh(a[:, :n2] / alpha)
        if gin:
            s = s - s.mean(1, keepdim=True)
        return s, a[:, n2:]

    if not rev:
        if rp:
            x = invP(x)
        x1, x2 = x[:, :n1], x[:, n1:]
        s, t = coeffs(x1)
        u = torch.cat([x1, x2 * torch.exp(s) + t], 1)
        return fwdP(u * g + go), s.sum(1) + logg
    u = (invP(x) - go) / g
    u1, u2 = u[:, :n1], u[:, n1:]
    s, t = coeffs(u1)
    out = torch.cat([u1, (u2 - t) * torch.exp(-s)], 1)
    if rp:
        out = fwdP(out)
    return out, -(s.sum(1) + logg)


def _csplit(b, d, shape):
    C, Pp, _ = _sp(shape)
    if C is None:
        return _split(b, d)
    return b.get("split", round(C * 0.5) * Pp)


def blk_coupling(S, b, x, c, rev, shape=None):
    n, d = x.shape
    ty = b["type"]
    _, Pp, sp = _sp(shape)
    l1 = _csplit(b, d, shape)
    l2 = d - l1
    clamp, act = b.get("clamp", 2.0), b.get("clamp_activation", "ATAN")
    zero = torch.zeros(n, dtype=F64)

    def coeff(which, u):
        """s, t of the coupling that transforms half `which` ('1' acts on x2, '2' on x1)."""
        if ty == "RNVPCouplingBlock":
            s = clamp * _clamp_f(act, subnet(S, b["s" + which], _cat(u, c), sp))
            return s, subnet(S, b["t" + which], _cat(u, c), sp)
        a = subnet(S, b["subnet" + which], _cat(u, c), sp)
        k = l2 if which == "1" else l1
        s = clamp * _clamp_f(act, a[:, :k])
        if ty == "GINCouplingBlock":     # mean over the channels (at each position)
            s3 = s.reshape(n, k // Pp, Pp)
            s = (s3 - s3.mean(1, keepdim=True)).reshape(n, k)
        return s, a[:, k:]

    def step(which, xh, u, rev):
        if ty == "NICECouplingBlock":
            f = subnet(S, b["F" if which == "2" else "G"], _cat(u, c), sp)
            return (xh - f if rev else xh + f), zero
        s, t = coeff(which, u)
        ld = zero if ty == "GINCouplingBlock" else s.sum(1)
        if rev:
            return (xh - t) * torch.exp(-s), -ld
        return xh * torch.exp(s) + t, ld

    x1, x2 = x[:, :l1], x[:, l1:]
    if not rev:
        y1, j1 = step("2", x1, x2, False)
        y2, j2 = step("1", x2, y1, False)
    else:
        y2, j2 = step("1", x2, x1, True)
        y1, j1 = step("2", x1, y2, True)
    return torch.cat([y1, y2], 1), j1 + j2


def blk_onesided(S, b, x, c, rev, shape=None):
    n, d = x.shape
    l1 = _csplit(b, d, shape)
    l2 = d - l1
    x1, x2 = x[:, :l1], x[:, l1:]
    a = subnet(S, b["subnet"], _cat(x1, c), _sp(shape)[2])
    s = b.get("clamp", 2.0) * _clamp_f(b.get("clamp_activation", "ATAN"), a[:, :l2])
    t = a[:, l2:]
    if rev:
        return torch.cat([x1, (x2 - t) * torch.exp(-s)], 1), -s.sum(1)
    return torch.cat([x1, x2 * torch.exp(s) + t], 1), s.sum(1)


def blk_condaffine(S, b, x, c, rev, shape=None):
    n, d = x.shape
    a = subnet(S, b["subnet"], c, _sp(shape)[2])
    s = b.get("clamp", 2.0) * _clamp_f(b.get("clamp_activation", "ATAN"), a[:, :d])
    t = a[:, d:]
    if rev:
        return (x - t) * torch.exp(-s), -s.sum(1)
    return x * torch.exp(s) + t, s.sum(1)


def _rqs_knots(b, raw, l, linear=False):
    """Knots of FrEIA's binned splines; `linear`: LinearSpline's parameters (no deltas)."""
    n = raw.shape[0]
    K = b.get("bins", 10)
    dom = b.get("default_domain", [-3.0, 3.0, -3.0, 3.0])
    mins = b.get("min_bin_sizes", [0.1, 0.1])
    D = b.get("domain_clamping")
    affine = b.get("tails", "affine") == "affine"
    raw = raw.reshape(n, l, (2 * K + 2 if affine else 2 * K + 1) + (0 if linear else K - 1))
    rw, rh = raw[..., :K], raw[..., K:2 * K]
    if affine:
        bottom = raw[..., 2 * K:2 * K + 1] + dom[2]
        left = raw[..., 2 * K + 1:2 * K + 2] + dom[0]
        rd = raw[..., 2 * K + 2:]
        xs = math.log(math.expm1((dom[1] - dom[0]) / K - mins[0]))
        ys = math.log(math.expm1((dom[3] - dom[2]) / K - mins[1]))
        widths = mins[0] + F.softplus(rw + xs)
        heights = mins[1] + F.softplus(rh + ys)
        if D is not None:
            Wt, Ht = widths.sum(-1, keepdim=True), heights.sum(-1, keepdim=True)
            rW, rH = D * torch.tanh(Wt / D) / Wt, D * torch.tanh(Ht / D) / Ht
            widths, left = widths * rW, left * rW
            heights, bottom = heights * rH, bottom * rH
    else:
        rd = raw[..., 2 * K + 1:]
        tw = (dom[1] - dom[0]) * F.softplus(raw[..., 2 * K:2 * K + 1] + math.log(math.e - 1))
        if D is not None:
            tw = D * torch.tanh(tw / D)
        left = bottom = -tw / 2
        widths = tw * torch.softmax(rw, -1)
        heights = tw * torch.softmax(rh, -1)
    inner = F.softplus(rd + math.log(math.e - 1))
    scale = heights.sum(-1, keepdim=True) / widths.sum(-1, keepdim=True)
    deriv = torch.cat([scale, inner, scale], -1)
    kx = torch.cat([left, left + torch.cumsum(widths, -1)], -1)
    ky = torch.cat([bottom, bottom + torch.cumsum(heights, -1)], -1)
    return kx, ky, deriv, scale[..., 0], (bottom - scale * left)[..., 0]


def _rqs(b, x, raw, rev):
    n, l = x.shape
    K = b.get("bins", 10)
    kx, ky, dv, scale, shift = _rqs_knots(b, raw, l)
    knots = ky if rev else kx
    inside = (x > knots[..., 0]) & (x <= knots[..., K])
    v = torch.where(inside, x, 0.5 * (knots[..., 0] + knots[..., 1]))
    upper = torch.searchsorted(knots.contiguous(), v.unsqueeze(-1).contiguous()).clamp(1, K)
    lower = upper - 1
    g = lambda t, i: torch.gather(t, -1, i).squeeze(-1)
    xk, xk1, yk, yk1 = g(kx, lower), g(kx, upper), g(ky, lower), g(ky, upper)
    dk, dk1 = g(dv, lower), g(dv, upper)
    dx, dy = xk1 - xk, yk1 - yk
    sk = dy / dx
    e = dk1 + dk - 2 * sk
    if not rev:
        xi = (v - xk) / dx
        vin = yk + dy * (sk * xi ** 2 + dk * xi * (1 - xi)) / (sk + e * xi * (1 - xi))
    else:
        delta = v - yk
        A = dy * (sk - dk) + delta * e
        B = dy * dk - delta * e
        Q = -sk * delta
        xi = 2 * Q / (-B - torch.sqrt((B ** 2 - 4 * A * Q).clamp(min=0)))
        vin = xk + xi * dx
    ldin = (torch.log(sk ** 2 * (dk1 * xi ** 2 + 2 * sk * xi * (1 - xi) + dk * (1 - xi) ** 2))
            - 2 * torch.log(sk + e * xi * (1 - xi)))
    ld = torch.where(inside, ldin, torch.log(scale)).sum(1)
    if not rev:
        return torch.where(inside, vin, scale * x + shift), ld
    return torch.where(inside, vin, (x - shift) / scale), -ld


def blk_spline(S, b, x, c, rev, shape=None):
    n, d = x.shape
    _, Pp, sp = _sp(shape)
    l1 = _csplit(b, d, shape)
    x1, x2 = x[:, :l1], x[:, l1:]

    def raw(net, u, xh):      # FrEIA: output channel ch*P + k is parameter k of channel ch
        r = subnet(S, b[net], _cat(u, c), sp)
        return r if Pp == 1 else _binned_raw(r, xh.shape[1] // Pp, r.shape[1] // xh.shape[1], Pp)
    if not rev:
        y1, j1 = _rqs(b, x1, raw("subnet1", x2, x1), False)
        y2, j2 = _rqs(b, x2, raw("subnet2", y1, x2), False)
    else:
        y2, j2 = _rqs(b, x2, raw("subnet2", x1, x2), True)
        y1, j1 = _rqs(b, x1, raw("subnet1", y2, x1), True)
    return torch.cat([y1, y2], 1), j1 + j2


def blk_permute(S, b, x, c, rev):
    p = S.I(b["perm"]).reshape(-1)
    if p.numel() != x.shape[1]:       # channels of an image, each with its positions
        r = x.shape[1] // p.numel()
        p = (p[:, None] * r + torch.arange(r)).reshape(-1)
    return (x[:, torch.argsort(p)] if rev else x[:, p]), torch.zeros(x.shape[0], dtype=F64)


def _per_coord(t, d):
    """A per-channel tensor (FrEIA's (1, C, 1, ...)) repeated over each channel's d / C
    positions, or one with d values."""
    t = t.reshape(-1)
    return t.repeat_interleave(d // t.numel())


def blk_actnorm(S, b, x, c, rev):
    n, d = x.shape
    if "log_scale" in b:
        ls, loc = _per_coord(S.T(b["log_scale"]), d), _per_coord(S.T(b["loc"]), d)
        if rev:
            return x * torch.exp(ls) + loc, ls.sum().expand(n)
        return (x - loc) * torch.exp(-ls), -ls.sum().expand(n)
    sc, bias = _per_coord(S.T(b["scale"]), d), _per_coord(S.T(b["bias"]), d)
    if rev:
        return (x - bias) * torch.exp(-sc), -sc.sum().expand(n)
    return x * torch.exp(sc) + bias, sc.sum().expand(n)


def blk_fixedlinear(S, b, x, c, rev):
    n, d = x.shape
    M = S.T(b["M"])
    bias = S.T(b["b"]).reshape(d) if b.get("b") else torch.zeros(d, dtype=F64)
    ld = torch.linalg.slogdet(M)[1]
    if rev:
        return (x - bias) @ torch.linalg.inv(M), -ld.expand(n)
    return x @ M + bias, ld.expand(n)


def blk_elementwise(S, b, x, c, rev):
    n, d = x.shape
    s = S.T(b["s"]).reshape(d)
    if rev:
        return x * torch.exp(-s), -s.sum().expand(n)
    return x * torch.exp(s), s.sum().expand(n)


def blk_orthogonal(S, b, x, c, rev):
    n, d = x.shape
    W, bias = S.T(b["weights"]), S.T(b["bias"]).reshape(d)
    cl = b.get("clamp", 5.0)
    ls = cl * 0.636 * torch.atan(S.T(b["scaling"]).reshape(d) / cl)
    if rev:
        return (x * torch.exp(-ls) - bias) @ W.T, -ls.sum().expand(n)
    return (x @ W + bias) * torch.exp(ls), ls.sum().expand(n)


def blk_householderperm(S, b, x, c, rev):
    W = householder(S.T(b["Vs"]))
    return (x @ W.T if rev else x @ W), torch.zeros(x.shape[0], dtype=F64)


def blk_sigmoid(S, b, x, c, rev):
    if rev:
        out = torch.log(x / (1 - x))
        return out, (F.softplus(out) + F.softplus(-out)).sum(1)
    return torch.sigmoid(x), -(F.softplus(x) + F.softplus(-x)).sum(1)


def blk_dense(S, b, x, c, rev):
    n, d = x.shape
    W = S.T(b["weight"])
    bias = S.T(b["bias"]).reshape(d) if b.get("bias") else torch.zeros(d, dtype=F64)
    a = b.get("negative_slope", 0.01)
    ldW = torch.linalg.slogdet(W)[1]
    if not rev:
        u = x @ W.T + bias
        return torch.where(u >= 0, u, a * u), ldW + ((u < 0).to(F64) * math.log(a)).sum(1)
    u = torch.where(x >= 0, x, x / a)
    return (u - bias) @ torch.linalg.inv(W).T, -(ldW + ((u < 0).to(F64) * math.log(a)).sum(1))


def blk_iresnet(S, b, x, c, rev, shape=None):
    """x + g(x | c); exact log-det by the Jacobian (autograd), inverse by fixed point in f64.
    On image rows g is a convolutional subnet (shape (C, H, W) / (C, L))."""
    net = b["subnet"]
    sp = _sp(shape)[2]
    g = lambda u, cc: subnet(S, net, _cat(u, cc), sp)
    terms = int(b.get("series_terms", 10)) if b.get("logdet") == "series" else 0
    if not rev:
        return x + g(x, c), _logdet_residual(g, x, c, terms)
    xk = x.clone()
    for _ in range(100000):
        xn = x - g(xk, c)
        done = float((xn - xk).abs().max()) <= 1e-15 * (1.0 + float(x.abs().max()))
        xk = xn
        if done:
            break
    return xk, -_logdet_residual(g, xk, c, terms)


def _logdet_residual(g, x, c, terms=0):
    """log det(I + J_g) per row: exact (terms 0) or the truncated series
    sum_{k=1..terms} (-1)^(k+1) tr(J^k) / k with exact traces."""
    out = []
    d = x.shape[1]
    eye = torch.eye(d, dtype=F64)
    for i in range(x.shape[0]):
        ci = None if c is None else c[i:i + 1].detach()
        J = torch.autograd.functional.jacobian(lambda u: g(u, ci), x[i:i + 1].detach())
        J = J.reshape(d, d)
        if terms:
            s, P = torch.zeros((), dtype=F64), eye
            for k in range(1, terms + 1):
                P = P @ J
                s = s + (-1) ** (k + 1) * torch.trace(P) / k
            out.append(s)
        else:
            out.append(torch.linalg.slogdet(eye + J)[1])
    return torch.stack(out) if out else torch.zeros(0, dtype=F64)


def _made_degrees(d, h):
    """nflows' sequential MADE degrees: inputs, hidden units, the 2d outputs."""
    mx, mn = max(1, d - 1), min(1, d - 1)
    return (torch.arange(1, d + 1), torch.arange(h) % mx + mn,
            torch.arange(2 * d) // 2 + 1)


def _masked(S, L, dout, din, strict):
    """W * mask and bias of a masked Linear; the mask must be the degrees' mask."""
    W, M = S.T(L["weight"]), S.T(L["mask"])
    want = (dout[:, None] > din[None, :]) if strict else (dout[:, None] >= din[None, :])
    if tuple(M.shape) != tuple(want.shape) or not torch.equal(M, want.to(F64)):
        raise ValueError("tensor '%s' is not the MADE mask of its degrees" % L["mask"])
    b = S.T(L["bias"]) if L.get("bias") else torch.zeros(W.shape[0], dtype=F64)
    return W * M, b


def _linear(S, L):
    W = S.T(L["weight"])
    return W, (S.T(L["bias"]) if L.get("bias") else torch.zeros(W.shape[0], dtype=F64))


def _made(S, m, d, x, c, mult=2):
    """nflows MADE (random_mask=False): (n, d, mult) parameters (affine: [..., 0] = u,
    [..., 1] = shift)."""
    act = torch.tanh if m["activation"] == "tanh" else torch.relu
    res = m["residual"]
    h_units = S.T(m["initial"]["weight"]).shape[0]
    din, dh, _ = _made_degrees(d, h_units)
    dout = torch.arange(mult * d) // mult + 1
    W, b = _masked(S, m["initial"], dh, din, False)
    h = x @ W.T + b
    if c is not None:
        Wc, bc = _linear(S, m["context"])
        h = h + act(c @ Wc.T + bc)
    if not res:
        h = act(h)
    for blk in m["blocks"]:
        if not res:
            W, b = _masked(S, blk["linear"], dh, dh, False)
            h = act(h @ W.T + b)
            continue
        W1, b1 = _masked(S, blk["linear0"], dh, dh, False)
        W2, b2 = _masked(S, blk["linear1"], dh, dh, False)
        t = act(h) @ W1.T + b1
        if c is not None:
            Wc, bc = _linear(S, blk["context"])
            t = t + c @ Wc.T + bc
        h = h + act(t) @ W2.T + b2
    W, b = _masked(S, m["final"], dout, dh, True)
    return (h @ W.T + b).reshape(-1, d, mult)


def blk_maf(S, b, x, c, rev):
    """nflows MaskedAffineAutoregressiveTransform; "inverse": true swaps the directions (IAF)."""
    d = x.shape[1]
    ms = float(b.get("scale", {}).get("min_scale", 1e-3))

    def scale_shift(v):
        p = _made(S, b["made"], d, v, c)
        return F.softplus(p[..., 0]) + ms, p[..., 1]

    if rev == bool(b.get("inverse", False)):   # the MAF's forward: one pass
        s, t = scale_shift(x)
        return s * x + t, torch.log(s).sum(1)
    out = torch.zeros_like(x)
    for _ in range(d):                          # the MAF's inverse: d passes
        s, t = scale_shift(out)
        out = (x - t) / s
    return out, -torch.log(s).sum(1)


def _nflows_rqs(cfg, v, raw, inv, divisor=1.0):
    """nflows' unconstrained_rational_quadratic_spline, linear tails: v (n, l), raw (n, l,
    3K - 1) -> (out, log|d out / d v| per element)."""
    K = int(cfg.get("bins", 10))
    B = float(cfg.get("tail_bound", 3.0))
    mw, mh = float(cfg.get("min_bin_width", 1e-3)), float(cfg.get("min_bin_height", 1e-3))
    md = float(cfg.get("min_derivative", 1e-3))
    inside = (v >= -B) & (v <= B)
    u = torch.where(inside, v, torch.zeros_like(v))

    def knots(r, mn):
        w = mn + (1 - mn * K) * torch.softmax(r / divisor, -1)
        k = F.pad(torch.cumsum(w, -1), (1, 0))
        k = 2 * B * k - B
        k[..., 0], k[..., -1] = -B, B
        return k
    kx, ky = knots(raw[..., :K], mw), knots(raw[..., K:2 * K], mh)
    edge = torch.full(raw.shape[:-1] + (1,), math.log(math.expm1(1 - md)), dtype=F64)
    dv = md + F.softplus(torch.cat([edge, raw[..., 2 * K:], edge], -1))
    kn = (ky if inv else kx).clone()
    kn[..., -1] += 1e-6
    idx = ((u[..., None] >= kn).sum(-1) - 1).clamp(0, K - 1)[..., None]
    g = lambda t, i: t.gather(-1, i)[..., 0]
    xk, yk, w, h = g(kx, idx), g(ky, idx), g(kx, idx + 1) - g(kx, idx), g(ky, idx + 1) - g(ky, idx)
    dk, dk1 = g(dv, idx), g(dv, idx + 1)
    s = h / w
    if not inv:
        th = (u - xk) / w
        out = yk + h * (s * th ** 2 + dk * th * (1 - th)) / (s + (dk + dk1 - 2 * s) * th * (1 - th))
    else:
        dy = u - yk
        a = dy * (dk + dk1 - 2 * s) + h * (s - dk)
        b = h * dk - dy * (dk + dk1 - 2 * s)
        c = -s * dy
        th = 2 * c / (-b - torch.sqrt((b ** 2 - 4 * a * c).clamp(min=0)))
        out = th * w + xk
    tt = th * (1 - th)
    ld = (torch.log(s ** 2 * (dk1 * th ** 2 + 2 * s * tt + dk * (1 - th) ** 2))
          - 2 * torch.log(s + (dk + dk1 - 2 * s) * tt))
    if inv:
        ld = -ld
    return torch.where(inside, out, v), torch.where(inside, ld, torch.zeros_like(ld))


def blk_mrqs(S, b, x, c, rev):
    """nflows MaskedPiecewiseRationalQuadraticAutoregressiveTransform (linear tails)."""
    d = x.shape[1]
    cfg = b["spline"]
    M = 3 * int(cfg.get("bins", 10)) - 1
    if rev == bool(b.get("inverse", False)):   # one pass
        out, ld = _nflows_rqs(cfg, x, _made(S, b["made"], d, x, c, M), False)
        return out, ld.sum(1)
    out = torch.zeros_like(x)
    for _ in range(d):                          # d passes
        out, ld = _nflows_rqs(cfg, x, _made(S, b["made"], d, out, c, M), True)
    return out, ld.sum(1)


def _resnet(S, m, u, c):
    """nflows ResidualNet: context concatenated at the input, GLU context gates."""
    act = torch.tanh if m.get("activation", "relu") == "tanh" else torch.relu
    W, bb = _linear(S, m["initial"])
    h = _cat(u, c) @ W.T + bb
    for blk in m["blocks"]:
        W1, b1 = _linear(S, blk["linear0"])
        W2, b2 = _linear(S, blk["linear1"])
        t = act(act(h) @ W1.T + b1) @ W2.T + b2
        if c is not None:
            Wc, bc = _linear(S, blk["context"])
            t = t * torch.sigmoid(c @ Wc.T + bc)
        h = h + t
    W, bb = _linear(S, m["final"])
    return h @ W.T + bb


def blk_rqscoupling(S, b, x, c, rev):
    """nflows PiecewiseRationalQuadraticCouplingTransform (linear tails)."""
    mask = torch.tensor(b["mask"])
    idf, tff = torch.nonzero(mask == 0)[:, 0], torch.nonzero(mask == 1)[:, 0]
    K = int(b.get("bins", 10))
    cd = b["conditioner"]
    u = x[:, idf]
    p = _resnet(S, cd, u, c) if cd["type"] == "ResidualNet" else subnet(S, cd, _cat(u, c))
    raw = p.reshape(x.shape[0], len(tff), 3 * K - 1)
    div = math.sqrt(b["hidden_features"]) if b.get("hidden_features") else 1.0
    v, ld = _nflows_rqs(b, x[:, tff], raw, rev, div)
    out = x.clone()
    out[:, tff] = v
    return out, ld.sum(1)


def blk_lulinear(S, b, x, c, rev):
    """nflows LULinear: W = L U, L unit lower (tril k=-1 row-major), U upper with
    diagonal softplus(u) + eps."""
    n, d = x.shape
    eps = float(b.get("eps", 1e-3))
    Lm, Um = torch.eye(d, dtype=F64), torch.zeros(d, d, dtype=F64)
    if d > 1:
        li, ui = torch.tril_indices(d, d, -1), torch.triu_indices(d, d, 1)
        Lm[li[0], li[1]] = S.T(b["lower_entries"]).reshape(-1)
        Um[ui[0], ui[1]] = S.T(b["upper_entries"]).reshape(-1)
    diag = F.softplus(S.T(b["unconstrained_upper_diag"]).reshape(d)) + eps
    Um = Um + torch.diag(diag)
    bias = S.T(b["bias"]).reshape(d) if b.get("bias") else torch.zeros(d, dtype=F64)
    ld = torch.log(diag).sum().expand(n)
    if not rev:
        return x @ Um.T @ Lm.T + bias, ld
    t = torch.linalg.solve_triangular(Lm, (x - bias).T, upper=False, unitriangular=True)
    return torch.linalg.solve_triangular(Um, t, upper=True).T, -ld


def _zuko_rank(d, cw, w):
    r0 = 0 if cw else 1
    return torch.arange(w) % (d - r0) + r0


def _zuko_params(S, b, x, c):
    """(n, d, P) raw parameters of zuko's hypernetwork (MaskedMLP of cat(x, c), or for an
    element-wise block an MLP of c or the constants phi)."""
    n, d = x.shape
    if "phi" in b:
        keys = ("widths", "heights", "derivatives") if b["transform"]["type"] == "rqs" \
            else ("shift", "scale")
        phi = torch.cat([S.T(b["phi"][k]).reshape(d, -1) for k in keys], 1)
        return phi.expand(n, d, phi.shape[1])
    act = {"relu": torch.relu, "tanh": torch.tanh, "elu": F.elu, "sigmoid": torch.sigmoid,
           "silu": F.silu}[b.get("activation", "relu")]
    layers = b["hyper"]
    masked = "order" in b
    cw = 0 if c is None else c.shape[1]
    if masked:
        rank = S.I(b["order"])
        if sorted(rank.tolist()) != list(range(d)):
            raise ValueError("order '%s' is not a permutation" % b["order"])
        h = x if c is None else torch.cat([x, c], 1)
    else:
        h = c
    prev = None
    for li, L in enumerate(layers):
        W = S.T(L["weight"])
        bias = S.T(L["bias"]) if L.get("bias") else torch.zeros(W.shape[0], dtype=F64)
        last = li == len(layers) - 1
        if masked:
            if last:
                ro = rank[torch.arange(W.shape[0]) // (W.shape[0] // d)]
            else:
                ro = _zuko_rank(d, cw, W.shape[0])
            if li == 0:
                ri = torch.cat([rank, torch.full((cw,), -1)])
                want = ri[None, :] < ro[:, None]
            else:
                want = prev[None, :] <= ro[:, None]
            M = S.T(L["mask"])
            if tuple(M.shape) != tuple(want.shape) or not torch.equal(M, want.to(F64)):
                raise ValueError("tensor '%s' is not zuko's MaskedMLP mask" % L["mask"])
            W = W * M
            prev = None if last else ro
        h = h @ W.T + bias
        if not last:
            h = act(h)
    return h.reshape(n, d, -1)


def _zuko_rqs(v, p, K, B, ls, rev):
    """zuko MonotonicRQSTransform on v (n, d) with raw parameters p (n, d, 3K - 1)."""
    w, hh, dd = p[..., :K], p[..., K:2 * K], p[..., 2 * K:]
    w = w / (1 + (2 * w / ls).abs())
    hh = hh / (1 + (2 * hh / ls).abs())
    dd = dd / (1 + (dd / ls).abs())
    X = B * (2 * torch.cumsum(F.pad(torch.softmax(w, -1), (1, 0)), -1) - 1)
    Y = B * (2 * torch.cumsum(F.pad(torch.softmax(hh, -1), (1, 0)), -1) - 1)
    D = torch.exp(F.pad(dd, (1, 1)))
    T = Y if rev else X
    k = (T < v[..., None]).sum(-1) - 1
    inside = (k >= 0) & (k < K)
    kc = k.clamp(0, K - 1)[..., None]
    x0, x1 = X.gather(-1, kc)[..., 0], X.gather(-1, kc + 1)[..., 0]
    y0, y1 = Y.gather(-1, kc)[..., 0], Y.gather(-1, kc + 1)[..., 0]
    d0, d1 = D.gather(-1, kc)[..., 0], D.gather(-1, kc + 1)[..., 0]
    s = (y1 - y0) / (x1 - x0)
    if rev:
        yy = v - y0
        e = d0 + d1 - 2 * s
        a = (y1 - y0) * (s - d0) + yy * e
        bq = (y1 - y0) * d0 - yy * e
        cq = -s * yy
        t = 2 * cq / (-bq - (bq * bq - 4 * a * cq).clamp(min=0).sqrt())
        out = x0 + t * (x1 - x0)
    else:
        t = (v - x0) / (x1 - x0)
        u = t * (1 - t)
        out = y0 + (y1 - y0) * (s * t * t + d0 * u) / (s + (d0 + d1 - 2 * s) * u)
    u = t * (1 - t)
    den = s + (d0 + d1 - 2 * s) * u
    jac = s * s * (2 * s * u + d0 * (1 - t) ** 2 + d1 * t * t) / den ** 2
    ladj = torch.where(inside, torch.log(jac.clamp(min=1e-300)), torch.zeros_like(v))
    return torch.where(inside, out, v), ladj


def blk_zuko(S, b, x, c, rev):
    """zuko MaskedAutoregressiveTransform (MAF / NSF) or ElementWiseTransform."""
    d = x.shape[1]
    tr = b["transform"]
    ls = math.log(float(tr["slope"]))

    def apply(p, v, inv):
        if tr["type"] == "affine":
            la = p[..., 1] / (1 + (p[..., 1] / ls).abs())
            out = (v - p[..., 0]) / torch.exp(la) if inv else v * torch.exp(la) + p[..., 0]
            return out, la
        return _zuko_rqs(v, p, int(tr["bins"]), float(tr.get("bound", 5.0)), ls, inv)

    if not rev:                                 # density direction: one pass
        out, la = apply(_zuko_params(S, b, x, c), x, False)
        return out, la.sum(1)
    out = torch.zeros_like(x)
    for _ in range(d):                          # sampling direction: d passes
        out, la = apply(_zuko_params(S, b, out, c), x, True)
    return out, -la.sum(1)


BLOCKS = {
    "AllInOneBlock": blk_allinone,
    "NICECouplingBlock": blk_coupling,
    "RNVPCouplingBlock": blk_coupling,
    "GLOWCouplingBlock": blk_coupling,
    "GINCouplingBlock": blk_coupling,
    "AffineCouplingOneSided": blk_onesided,
    "ConditionalAffineTransform": blk_condaffine,
    "RationalQuadraticSpline": blk_spline,
    "PermuteRandom": blk_permute,
    "ActNorm": blk_actnorm,
    "FixedLinearTransform": blk_fixedlinear,
    "LearnedElementwiseScaling": blk_elementwise,
    "OrthogonalTransform": blk_orthogonal,
    "HouseholderPerm": blk_householderperm,
    "InvertibleSigmoid": blk_sigmoid,
    "InvertibleDense": blk_dense,
    "IResNetBlock": blk_iresnet,
    "MaskedAffineAutoregressive": blk_maf,
    "MaskedRQSAutoregressive": blk_mrqs,
    "RQSCoupling": blk_rqscoupling,
    "LULinear": blk_lulinear,
    "ZukoMaskedAutoregressive": blk_zuko,
}


# ---------------------------------------------------------------------------------------
# blocks that need the per-row shape (C, H, W) / (C, L) / (d,): f(S, b, x, c, rev, shape)
# ---------------------------------------------------------------------------------------

def out_shape(b, shape):
    """The per-row shape a block returns for the input shape `shape` (a tuple)."""
    t = b["type"]
    if t in ("HaarDownsampling", "IRevNetDownsampling"):
        return (shape[0] * 4, shape[1] // 2, shape[2] // 2)
    if t in ("HaarUpsampling", "IRevNetUpsampling"):
        return (shape[0] // 4, shape[1] * 2, shape[2] * 2)
    if t == "InvAutoConv2D":
        w = b["_shape_w"]
        ph, pw = (b.get("padding", 1),) * 2 if not isinstance(b.get("padding", 1), list) \
            else b["padding"]
        return (w[0], shape[1] + 2 * ph - w[2] + 1, shape[2] + 2 * pw - w[3] + 1)
    if t == "Inverse":
        return tuple(b.get("block_shape") or shape)
    if t == "Flatten":
        return (int(math.prod(shape)),)
    if t == "Reshape":
        return tuple(b.get("output_dims") or b.get("target_dim"))
    return shape


def _conv1x1(S, b, x, c, rev, shape):
    n, d = x.shape
    M = S.T(b["M"]).reshape(shape[0], shape[0])
    ld = torch.linalg.slogdet(M)[1] * (d // shape[0])
    A = torch.linalg.inv(M) if rev else M
    y = torch.einsum("oi,nis->nos", A, x.reshape(n, shape[0], -1)).reshape(n, d)
    return y, (-ld if rev else ld).expand(n)


def _haar_matrix():
    w = torch.ones(4, 2, 2, dtype=F64)
    w[1, 0, 1] = w[1, 1, 1] = -1
    w[2, 1, 0] = w[2, 1, 1] = -1
    w[3, 1, 0] = w[3, 0, 1] = -1
    return w


def _squeeze(b, x, shape, down, kernel, fac=1.0):
    """fine `shape` (C, H, W) <-> coarse (4C, H/2, W/2) by a per-channel 2 x 2 kernel (4, 2, 2),
    output channel 4c + k, or k C + c when `by_k`."""
    n = x.shape[0]
    by_k = b.get("order_by_wavelet", False) or b.get("legacy_backend", False)
    C, H, W = shape       # the fine shape
    w = kernel.unsqueeze(1).repeat(C, 1, 1, 1)
    perm = torch.tensor([k * C + c for c in range(C) for k in range(4)]) if by_k \
        else torch.arange(4 * C)          # stored channel of (c, k) at 4c + k
    if down:
        out = F.conv2d(x.reshape(n, C, H, W), w, stride=2, groups=C) * fac
        res = torch.empty_like(out)
        res[:, perm] = out
        return res.reshape(n, -1)
    u = x.reshape(n, 4 * C, H // 2, W // 2)[:, perm] * fac
    return F.conv_transpose2d(u, w, stride=2, groups=C).reshape(n, -1)


def _haar(S, b, x, c, rev, shape):
    up = b["type"] == "HaarUpsampling"
    r = b.get("rebalance", 1.0)
    down = up == rev
    ld = x.shape[1] * math.log(2 * abs(0.5 * r))
    fine = shape if (not up) else out_shape(b, shape)
    y = _squeeze(b, x, fine, down, _haar_matrix(), 0.5 * r if down else 0.5 / r)
    return y, torch.full((x.shape[0],), ld if down else -ld, dtype=F64)


def _irevnet(S, b, x, c, rev, shape):
    up = b["type"] == "IRevNetUpsampling"
    down = up == rev
    k = torch.zeros(4, 2, 2, dtype=F64)
    k[0, 0, 0] = k[1, 0, 1] = k[2, 1, 0] = k[3, 1, 1] = 1
    fine = shape if not up else out_shape(b, shape)
    return _squeeze(b, x, fine, down, k), torch.zeros(x.shape[0], dtype=F64)


def _invauto_fc(S, b, x, c, rev, shape):
    W, bias = S.T(b["weights"]), S.T(b["bias"]).reshape(-1)
    y = (x - bias) @ W if rev else x @ W.T + bias
    return y, torch.zeros(x.shape[0], dtype=F64)


def _invauto_conv(S, b, x, c, rev, shape):
    n = x.shape[0]
    W, bias = S.T(b["weight"]), S.T(b["bias"]).reshape(1, -1, 1, 1)
    p = b.get("padding", 1)
    ph, pw = p if isinstance(p, list) else (p, p)
    if not rev:
        y = F.conv2d(x.reshape(n, *shape), W, padding=(ph, pw)) + bias
    else:
        ho, wo = shape[1] + 2 * ph - W.shape[2] + 1, shape[2] + 2 * pw - W.shape[3] + 1
        y = F.conv_transpose2d(x.reshape(n, W.shape[0], ho, wo) - bias, W, padding=(ph, pw))
    return y.reshape(n, -1), torch.zeros(n, dtype=F64)


def _invauto_act(S, b, x, c, rev, shape):
    n, d = x.shape
    sg = torch.sign(x)
    if b["type"] == "InvAutoAct":
        ls = _per_coord(S.T(b["alpha"]), d) * sg
    else:
        ap, an = _per_coord(S.T(b["alpha_pos"]), d), _per_coord(S.T(b["alpha_neg"]), d)
        ls = ap + 0.5 * (an - ap) * (1 - sg)
    if rev:
        ls = -ls
    return x * torch.exp(ls), ls.sum(1)


def _binned_raw(raw, C, P, Sp):
    """(n, C P Sp) FrEIA channel layout (C P channels over Sp positions) -> (n, C Sp P),
    P contiguous per coordinate c Sp + s."""
    n = raw.shape[0]
    return raw.reshape(n, C, P, Sp).permute(0, 1, 3, 2).reshape(n, C * Sp * P)


def _bins_P(b, linear):
    K = b.get("bins", 10)
    aff = b.get("tails", "affine") == "affine"
    return (2 * K + 2 if aff else 2 * K + 1) + (0 if linear else K - 1)


def _erqs(S, b, x, c, rev, shape):
    n, d = x.shape
    C, P = shape[0], _bins_P(b, False)
    if b.get("subnet") is not None:
        raw = subnet(S, b["subnet"], c, _sp(shape)[2])
    else:
        raw = S.T(b["spline_parameters"]).reshape(1, -1).expand(n, -1)
    return _rqs(b, x, _binned_raw(raw, C, P, d // C), rev)


def _lin(b, x, raw, rev):
    n, l = x.shape
    K = b.get("bins", 10)
    kx, ky, _, scale, shift = _rqs_knots(b, raw, l, linear=True)
    knots = ky if rev else kx
    inside = (x > knots[..., 0]) & (x <= knots[..., K])
    v = torch.where(inside, x, 0.5 * (knots[..., 0] + knots[..., 1]))
    upper = torch.searchsorted(knots.contiguous(), v.unsqueeze(-1).contiguous()).clamp(1, K)
    lower = upper - 1
    g = lambda t, i: torch.gather(t, -1, i).squeeze(-1)
    xk, xk1, yk, yk1 = g(kx, lower), g(kx, upper), g(ky, lower), g(ky, upper)
    dx, dy = xk1 - xk, yk1 - yk
    s = dy / dx
    sh = yk - s * xk
    vin = (v - sh) / s if rev else s * v + sh
    ld = torch.where(inside, torch.log(dy) - torch.log(dx), torch.log(scale)).sum(1)
    if not rev:
        return torch.where(inside, vin, scale * x + shift), ld
    return torch.where(inside, vin, (x - shift) / scale), -ld


def _linspline(S, b, x, c, rev, shape):
    n, d = x.shape
    Sp = d // shape[0]
    l1 = b.get("split", round(shape[0] / 2) * Sp)
    P = _bins_P(b, True)
    x1, x2 = x[:, :l1], x[:, l1:]

    def sp(xh, u, net, rv):
        raw = _binned_raw(subnet(S, b[net], u, _sp(shape)[2]), xh.shape[1] // Sp, P, Sp)
        return _lin(b, xh, raw, rv)
    if not rev:
        y1, j1 = sp(x1, _cat(x2, c), "subnet1", False)
        y2, j2 = sp(x2, _cat(y1, c), "subnet2", False)
    else:
        y2, j2 = sp(x2, _cat(x1, c), "subnet2", True)
        y1, j1 = sp(x1, _cat(y2, c), "subnet1", True)
    return torch.cat([y1, y2], 1), j1 + j2


def _gmm(S, b, x, c, rev, shape):
    n, D = x.shape
    K = b["components"]
    nu = D * (D + 1) // 2
    mu = c[:, K:K + K * D].reshape(n, K, D)
    Ue = c[:, K + K * D:K + K * D + K * nu].reshape(n, K, nu)
    i = c[:, -1].round().long()
    r = torch.arange(n)
    mu, Ue = mu[r, i], Ue[r, i]
    U = torch.zeros(n, D, D, dtype=F64)
    iu = torch.triu_indices(D, D, 1)
    U[:, iu[0], iu[1]] = Ue[:, D:]
    U[:, torch.arange(D), torch.arange(D)] = torch.exp(Ue[:, :D])
    ld = Ue[:, :D].sum(1)
    if not rev:
        return torch.einsum("nij,nj->ni", U, x - mu), ld
    return torch.linalg.solve_triangular(U, x.unsqueeze(-1), upper=True)[..., 0] + mu, -ld


def _reshape(S, b, x, c, rev, shape):
    return x, torch.zeros(x.shape[0], dtype=F64)


def _inverse(S, b, x, c, rev, shape):
    inner = b["block"]
    return block(S, inner, x, c, not rev, tuple(b.get("block_shape") or shape))


SHAPED = {
    "IResNetBlock": blk_iresnet,
    "AllInOneBlock": blk_allinone,
    "NICECouplingBlock": blk_coupling,
    "RNVPCouplingBlock": blk_coupling,
    "GLOWCouplingBlock": blk_coupling,
    "GINCouplingBlock": blk_coupling,
    "AffineCouplingOneSided": blk_onesided,
    "ConditionalAffineTransform": blk_condaffine,
    "RationalQuadraticSpline": blk_spline,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Fixed1x1Conv": _conv1x1,
    "HaarDownsampling": _haar,
    "HaarUpsampling": _haar,
    "IRevNetDownsampling": _irevnet,
    "IRevNetUpsampling": _irevnet,
    "InvAutoFC": _invauto_fc,
    "InvAutoConv2D": _invauto_conv,
    "InvAutoAct": _invauto_act,
    "InvAutoActTwoSided": _invauto_act,
    "ElementwiseRationalQuadraticSpline": _erqs,
    "LinearSpline": _linspline,
    "GaussianMixtureModel": _gmm,
    "Inverse": _inverse,
}


def block(S, b, x, c, rev=False, shape=None):
    """One block on rows x; `shape` is its per-row input shape (default (d,))."""
    if b["type"] in SHAPED:
        return SHAPED[b["type"]](S, b, x, c, rev, shape or (x.shape[1],))
    return BLOCKS[b["type"]](S, b, x, c, rev)


# ---------------------------------------------------------------------------------------
# graphs (manifest "graph"): nodes in topological order, Split / Concat, several outputs
# ---------------------------------------------------------------------------------------

def block_cond(conds, b):
    """The condition a block reads: conds[k], or a list of them concatenated in order."""
    k = b.get("cond")
    if k is None:
        return None
    if isinstance(k, list):
        return torch.cat([conds[i] for i in k], 1)
    return conds[k]


def split_sections(b, n):
    """A Split's section sizes along a dim of size n (FrEIA's rules)."""
    ss = b.get("section_sizes")
    if ss is None:
        ns = int(b.get("n_sections", 2))
        return [n // ns + 1] * (n % ns) + [n // ns] * (ns - n % ns)
    if isinstance(ss, int):
        return [ss, n - ss]
    ss = [int(v) for v in ss]
    return ss + ([n - sum(ss)] if sum(ss) < n else [])


def _shaped(S, b):
    if b["type"] == "InvAutoConv2D":
        return dict(b, _shape_w=list(S.t[b["weight"]].shape))
    return b


def graph_shapes(S, g, x_shape):
    """{(node name, output index): per-row shape} for every value, x as ("x", 0)."""
    shapes = {("x", 0): tuple(x_shape)}
    for nd in g["nodes"]:
        b, name = nd["block"], nd["name"]
        ins = [shapes[tuple(r)] for r in nd["inputs"]]
        dim = int(b.get("dim", 0))
        if b["type"] == "Split":
            for k, sz in enumerate(split_sections(b, ins[0][dim])):
                shapes[(name, k)] = ins[0][:dim] + (sz,) + ins[0][dim + 1:]
        elif b["type"] == "Concat":
            shapes[(name, 0)] = ins[0][:dim] + (sum(s[dim] for s in ins),) + ins[0][dim + 1:]
        else:
            shapes[(name, 0)] = tuple(out_shape(_shaped(S, b), ins[0]))
    return shapes


def graph(S, g, x, conds, rev, x_shape, visit=None):
    """Run graph g on rows x (flat, (n, d)): forward from x to z (the outputs flattened and
    concatenated in order), or inverse from z.  visit(nd, b, h, c, shape) may replace the
    forward of a block node (the exporter checks each module there); it returns (out, ld).
    -> (result, log_det)."""
    n = x.shape[0]
    shapes = graph_shapes(S, g, x_shape)
    ld = torch.zeros(n, dtype=F64)
    key = lambda r: (r[0], int(r[1]))  # noqa: E731
    if not rev:
        vals = {("x", 0): x}
        for nd in g["nodes"]:
            b, name, ins = nd["block"], nd["name"], [key(r) for r in nd["inputs"]]
            dim = int(b.get("dim", 0))
            if b["type"] == "Split":
                sh = shapes[ins[0]]
                parts = torch.split(vals.pop(ins[0]).reshape(n, *sh),
                                    split_sections(b, sh[dim]), dim + 1)
                for k, p in enumerate(parts):
                    vals[(name, k)] = p.reshape(n, -1)
            elif b["type"] == "Concat":
                hs = [vals.pop(i).reshape(n, *shapes[i]) for i in ins]
                vals[(name, 0)] = torch.cat(hs, dim + 1).reshape(n, -1)
            else:
                h, c = vals.pop(ins[0]), block_cond(conds, b)
                if visit is not None:
                    out, l = visit(nd, b, h, c, shapes[ins[0]])
                else:
                    out, l = block(S, _shaped(S, b), h, c, False, shapes[ins[0]])
                vals[(name, 0)] = out
                ld = ld + l
        return torch.cat([vals[key(o)] for o in g["outputs"]], 1), ld
    vals, i = {}, 0
    for o in g["outputs"]:
        w = int(math.prod(shapes[key(o)]))
        vals[key(o)] = x[:, i:i + w]
        i += w
    for nd in reversed(g["nodes"]):
        b, name, ins = nd["block"], nd["name"], [key(r) for r in nd["inputs"]]
        dim = int(b.get("dim", 0))
        if b["type"] == "Split":
            k = len(split_sections(b, shapes[ins[0]][dim]))
            hs = [vals.pop((name, j)).reshape(n, *shapes[(name, j)]) for j in range(k)]
            vals[ins[0]] = torch.cat(hs, dim + 1).reshape(n, -1)
        elif b["type"] == "Concat":
            parts = torch.split(vals.pop((name, 0)).reshape(n, *shapes[(name, 0)]),
                                [shapes[r][dim] for r in ins], dim + 1)
            for r, p in zip(ins, parts):
                vals[r] = p.reshape(n, -1)
        else:
            out, l = block(S, _shaped(S, b), vals.pop((name, 0)), block_cond(conds, b), True,
                           shapes[ins[0]])
            vals[ins[0]] = out
            ld = ld + l
    return vals[("x", 0)], ld


# ---------------------------------------------------------------------------------------
# whole models
# ---------------------------------------------------------------------------------------

def x_width(model):
    return model.dx


class Model:
    """Evaluate a manifest (dict) over stored tensors: forward, inverse, log_prob."""

    def __init__(self, manifest, tensors):
        self.m = manifest
        self.S = Store(tensors)
        d = manifest["dims"]
        k = manifest["kind"]
        self.kind = k
        self.dx, self.dy = d["x"], d.get("y", 0)
        if k == "inn":
            self.dz, self.px, self.py = d["z"], d.get("pad_x", 0), d.get("pad_y", 0)
        else:
            self.dz, self.px, self.py = (0 if k == "mlp" else d["x"]), 0, 0

    # standardization
    def _std(self, which):
        s = self.m.get("standardize", {}).get(which)
        if not s:
            return None
        return self.S.T(s["mean"]).reshape(-1), self.S.T(s["std"]).reshape(-1)

    def std_x(self, x):
        s = self._std("x")
        if s is None:
            return x, torch.zeros(x.shape[0], dtype=F64)
        return (x - s[0]) / s[1], -torch.log(s[1]).sum().expand(x.shape[0])

    def unstd_x(self, xs):
        s = self._std("x")
        if s is None:
            return xs, torch.zeros(xs.shape[0], dtype=F64)
        return xs * s[1] + s[0], torch.log(s[1]).sum().expand(xs.shape[0])

    def std_y(self, y):
        s = self._std("y")
        return y if s is None else (y - s[0]) / s[1]

    def unstd_y(self, ys):
        s = self._std("y")
        return ys if s is None else ys * s[1] + s[0]

    def conditions(self, y):
        if self.kind != "cinn":
            return []
        ys = self.std_y(y)
        out = []
        for cd in self.m.get("conditions", []):
            v = ys if cd.get("net") is None else subnet(self.S, cd["net"], ys)
            if cd.get("broadcast"):       # the vector at every position, channel-major
                P = int(math.prod(cd["broadcast"]))
                v = v[:, :, None].expand(-1, -1, P).reshape(v.shape[0], -1)
            out.append(v)
        return out

    def shapes(self):
        """The per-row input shape of every block (manifest "shape", then each block's)."""
        shape = tuple(self.m.get("shape", {}).get("x") or (x_width(self),))
        out = []
        for b in self.m["blocks"]:
            if b["type"] == "InvAutoConv2D":
                b = dict(b, _shape_w=list(self.S.t[b["weight"]].shape))
            out.append(shape)
            shape = out_shape(b, shape)
        return out

    def blocks(self, x, conds, rev, upto=None):
        if "graph" in self.m:
            shape = tuple(self.m.get("shape", {}).get("x") or (x.shape[1],))
            if self.kind == "inn":
                shape = (x.shape[1],)
            return graph(self.S, self.m["graph"], x, conds, rev, shape)
        ld = torch.zeros(x.shape[0], dtype=F64)
        shapes = self.shapes() if self.kind != "inn" else [None] * len(self.m["blocks"])
        seq = list(enumerate(self.m["blocks"]))
        if upto is not None:
            seq = seq[:upto]
        for i, b in (reversed(seq) if rev else seq):
            x, l = block(self.S, b, x, block_cond(conds, b), rev, shapes[i])
            ld = ld + l
        return x, ld

    # inn layout
    def _widths(self, side):
        if side == "input":
            return {"x": self.dx, "pad": self.px}
        return {"z": self.dz, "pad": self.py, "y": self.dy}

    def _layout(self, side):
        lay = self.m.get("layout", {})
        default = ["x", "pad"] if side == "input" else ["z", "pad", "y"]
        return lay.get(side, default)

    def assemble(self, side, parts, n):
        w = self._widths(side)
        cols = []
        for name in self._layout(side):
            v = parts.get(name)
            cols.append(torch.zeros(n, w[name], dtype=F64) if v is None else v)
        return torch.cat(cols, 1)

    def split(self, side, row):
        w = self._widths(side)
        out, i = {}, 0
        for name in self._layout(side):
            out[name] = row[:, i:i + w[name]]
            i += w[name]
        for name in w:
            out.setdefault(name, row[:, :0])
        return out

    def forward(self, x, y=None):
        """x physical (n, dx) -> dict with z, log_det (flow/cinn/inn), y_out (inn/mlp), pad, y_s."""
        xs, ld0 = self.std_x(x)
        if self.kind == "mlp":
            return {"y_out": self.unstd_y(subnet(self.S, self.m["network"], xs))}
        if self.kind in ("flow", "cinn"):
            z, ld = self.blocks(xs, self.conditions(y), False)
            return {"z": z, "log_det": ld + ld0}
        row = self.assemble("input", {"x": xs}, x.shape[0])
        out, ld = self.blocks(row, [], False)
        p = self.split("output", out)
        return {"z": p["z"], "pad": p["pad"], "y_s": p["y"], "y_out": self.unstd_y(p["y"]),
                "log_det": ld + ld0}

    def inverse(self, z, y=None, pad=None):
        if self.kind in ("flow", "cinn"):
            xs, ld = self.blocks(z, self.conditions(y), True)
        else:
            row = self.assemble("output", {"z": z, "pad": pad, "y": self.std_y(y)}, z.shape[0])
            r, ld = self.blocks(row, [], True)
            xs = self.split("input", r)["x"]
        x, ld0 = self.unstd_x(xs)
        return x, ld + ld0

    def log_prob(self, x, y=None):
        f = self.forward(x, y)
        z = f["z"]
        lp = -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * LOG2PI + f["log_det"]
        if self.kind == "inn":
            cfg = self.m.get("inn", {})
            sy, sp = cfg.get("sigma_y", 0.1), cfg.get("sigma_pad", 0.05)

            def lognorm(v, s):
                return -0.5 * (v ** 2).sum(1) / s ** 2 - v.shape[1] * (0.5 * LOG2PI + math.log(s))
            lp = lp + lognorm(f["pad"], sp) + lognorm(f["y_s"] - self.std_y(y), sy)
        return lp
