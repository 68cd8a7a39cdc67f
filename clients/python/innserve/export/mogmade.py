"""innserve.export.mogmade: export sbi's ``made`` density estimator (``posterior_nn("made")``:
an NFlowsFlow whose distribution is sbi's MADEMoGWrapper around nflows'
MixtureOfGaussiansMADE) as an innserve ``mdn`` checkpoint with a mixture of type ``made``;
:func:`innserve.export.export_sbi` hands such estimators here.

What is read: the flow's ``_transform`` (IdentityTransform, or sbi's PointwiseAffineTransform
z-scoring of theta -> ``standardize.x``), its ``_embedding_net`` (sbi's Standardize ->
``standardize.y``, then an optional MLP -> ``mixture.net``) and the MADE
(``_distribution._made``): ``initial_layer`` (masked, D + 1 inputs: sbi's wrapper puts a
zero before theta), ``context_layer``, residual ``blocks`` (``linear_layers`` 0 and 1,
masked, and their ``context_layer``), ``final_layer`` (masked, (D + 1) * 3K outputs: logit,
mean, unconstrained std per feature and component), ``epsilon`` and the activation (relu
or tanh).  Feed-forward blocks, random masks and batch norm are refused.

sbi's own sampler (MixtureOfGaussiansMADE.sample on the wrapper's D + 1 features) draws the
leading feature too and feeds it back, while its log_prob holds it at 0; the exported model
samples the density log_prob evaluates (the leading input held at 0 in both).

Before writing, the exported math (float64, on the stored float32 tensors) is compared with
the real modules run in float64: the context, every layer of the MADE, the final outputs,
the estimator's log_prob (and the posterior's, prior box included) and a sequential draw
given its uniforms and normals against one made with the module's own forward.
"""

import collections
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _reference as ref
from .._version import __version__
from .common import F64, ExportError, _Ctx, _cls, _names_mro, _version
from .common import _close as _close_flat
from .manifest import (_add_names, _check_log_prob, _given_box, _mask_prior, _mixture_finish,
                       _manifest_head, _mixture_standardize)

LOG2PI = math.log(2.0 * math.pi)


def is_mogmade(obj):
    """An sbi ``made`` estimator (NFlowsFlow) or its nflows Flow."""
    if "NFlowsFlow" in _names_mro(obj):
        obj = obj.net
    return _cls(getattr(obj, "_distribution", None)) in ("MADEMoGWrapper", "MADEMoG")


# ---------------------------------------------------------------------------------------
# the manifest's math in float64 (docs/checkpoint-format.md, "Mixture (made)")
# ---------------------------------------------------------------------------------------

def _act(mx, v):
    return torch.tanh(v) if mx.get("activation", "relu") == "tanh" else torch.relu(v)


def _lin(S, L, v, masked=False):
    W = S.T(L["weight"])
    if masked:
        W = W * S.T(L["mask"])
    o = v @ W.T
    return o + S.T(L["bias"]).reshape(-1) if L.get("bias") else o


def context(manifest, tensors, y):
    """The MADE's context (n, C) for physical y: the net of standardized y, or y_s."""
    S = ref.Store(tensors)
    mx = manifest["mixture"]
    s = manifest.get("standardize", {}).get("y")
    ys = y if not s else (y - S.T(s["mean"]).reshape(-1)) / S.T(s["std"]).reshape(-1)
    return ref.subnet(S, mx["net"], ys) if mx.get("net") else ys


def layers(manifest, tensors, u, c):
    """-> [trunk after the initial layer, after each block..., final outputs (n, F*3K)]
    for inputs u (n, D + 1) and context c."""
    S = ref.Store(tensors)
    mx = manifest["mixture"]
    t = _lin(S, mx["initial"], u, True) + _lin(S, mx["context"], c)
    out = [t]
    for b in mx["blocks"]:
        v = _lin(S, b["linear0"], _act(mx, t), True) + _lin(S, b["context"], c)
        t = t + _lin(S, b["linear1"], _act(mx, v), True)
        out.append(t)
    out.append(_lin(S, mx["final"], t, True))
    return out


def _params(manifest, o, n):
    """Final outputs -> log weights, means, stds (n, D, K) of features 1..D."""
    mx = manifest["mixture"]
    K, D = mx["components"], manifest["dims"]["x"]
    o = o.reshape(n, D + 1, K, 3)[:, 1:]
    logw = torch.log_softmax(o[..., 0], -1)
    return logw, o[..., 1], F.softplus(o[..., 2]) + mx.get("epsilon", 1e-2)


def _xs(manifest, tensors, x):
    s = manifest.get("standardize", {}).get("x")
    if not s:
        return x, 0.0
    S = ref.Store(tensors)
    m, sd = S.T(s["mean"]).reshape(-1), S.T(s["std"]).reshape(-1)
    return (x - m) / sd, -torch.log(sd).sum()


def log_prob(manifest, tensors, x, y):
    """log q(x | y) (n,) in physical units; -inf outside the manifest's prior box."""
    xs, ld = _xs(manifest, tensors, x)
    n = x.shape[0]
    c = context(manifest, tensors, y)
    u = torch.cat([torch.zeros(n, 1, dtype=F64), xs], 1)
    logw, mu, sd = _params(manifest, layers(manifest, tensors, u, c)[-1], n)
    z = (xs[..., None] - mu) / sd
    lp = torch.logsumexp(logw - 0.5 * (LOG2PI + 2 * torch.log(sd) + z * z), -1).sum(-1) + ld
    return _mask_prior(manifest, x, lp)


def _pick(logw, u):
    """Component of each row from its log weights (n, K) and uniform u (n,): the first k
    with u * sum_k w_k < cumulative w (the engine's rule)."""
    w = torch.exp(logw)
    cum = torch.cumsum(w, -1)
    t = (u * cum[:, -1])[:, None]
    k = (t >= cum).sum(-1)
    return torch.clamp(k, max=logw.shape[1] - 1)


def draw(manifest, tensors, y, u, e, forward=None):
    """x (n, D) physical: D passes, dimension d's component from u[:, d], then
    mean + std * e[:, d].  forward(u_in, c) -> final outputs replaces the manifest's math
    when given (the check against the real module)."""
    mx = manifest["mixture"]
    K, D = mx["components"], manifest["dims"]["x"]
    n = y.shape[0]
    c = context(manifest, tensors, y)
    inp = torch.zeros(n, D + 1, dtype=F64)
    rows = torch.arange(n)
    for d in range(D):
        o = forward(inp, c) if forward else layers(manifest, tensors, inp, c)[-1]
        o = o.reshape(n, D + 1, K, 3)[:, d + 1]
        logw = torch.log_softmax(o[..., 0], -1)
        sd = F.softplus(o[..., 2]) + mx.get("epsilon", 1e-2)
        k = _pick(logw, u[:, d])
        inp = inp.clone()
        inp[:, d + 1] = o[rows, k, 1] + sd[rows, k] * e[:, d]
    xs = inp[:, 1:]
    s = manifest.get("standardize", {}).get("x")
    if s:
        S = ref.Store(tensors)
        xs = xs * S.T(s["std"]).reshape(-1) + S.T(s["mean"]).reshape(-1)
    return xs


# ---------------------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------------------

def _masked(ctx, mod, name):
    o = {"weight": ctx.add(name + ".weight", mod.weight.detach().float(), torch.float32),
         "mask": ctx.add(name + ".mask", mod.mask.detach().float(), torch.float32)}
    if mod.bias is not None:
        o["bias"] = ctx.add(name + ".bias", mod.bias.detach().float(), torch.float32)
    return o


def _plain(ctx, mod, name):
    o = {"weight": ctx.add(name + ".weight", mod.weight.detach().float(), torch.float32)}
    if mod.bias is not None:
        o["bias"] = ctx.add(name + ".bias", mod.bias.detach().float(), torch.float32)
    return o


def _activation(made):
    acts = {getattr(b, "activation", None) for b in made.blocks}
    if not acts:
        return "relu"
    if len(acts) == 1:
        a = acts.pop()
        if a in (F.relu, torch.relu):
            return "relu"
        if a in (torch.tanh, F.tanh):
            return "tanh"
    raise ExportError("_distribution._made: activation %s is not supported yet (relu or tanh "
                      "are)" % ", ".join(getattr(a, "__name__", repr(a)) for a in acts))


def _std_x(tr):
    """sbi's z-scoring of theta from the flow's transform -> (mean, std) or None."""
    ts = [tr]
    flat = []
    while ts:
        t = ts.pop(0)
        if _cls(t) == "CompositeTransform":
            ts = list(t._transforms) + ts
        elif _cls(t) != "IdentityTransform":
            flat.append(t)
    if not flat:
        return None
    if len(flat) > 1 or _cls(flat[0]) != "PointwiseAffineTransform":
        raise ExportError("_transform: %s is not supported yet with a made estimator (sbi's "
                          "PointwiseAffineTransform z-scoring is)" % _cls(flat[-1]))
    t = flat[0]
    shift = t._shift.detach().cpu().to(F64).reshape(-1)
    scale = t._scale.detach().cpu().to(F64).reshape(-1)
    if bool((scale <= 0).any()):
        raise ExportError("_transform: a PointwiseAffineTransform scale <= 0 is not supported")
    return -shift / scale, 1.0 / scale


def export_mogmade(obj, path, *, low=None, high=None, x_names=None, y_names=None,
                   description=None, test_inputs=None, n_tests=8, seed=0, rtol=1e-5, atol=1e-5,
                   check=True, check_tol=1e-9, source=None):
    """Write an sbi ``made`` posterior (DirectPosterior) or estimator (NFlowsFlow, or its
    nflows Flow) as an innserve ``mdn`` checkpoint; see :func:`export_sbi`."""
    from .mdn import _posterior
    from .sbi import _embedding
    what = _cls(obj)
    obj, post, prior_box = _posterior(obj)
    est = obj
    flow = obj.net if "NFlowsFlow" in _names_mro(obj) else obj
    if not is_mogmade(flow):
        raise ExportError("density estimator: %s is not sbi's made" % _cls(obj))
    if _cls(flow._distribution) != "MADEMoGWrapper":
        raise ExportError("_distribution: %s is not supported yet (sbi's MADEMoGWrapper, with "
                          "its leading zero input, is)" % _cls(flow._distribution))
    prior_box = _given_box(prior_box, low, high)
    made = flow._distribution._made
    K, Fe = int(made.num_mixture_components), int(made.features)
    dx, H = Fe - 1, int(made.hidden_features)
    for i, b in enumerate(made.blocks):
        if _cls(b) != "MaskedResidualBlock":
            raise ExportError("_distribution._made.blocks.%d: %s is not supported yet (sbi's "
                              "made uses MaskedResidualBlock)" % (i, _cls(b)))
        if getattr(b, "use_batch_norm", False):
            raise ExportError("_distribution._made.blocks.%d: batch norm is not supported yet"
                              % i)
        if not hasattr(b, "context_layer"):
            raise ExportError("_distribution._made.blocks.%d: a block without a context layer "
                              "is not supported" % i)
    if not hasattr(made, "context_layer"):
        raise ExportError("_distribution._made: a MADE without a context is not supported")
    act = _activation(made)
    C = int(made.context_layer.in_features)
    ctx = _Ctx.sbi(check_tol)
    emb = getattr(flow, "_embedding_net", None)
    dy = C
    for mod in (emb.modules() if emb is not None else []):
        if _cls(mod) == "Standardize" and mod._mean.numel() > 1:
            dy = int(mod._mean.numel())
            break
        if isinstance(mod, nn.Linear):
            dy = int(mod.in_features)
            break
    std_y, net, emb_mod = _embedding(ctx, flow, dy)
    std_x = _std_x(flow._transform)

    src = {"framework": "sbi", "exporter": "innserve %s" % __version__,
           "torch": torch.__version__, "sbi": _version("sbi"), "nflows": _version("nflows"),
           "object": what}
    manifest = _manifest_head("mdn", str(description or "sbi %s (made: MoG-MADE) exported by "
                                     "innserve" % what), src, source,
                              {"x": dx, "y": dy})
    _add_names(manifest, x_names, y_names, dx, dy)
    stdm = {}
    if std_x is not None:
        m, sd = (v.expand(dx).clone() for v in std_x)
        stdm["x"] = {"mean": ctx.add("net._transform.mean", m, torch.float32),
                     "std": ctx.add("net._transform.std", sd, torch.float32)}
    if std_y is not None:
        stdm["y"] = {"mean": ctx.add("net._embedding_net.0._mean", std_y[0], torch.float32),
                     "std": ctx.add("net._embedding_net.0._std", std_y[1], torch.float32)}
    stdv = _mixture_standardize(ctx, manifest, stdm, prior_box, dx)
    pre = "net._distribution._made."
    mix = collections.OrderedDict()
    mix["type"] = "made"
    mix["components"] = K
    mix["epsilon"] = float(made.epsilon)
    mix["activation"] = act
    mix["hidden"] = H
    if net is not None:
        mix["net"] = net
    mix["initial"] = _masked(ctx, made.initial_layer, pre + "initial_layer")
    mix["context"] = _plain(ctx, made.context_layer, pre + "context_layer")
    mix["blocks"] = [{"linear0": _masked(ctx, b.linear_layers[0],
                                         pre + "blocks.%d.linear_layers.0" % i),
                      "linear1": _masked(ctx, b.linear_layers[1],
                                         pre + "blocks.%d.linear_layers.1" % i),
                      "context": _plain(ctx, b.context_layer, pre + "blocks.%d.context_layer" % i)}
                     for i, b in enumerate(made.blocks)]
    mix["final"] = _masked(ctx, made.final_layer, pre + "final_layer")
    manifest["mixture"] = mix


    def checker(x, y):
        _check(manifest, ctx.tensors, est, flow, emb_mod, post, x, y, max(check_tol, 1e-6))
    return _mixture_finish(path, ctx, manifest, log_prob, checker if check else None, prior_box,
                           stdv, test_inputs, n_tests, seed, rtol, atol)


def _close(a, b, tol):
    return _close_flat(a, b.reshape(a.shape), tol)


def _check(manifest, tensors, est, flow, emb_mod, post, x, y, tol):
    """The exported math against the real modules in float64, layer by layer."""
    f64 = copy.deepcopy(flow).to(F64).eval()
    made = f64._distribution._made
    with torch.no_grad():
        c_mod = f64._embedding_net(y)
    c = context(manifest, tensors, y)
    if not _close(c, c_mod, tol):
        raise ExportError("mixture.net: the exported context does not reproduce the embedding "
                          "net (max difference %.3g)" % float((c - c_mod.reshape(c.shape))
                                                              .abs().max()))
    xs, _ = _xs(manifest, tensors, x)
    with torch.no_grad():
        xs_mod, _ = f64._transform(x)
    if not _close(xs, xs_mod, tol):
        raise ExportError("standardize.x: does not reproduce the flow's z-scoring of theta")
    u = torch.cat([torch.zeros(x.shape[0], 1, dtype=F64), xs], 1)
    mine = layers(manifest, tensors, u, c)
    with torch.no_grad():
        t = made.initial_layer(u) + made.context_layer(c_mod)
        want = [t]
        for b in made.blocks:
            t = b(t, context=c_mod)
            want.append(t)
        want.append(made.final_layer(t))
    names = ["initial_layer"] + ["blocks.%d" % i for i in range(len(made.blocks))] + \
        ["final_layer"]
    for a, b, nm in zip(mine, want, names):
        if not _close(a, b, tol):
            raise ExportError("mixture: the exported %s does not reproduce the MADE's (max "
                              "difference %.3g)" % (nm, float((a - b).abs().max())))
    lp = log_prob(manifest, tensors, x, y)
    e64 = copy.deepcopy(est).to(F64).eval()
    with torch.no_grad():
        want = e64.log_prob(x, condition=y) if hasattr(e64, "condition_shape") else \
            e64.log_prob(x, context=y)
    _check_log_prob(manifest, x, lp, want.reshape(-1), tol)
    gen = torch.Generator().manual_seed(1)
    n, D = x.shape
    uu = torch.rand(n, D, generator=gen, dtype=F64)
    e = torch.randn(n, D, generator=gen, dtype=F64)
    got = draw(manifest, tensors, y, uu, e)
    ref_x = draw(manifest, tensors, y, uu, e,
                 forward=lambda i, _c: made.forward(i, context=c_mod).detach())
    if not _close(got, ref_x, tol):
        raise ExportError("sample: the exported sequential draw does not reproduce the MADE's "
                          "(max difference %.3g)" % float((got - ref_x).abs().max()))


# ---------------------------------------------------------------------------------------
# export_sbi_state_dict: the estimator rebuilt from its state_dict
# ---------------------------------------------------------------------------------------

class MaskedLinear(nn.Linear):
    """nflows' MaskedLinear: weight * mask."""

    def __init__(self, lin):
        super().__init__(lin.weight.shape[1], lin.weight.shape[0], bias=lin.bias is not None)
        with torch.no_grad():
            self.weight.copy_(lin.weight)
            if lin.bias is not None:
                self.bias.copy_(lin.bias)
        self.register_buffer("mask", lin.mask.clone())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MaskedResidualBlock(nn.Module):
    """nflows' MaskedResidualBlock (no batch norm, no dropout)."""

    def __init__(self, l0, l1, ctx):
        super().__init__()
        self.linear_layers = nn.ModuleList([l0, l1])
        self.context_layer = ctx
        self.activation = F.relu

    def forward(self, inputs, context=None):
        t = self.linear_layers[0](self.activation(inputs)) + self.context_layer(context)
        return inputs + self.linear_layers[1](self.activation(t))


class MixtureOfGaussiansMADE(nn.Module):
    """nflows' MixtureOfGaussiansMADE (residual blocks, relu): forward only."""

    def __init__(self, features, hidden, K, epsilon, initial, ctx, blocks, final):
        super().__init__()
        self.features, self.hidden_features = features, hidden
        self.num_mixture_components, self.epsilon = K, epsilon
        self.initial_layer, self.context_layer = initial, ctx
        self.blocks, self.final_layer = nn.ModuleList(blocks), final

    def forward(self, inputs, context=None):
        t = self.initial_layer(inputs) + self.context_layer(context)
        for b in self.blocks:
            t = b(t, context)
        return self.final_layer(t)


class MADEMoGWrapper(nn.Module):
    """sbi's MADEMoGWrapper: log_prob with the leading zero input."""

    def __init__(self, made):
        super().__init__()
        self._made = made

    def log_prob(self, inputs, context):
        m = self._made
        u = torch.cat([torch.zeros(inputs.shape[0], 1, dtype=inputs.dtype), inputs], -1)
        o = m.forward(u, context).reshape(*u.shape, m.num_mixture_components, 3)[:, 1:]
        sd = F.softplus(o[..., 2]) + m.epsilon
        return torch.logsumexp(torch.log_softmax(o[..., 0], -1) - 0.5 * (
            LOG2PI + 2 * torch.log(sd) + ((inputs[..., None] - o[..., 1]) / sd) ** 2),
            -1).sum(-1)


class PointwiseAffineTransform(nn.Module):
    """nflows' PointwiseAffineTransform: x * scale + shift, log-det sum log scale."""

    def __init__(self, shift, scale):
        super().__init__()
        self.register_buffer("_shift", shift.clone())
        self.register_buffer("_scale", scale.clone())

    def forward(self, x):
        return x * self._scale + self._shift, torch.log(self._scale).sum().expand(x.shape[0])


class Flow(nn.Module):
    """nflows' Flow over a MADEMoGWrapper."""

    def __init__(self, transform, dist, emb):
        super().__init__()
        self._transform, self._distribution, self._embedding_net = transform, dist, emb

    def log_prob(self, inputs, context):
        xs, ld = self._transform(inputs)
        return self._distribution.log_prob(xs, self._embedding_net(context)) + ld


_SD_KNOWN = {"estimator", "hidden_features", "num_mixture_components", "num_blocks",
             "z_score_x", "z_score_y", "embedding", "prefix", "x_dim", "y_dim", "low", "high",
             "sbi_version", "nflows_version"}


def export_state_dict(state_dict, config, path, *, low=None, high=None, **kw):
    """export_sbi_state_dict for ``estimator: "made"``: the config's hidden_features,
    num_mixture_components and num_blocks (sbi: 50, 10, 5) are checked against the tensors
    (read from them when absent); z_score_x, z_score_y, embedding, prefix as for the flows."""
    from . import statedict as sdm
    unknown = sorted(set(config) - _SD_KNOWN)
    if unknown:
        raise ExportError("config: unknown key %r (known for made: %s)"
                          % (unknown[0], ", ".join(sorted(_SD_KNOWN))))
    cfg = {"z_score_x": True, "z_score_y": True, "embedding": None, "prefix": ""}
    cfg.update(config)
    prefix = str(cfg["prefix"])
    legacy = not any(k.startswith(prefix + "net.") for k in state_dict) and \
        any(k.startswith(prefix + "_distribution.") for k in state_dict)
    keys = sdm._Keys(state_dict, prefix + ("" if legacy else "net."), "made")
    pre = "_distribution._made."
    w0 = keys.get(pre + "initial_layer.weight", why="the MADE's first layer")
    H, Fe = (int(v) for v in w0.shape)
    for k, v in (("hidden_features", H), ("x_dim", Fe - 1)):
        if k in config and int(config[k]) != v:
            raise ExportError("config %s: %s, but key %r gives %d" % (
                k, config[k], keys.prefix + pre + "initial_layer.weight", v))
    wf = keys.get(pre + "final_layer.weight", why="the MADE's output layer")
    if wf.shape[0] % (3 * Fe) or wf.shape[1] != H:
        raise ExportError("state_dict: key %r has shape %s, not ((D + 1) * 3K, %d)"
                          % (keys.prefix + pre + "final_layer.weight", tuple(wf.shape), H))
    K = int(wf.shape[0]) // (3 * Fe)
    if "num_mixture_components" in config and int(config["num_mixture_components"]) != K:
        raise ExportError("config num_mixture_components: %s, but key %r gives %d" % (
            config["num_mixture_components"], keys.prefix + pre + "final_layer.weight", K))
    nb = len(keys.indices(pre + "blocks."))
    if "num_blocks" in config and int(config["num_blocks"]) != nb:
        raise ExportError("config num_blocks: %s, but the state_dict holds %d blocks"
                          % (config["num_blocks"], nb))
    cw = int(keys.get(pre + "context_layer.weight").shape[1])
    din = torch.arange(1, Fe + 1)
    dh = torch.arange(H) % max(1, Fe - 1) + min(1, Fe - 1)
    dfin = din.repeat_interleave(3 * K)
    lin = lambda p, o, i: sdm._torch_linear(keys.get(p + "weight", (o, i)),  # noqa: E731
                                            keys.get(p + "bias", (o,)))
    initial = MaskedLinear(sdm._masked(keys, pre + "initial_layer.", (H, Fe), dh, din, False))
    blocks = []
    for j in range(nb):
        bp = pre + "blocks.%d." % j
        blocks.append(MaskedResidualBlock(
            MaskedLinear(sdm._masked(keys, bp + "linear_layers.0.", (H, H), dh, dh, False)),
            MaskedLinear(sdm._masked(keys, bp + "linear_layers.1.", (H, H), dh, dh, False)),
            lin(bp + "context_layer.", H, cw)))
    final = MaskedLinear(sdm._masked(keys, pre + "final_layer.", (Fe * 3 * K, H), dfin, dh,
                                     True))
    made = MixtureOfGaussiansMADE(Fe, H, K, 1e-2, initial, lin(pre + "context_layer.", H, cw),
                                  blocks, final)
    emb, _ = sdm._embedding(keys, cfg, "_embedding_net.", cw)
    if cfg["z_score_x"]:
        a = sdm._pointwise_affine(keys, "_transform._transforms.0.", Fe - 1)
        tr = PointwiseAffineTransform(a._shift, a._scale)
    else:
        tr = PointwiseAffineTransform(torch.zeros(Fe - 1), torch.ones(Fe - 1))
    keys.finish()
    flow = Flow(tr, MADEMoGWrapper(made), emb if emb is not None else nn.Identity())
    lo = low if low is not None else cfg.get("low")
    hi = high if high is not None else cfg.get("high")
    src = dict(kw.pop("source", None) or {})
    for k in ("sbi_version", "nflows_version"):
        if cfg.get(k):
            src.setdefault(k.split("_")[0], cfg[k])
    return export_mogmade(flow, path, low=lo, high=hi, source=src or None, **kw)
