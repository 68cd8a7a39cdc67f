"""Export an sbi posterior (or its nflows density estimator) as an innserve checkpoint.

    from innserve.export import export_sbi
    export_sbi(posterior, "npe.safetensors", x_names=[...], y_names=[...])

What is supported today: sbi's ``maf`` (the NPE default), ``nsf``, ``maf_rqs``, ``zuko_maf``
and ``zuko_nsf`` estimators, i.e. an ``NFlowsFlow`` (or a bare nflows ``Flow``) whose transform
is a CompositeTransform of

* an optional first ``PointwiseAffineTransform`` (sbi's z-scoring of theta) -> the manifest's
  ``standardize.x`` (mean = -shift/scale, std = 1/scale; its log-det -sum log std is the
  engine's);
* ``MaskedAffineAutoregressiveTransform`` (MADE with sequential degrees, tanh or relu,
  feed-forward or residual blocks, no batch norm) -> ``MaskedAffineAutoregressive``;
  ``InverseTransform`` of one -> the same with ``inverse: true`` (IAF);
* ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` (linear tails) ->
  ``MaskedRQSAutoregressive``;
* ``PiecewiseRationalQuadraticCouplingTransform`` (linear tails, a ``ResidualNet`` or sbi's
  ``ContextSplineMap`` conditioner) -> ``RQSCoupling``; ``LULinear`` -> ``LULinear``;
* ``RandomPermutation`` / ``ReversePermutation`` -> ``PermuteRandom``;

with a ``StandardNormal`` base; or a ``ZukoFlow`` (or a bare zuko ``Flow``) whose transforms
are an optional first ``UnconditionalTransform`` of an ``AffineTransform`` (sbi's z-scoring)
and zuko ``MaskedAutoregressiveTransform`` / ``ElementWiseTransform`` with
``MonotonicAffineTransform`` (MAF) or ``MonotonicRQSTransform`` (NSF) ->
``ZukoMaskedAutoregressive``, over a standard normal base.  zuko does not store its ``slope``:
it is the univariate constructor's ``slope=`` keyword when one was given, else zuko's
default for the installed version (:func:`default_slope`).  The embedding net is ``Identity``,
sbi's ``Standardize`` (-> ``standardize.y``), an ``nn.Sequential`` of Linear layers and
activations or sbi's ``FCEmbedding`` (-> the cinn's condition network), or ``Standardize``
followed by one of those.  The prior is a ``BoxUniform`` (a DirectPosterior carries it) or
bounds given as ``low=`` and ``high=`` -> the manifest's ``prior`` box.

sbi's mixture density networks (``mdn``: a MixtureDensityEstimator, or a posterior holding
one) are exported by innserve._sbi_mdn as the ``mdn`` kind.

Everything else (other zuko flows or univariate maps, other nflows layers, other
embedding nets, other priors) is refused with an :class:`~innserve.export.ExportError` naming
the module: "not supported yet".

Before writing, every block is run through innserve's float64 reference math
(innserve._reference) on the stored (float32-rounded) tensors and compared with the real
nflows or zuko module run in float64 on the same input; the whole chain's log_prob and inverse are
compared with the estimator's too.  The embedded test vectors are the reference math's, and
the library versions (sbi, nflows or zuko, torch) are recorded in ``source``.
"""

import collections
import copy
import json

import torch
import torch.nn as nn

from . import _reference as ref
from . import export as _ex
from ._version import __version__

F64 = torch.float64
ExportError = _ex.ExportError
_SUPPORTED = ("PointwiseAffineTransform", "MaskedAffineAutoregressiveTransform",
              "MaskedPiecewiseRationalQuadraticAutoregressiveTransform",
              "PiecewiseRationalQuadraticCouplingTransform", "LULinear",
              "RandomPermutation", "ReversePermutation", "Permutation")
_PERMS = ("RandomPermutation", "ReversePermutation", "Permutation")


def _cls(obj):
    return type(obj).__name__


def _names_mro(obj):
    return [k.__name__ for k in type(obj).__mro__]


def _refuse(what, obj):
    raise ExportError("%s: %s is not supported yet (innserve exports sbi's maf, nsf and "
                      "maf_rqs (nflows MaskedAffineAutoregressiveTransform, "
                      "PiecewiseRationalQuadraticCouplingTransform, "
                      "MaskedPiecewiseRationalQuadraticAutoregressiveTransform, LULinear, "
                      "RandomPermutation with a StandardNormal base) and zuko_maf / zuko_nsf "
                      "(zuko MaskedAutoregressiveTransform)" % (what, _cls(obj)))


def _version(modname):
    try:
        mod = __import__(modname)
    except Exception:  # noqa: BLE001 - any import failure means "unknown"
        return None
    v = getattr(mod, "__version__", None)
    if v is None:   # nflows keeps it in nflows.version
        try:
            v = __import__(modname + ".version", fromlist=["__version__"]).__version__
        except Exception:  # noqa: BLE001
            v = "unknown"
    return str(v)


# ---------------------------------------------------------------------------------------
# the objects: posterior -> estimator -> nflows Flow
# ---------------------------------------------------------------------------------------

def _box(prior):
    """(low, high) float64 of a BoxUniform-like prior, or an ExportError."""
    base = getattr(prior, "base_dist", None)
    lo = getattr(base, "low", None)
    hi = getattr(base, "high", None)
    if lo is None or hi is None or _cls(base) != "Uniform":
        raise ExportError("prior: %s is not supported yet (a box prior, sbi's BoxUniform, is; "
                          "or export the estimator with low= and high=)" % _cls(prior))
    return lo.detach().cpu().to(F64).reshape(-1), hi.detach().cpu().to(F64).reshape(-1)


def _resolve(obj):
    """-> (nflows Flow, prior box or None, what it was)."""
    prior = None
    what = _cls(obj)
    if hasattr(obj, "posterior_estimator") and hasattr(obj, "prior"):
        if _cls(obj) != "DirectPosterior":
            raise ExportError("%s is not supported yet: export a DirectPosterior (sbi's NPE "
                              "posterior) or its density estimator" % _cls(obj))
        prior = _box(obj.prior)
        obj = obj.posterior_estimator
    names = _names_mro(obj)
    if "ZukoUnconditionalFlow" in names:
        _refuse("density estimator", obj)
    if "ZukoFlow" in names:
        return _ZukoEst(obj.net, obj._embedding_net), prior, what
    if type(obj).__module__.startswith("zuko"):
        if "Flow" not in names:
            _refuse("density estimator", obj)
        return _ZukoEst(obj, None), prior, what
    if "MixtureDensityEstimator" in names or "MultivariateGaussianMDN" in names or \
            "MDN" in _cls(obj):
        _refuse("density estimator", obj)
    if "NFlowsFlow" in names:
        obj = obj.net
    if not (hasattr(obj, "_transform") and hasattr(obj, "_distribution")):
        _refuse("density estimator", obj)
    return obj, prior, what


# ---------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------

def _lin(ctx, mod, name, masked=True):
    o = {"weight": ctx.add(name + ".weight", mod.weight.detach().float(), torch.float32)}
    if getattr(mod, "bias", None) is not None:
        o["bias"] = ctx.add(name + ".bias", mod.bias.detach().float(), torch.float32)
    if masked:
        o["mask"] = ctx.add(name + ".mask", mod.mask.detach().float(), torch.float32)
    return o


def _act_name(f, where):
    n = getattr(f, "__name__", _cls(f))
    if n in ("tanh", "relu"):
        return n
    raise ExportError("%s: MADE activation %s is not supported yet (tanh or relu)" % (where, n))


def _made(ctx, net, pre, cond, where):
    if _cls(net) != "MADE":
        _refuse(where + ".autoregressive_net", net)
    residual = bool(getattr(net, "use_residual_blocks", False))
    m = {"activation": _act_name(net.activation, where), "residual": residual,
         "initial": _lin(ctx, net.initial_layer, pre + "initial_layer")}
    has_ctx = getattr(net, "context_layer", None) is not None
    if cond != has_ctx:
        raise ExportError("%s: the MADE %s a context layer but the flow %s a condition" %
                          (where, "has" if has_ctx else "lacks", "has no" if has_ctx else "has"))
    if has_ctx:
        m["context"] = _lin(ctx, net.context_layer, pre + "context_layer", False)
    blocks = []
    for j, blk in enumerate(net.blocks):
        bp = "%sblocks.%d." % (pre, j)
        if getattr(blk, "batch_norm", None) is not None or \
                getattr(blk, "batch_norm_layers", None) is not None:
            raise ExportError("%s.blocks.%d: batch norm in a MADE is not supported yet" % (where, j))
        if residual:
            b = {"linear0": _lin(ctx, blk.linear_layers[0], bp + "linear_layers.0"),
                 "linear1": _lin(ctx, blk.linear_layers[1], bp + "linear_layers.1")}
            if getattr(blk, "context_layer", None) is not None:
                b["context"] = _lin(ctx, blk.context_layer, bp + "context_layer", False)
        else:
            b = {"linear": _lin(ctx, blk.linear, bp + "linear")}
        blocks.append(b)
    m["blocks"] = blocks
    m["final"] = _lin(ctx, net.final_layer, pre + "final_layer")
    return m


def _spline(t, where):
    """The spline fields of an nflows rational-quadratic transform (linear tails)."""
    if getattr(t, "tails", None) != "linear":
        raise ExportError("%s: spline tails %r are not supported yet (linear tails are)" %
                          (where, getattr(t, "tails", None)))
    return {"bins": int(t.num_bins), "tails": "linear", "tail_bound": float(t.tail_bound),
            "min_bin_width": float(t.min_bin_width), "min_bin_height": float(t.min_bin_height),
            "min_derivative": float(t.min_derivative)}


def _conditioner(ctx, pre, net, cond, where):
    """Manifest "conditioner" of a coupling's transform_net: an nflows ResidualNet, or sbi's
    ContextSplineMap (an MLP of the condition, for one-dimensional theta)."""
    if _cls(net) == "ResidualNet":
        if any(getattr(b, "use_batch_norm", False) for b in net.blocks):
            raise ExportError("%s: batch norm in a ResidualNet is not supported yet" % where)
        act = net.blocks[0].activation if len(net.blocks) else torch.relu
        c = {"type": "ResidualNet", "activation": _act_name(act, where),
             "initial": _lin(ctx, net.initial_layer, pre + "initial_layer", False),
             "blocks": []}
        for j, blk in enumerate(net.blocks):
            bp = "%sblocks.%d." % (pre, j)
            b = {"linear0": _lin(ctx, blk.linear_layers[0], bp + "linear_layers.0", False),
                 "linear1": _lin(ctx, blk.linear_layers[1], bp + "linear_layers.1", False)}
            has_ctx = getattr(blk, "context_layer", None) is not None
            if has_ctx != cond:
                raise ExportError("%s: a ResidualNet block %s a context layer but the flow "
                                  "%s a condition" % (where, "has" if has_ctx else "lacks",
                                                      "has no" if has_ctx else "has"))
            if has_ctx:
                b["context"] = _lin(ctx, blk.context_layer, bp + "context_layer", False)
            c["blocks"].append(b)
        c["final"] = _lin(ctx, net.final_layer, pre + "final_layer", False)
        return c
    if _cls(net) == "ContextSplineMap":
        return _ex._subnet(ctx, net.spline_predictor, pre + "spline_predictor.", where)
    raise ExportError("%s: transform net %s is not supported yet (ResidualNet or sbi's "
                      "ContextSplineMap)" % (where, _cls(net)))


def _context_width(t):
    """(has a condition, its width) of an nflows transform, or None when it cannot say."""
    inner = t._transform if _cls(t) == "InverseTransform" else t
    n = _cls(inner)
    if n in ("MaskedAffineAutoregressiveTransform",
             "MaskedPiecewiseRationalQuadraticAutoregressiveTransform"):
        cl = getattr(inner.autoregressive_net, "context_layer", None)
        return (cl is not None, int(cl.weight.shape[1]) if cl is not None else 0)
    if n == "PiecewiseRationalQuadraticCouplingTransform":
        net = inner.transform_net
        if _cls(net) == "ResidualNet":
            cf = getattr(net, "context_features", None)
            return (cf is not None, int(cf or 0))
        if _cls(net) == "ContextSplineMap":
            lin = next(m for m in net.spline_predictor.modules() if isinstance(m, nn.Linear))
            return (True, int(lin.weight.shape[1]))
    return None


def _features(t):
    """theta's width read from an nflows transform, or None."""
    inner = t._transform if _cls(t) == "InverseTransform" else t
    n = _cls(inner)
    if n in ("MaskedAffineAutoregressiveTransform",
             "MaskedPiecewiseRationalQuadraticAutoregressiveTransform"):
        return int(inner.autoregressive_net.initial_layer.weight.shape[1])
    if n in ("PiecewiseRationalQuadraticCouplingTransform", "LULinear"):
        return int(inner.features)
    if n in _PERMS:
        return int(inner._permutation.numel())
    return None


def _chain(ctx, flow, cond):
    """-> (standardize.x pair or None, manifest blocks, modules (for the checks))."""
    tr = flow._transform
    ts = list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]
    std_x, blocks, mods = None, [], []
    for i, t in enumerate(ts):
        pre = "net._transform._transforms.%d." % i
        where = "_transform._transforms.%d (%s)" % (i, _cls(t))
        if _cls(t) == "PointwiseAffineTransform":
            if i != 0:
                raise ExportError("%s: a PointwiseAffineTransform is only supported as the "
                                  "first transform (sbi's z-scoring of theta)" % where)
            shift = t._shift.detach().cpu().to(F64).reshape(-1)
            scale = t._scale.detach().cpu().to(F64).reshape(-1)
            if bool((scale <= 0).any()):
                raise ExportError("%s: a scale <= 0 is not supported" % where)
            std_x = (-shift / scale, 1.0 / scale)
            continue
        inverse = _cls(t) == "InverseTransform"
        inner = t._transform if inverse else t
        if _cls(inner) == "MaskedAffineAutoregressiveTransform":
            ipre = pre + ("_transform." if inverse else "")
            b = {"type": "MaskedAffineAutoregressive"}
            if cond:
                b["cond"] = 0
            if inverse:
                b["inverse"] = True
            b["made"] = _made(ctx, inner.autoregressive_net, ipre + "autoregressive_net.",
                              cond, where)
            b["scale"] = {"type": "nflows", "min_scale": float(getattr(inner, "_epsilon", 1e-3))}
        elif _cls(inner) == "MaskedPiecewiseRationalQuadraticAutoregressiveTransform":
            ipre = pre + ("_transform." if inverse else "")
            b = {"type": "MaskedRQSAutoregressive"}
            if cond:
                b["cond"] = 0
            if inverse:
                b["inverse"] = True
            if hasattr(inner.autoregressive_net, "hidden_features"):
                raise ExportError("%s: a MADE that divides the spline parameters by "
                                  "sqrt(hidden_features) is not supported yet" % where)
            b["made"] = _made(ctx, inner.autoregressive_net, ipre + "autoregressive_net.",
                              cond, where)
            b["spline"] = _spline(inner, where)
        elif not inverse and _cls(t) == "PiecewiseRationalQuadraticCouplingTransform":
            if getattr(t, "unconditional_transform", None) is not None:
                raise ExportError("%s: an unconditional transform of the identity features "
                                  "is not supported yet" % where)
            tf = set(int(v) for v in t.transform_features)
            b = {"type": "RQSCoupling"}
            if cond:
                b["cond"] = 0
            b["mask"] = [1 if k in tf else 0 for k in range(int(t.features))]
            b.update(_spline(t, where))
            if hasattr(t.transform_net, "hidden_features"):
                b["hidden_features"] = int(t.transform_net.hidden_features)
            b["conditioner"] = _conditioner(ctx, pre + "transform_net.", t.transform_net,
                                            cond, where)
        elif not inverse and _cls(t) == "LULinear":
            b = {"type": "LULinear",
                 "lower_entries": ctx.add(pre + "lower_entries", t.lower_entries.detach().float(),
                                          torch.float32),
                 "upper_entries": ctx.add(pre + "upper_entries", t.upper_entries.detach().float(),
                                          torch.float32),
                 "unconstrained_upper_diag": ctx.add(
                     pre + "unconstrained_upper_diag",
                     t.unconstrained_upper_diag.detach().float(), torch.float32),
                 "bias": ctx.add(pre + "bias", t.bias.detach().float(), torch.float32),
                 "eps": float(t.eps)}
        elif not inverse and _cls(t) in _PERMS:
            b = {"type": "PermuteRandom",
                 "perm": ctx.add(pre + "_permutation", t._permutation.detach(), torch.int64)}
        else:
            _refuse(where, t)
        blocks.append(b)
        mods.append((where, t))
    if not blocks:
        raise ExportError("the flow has no transforms innserve could export")
    return std_x, blocks, mods


class _ZukoEst:
    """A zuko flow with the embedding net sbi applies to its condition (None: the flow's
    condition is the observation itself)."""

    def __init__(self, net, emb):
        self.net, self._embedding_net = net, emb


def default_slope(version):
    """The slope zuko's MonotonicAffineTransform and MonotonicRQSTransform use when none is
    passed (it is not in the state dict): 1e-3 in 1.0.x and >= 1.5, 1e-4 in 1.1 to 1.4."""
    major, minor = (int(v) for v in str(version).split(".")[:2])
    return 1e-4 if (1, 1) <= (major, minor) < (1, 5) else 1e-3


def _zuko_transform(t, where, version):
    """The manifest "transform" of a zuko MaskedAutoregressiveTransform or
    ElementWiseTransform: affine (MAF) or rqs (NSF), with the slope its univariate
    constructor uses: a keyword given to it (functools.partial), else zuko's default for
    this version."""
    uni = getattr(t, "univariate", None)
    kw = dict(getattr(uni, "keywords", None) or {})
    base = getattr(uni, "func", uni)
    name = getattr(base, "__name__", _cls(base))
    if name not in ("MonotonicAffineTransform", "MonotonicRQSTransform"):
        raise ExportError("%s: univariate transform %s is not supported yet "
                          "(MonotonicAffineTransform, MonotonicRQSTransform)" % (where, name))
    if version is None:
        raise ExportError("%s: zuko's version is unknown, so is its default slope" % where)
    slope = float(kw.get("slope", default_slope(version)))
    if name == "MonotonicAffineTransform":
        if len(t.shapes) != 2:
            raise ExportError("%s: an affine transform with %d parameters" % (where, len(t.shapes)))
        return {"type": "affine", "slope": slope}
    bound = float(kw.get("bound", 5.0))
    bins = int(t.shapes[0][0])
    return {"type": "rqs", "bins": bins, "bound": bound, "slope": slope}


def _zuko_act(m, where):
    for n in ("ReLU", "Tanh", "ELU"):
        if _cls(m) == n:
            return n.lower()
    raise ExportError("%s: hypernetwork activation %s is not supported yet (ReLU, Tanh, ELU)" %
                      (where, _cls(m)))


def _zuko_chain(ctx, zflow, version):
    """-> (standardize.x pair or None, blocks, modules, dx, has a condition, its width)."""
    # refuse what is not supported first, naming the module
    for i, t in enumerate(zflow.transform.transforms):
        if not (_cls(t) in ("MaskedAutoregressiveTransform", "ElementWiseTransform") or
                (i == 0 and _cls(t) in ("UnconditionalTransform", "Unconditional"))):
            _refuse("transform.transforms.%d (%s)" % (i, _cls(t)), t)
    if _cls(zflow.base) not in ("UnconditionalDistribution", "Unconditional"):
        _refuse("base distribution", zflow.base)
    bd = zflow.base()
    inner = getattr(bd, "base_dist", bd)
    loc, scale = getattr(inner, "loc", None), getattr(inner, "scale", None)
    if _cls(inner) != "Normal" or loc is None or not bool((loc == 0).all()) or \
            not bool((scale == 1).all()):
        raise ExportError("base distribution: %s is not supported yet (a standard normal "
                          "DiagNormal is)" % _cls(bd))
    std_x, blocks, mods, dx, cond, cw = None, [], [], int(loc.numel()), None, 0
    for i, t in enumerate(zflow.transform.transforms):
        pre = "net.transform.transforms.%d." % i
        where = "transform.transforms.%d (%s)" % (i, _cls(t))
        if _cls(t) in ("UnconditionalTransform", "Unconditional") and i == 0:
            aff = t()
            if _cls(aff) != "AffineTransform":
                raise ExportError("%s: %s is not supported yet (sbi's z-scoring, an "
                                  "AffineTransform, is)" % (where, _cls(aff)))
            shift = torch.as_tensor(aff.loc).detach().cpu().to(F64).reshape(-1).expand(dx)
            scl = torch.as_tensor(aff.scale).detach().cpu().to(F64).reshape(-1).expand(dx)
            if bool((scl <= 0).any()):
                raise ExportError("%s: a scale <= 0 is not supported" % where)
            std_x = (-shift / scl, 1.0 / scl)
            continue
        if _cls(t) not in ("MaskedAutoregressiveTransform", "ElementWiseTransform"):
            _refuse(where, t)
        tj = _zuko_transform(t, where, version)
        b = {"type": "ZukoMaskedAutoregressive"}
        masked = _cls(t) == "MaskedAutoregressiveTransform"
        hyper = getattr(t, "hyper", None)
        lins = [m for m in (hyper if hyper is not None else []) if hasattr(m, "weight")]
        if masked:
            tc = int(lins[0].weight.shape[1]) - dx
        else:
            tc = int(lins[0].weight.shape[1]) if lins else 0
        if cond is None:
            cond, cw = tc > 0, tc
        elif (tc > 0) != cond or tc != cw:
            raise ExportError("%s: a condition of width %d, another block's is %d" %
                              (where, tc, cw))
        if cond:
            b["cond"] = 0
        b["transform"] = tj
        if masked:
            b["order"] = ctx.add(pre + "order", t.order.detach(), torch.int64)
        if not masked and not cond:
            keys = ("widths", "heights", "derivatives") if tj["type"] == "rqs" \
                else ("shift", "scale")
            b["phi"] = {k: ctx.add("%sphi.%d" % (pre, j), t.phi[j].detach().float(),
                                   torch.float32) for j, k in enumerate(keys)}
        else:
            layers, act = [], None
            for j, m in enumerate(hyper):
                if hasattr(m, "weight"):
                    L = {"weight": ctx.add("%shyper.%d.weight" % (pre, j),
                                           m.weight.detach().float(), torch.float32)}
                    if getattr(m, "bias", None) is not None:
                        L["bias"] = ctx.add("%shyper.%d.bias" % (pre, j),
                                            m.bias.detach().float(), torch.float32)
                    if masked:
                        L["mask"] = ctx.add("%shyper.%d.mask" % (pre, j),
                                            m.mask.detach().float(), torch.float32)
                    layers.append(L)
                else:
                    a = _zuko_act(m, where)
                    if act is not None and a != act:
                        raise ExportError("%s: mixed activations are not supported" % where)
                    act = a
            b["activation"] = act or "relu"
            b["hyper"] = layers
        blocks.append(b)
        mods.append((where, t))
    if not blocks:
        raise ExportError("the flow has no transforms innserve could export")
    return std_x, blocks, mods, dx, bool(cond), cw


def _embedding(ctx, flow, dy):
    """-> (standardize.y pair or None, condition net (manifest subnet) or None, modules)."""
    emb = getattr(flow, "_embedding_net", None)
    parts = list(emb) if isinstance(emb, nn.Sequential) and len(emb) and \
        _cls(emb[0]) == "Standardize" else [emb]
    std_y, net = None, None
    if parts and _cls(parts[0]) == "Standardize":
        s = parts.pop(0)
        mean = s._mean.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        sd = s._std.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        std_y = (mean, sd)
    rest = [p for p in parts if p is not None and not isinstance(p, nn.Identity)]
    if len(rest) > 1:
        rest = [nn.Sequential(*rest)]
    if rest:
        e = rest[0]
        if _cls(e) == "FCEmbedding":
            e = e.net
        if not isinstance(e, (nn.Sequential, nn.Linear)):
            raise ExportError("embedding net: %s is not supported yet (an MLP: nn.Sequential of "
                              "Linear layers and activations, or sbi's FCEmbedding)" % _cls(e))
        net = _ex._subnet(ctx, e, "net._embedding_net.", "embedding net")
    return std_y, net, rest[0] if rest else None


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------

def _check(ctx, manifest, mods, flow, emb_mod, x, y, tol):
    """Every block against its module in float64, then the whole log_prob and inverse."""
    M = ref.Model(manifest, ctx.tensors)
    S = ref.Store(ctx.tensors)
    conds = M.conditions(y) if y is not None else []
    c = conds[0] if conds else None
    if emb_mod is not None:
        e64 = copy.deepcopy(emb_mod).to(F64).eval()
        with torch.no_grad():
            got = e64(M.std_y(y))
        if not _ex._close(c, got, tol):
            raise ExportError("embedding net: the exported layers do not reproduce the module")
    h, _ = M.std_x(x)
    for (where, t), b in zip(mods, manifest["blocks"]):
        t64 = copy.deepcopy(t).to(F64).eval()
        with torch.no_grad():
            if isinstance(flow, _ZukoEst):
                zt = t64(c if "cond" in b else None)
                out, ld = zt.call_and_ladj(h)
                back = zt.inv(out)
                ldb = -zt.call_and_ladj(back)[1]
            else:
                out, ld = t64(h, context=c) if "cond" in b else t64(h)
                back, ldb = t64.inverse(out, context=c) if "cond" in b else t64.inverse(out)
        mine, mld = ref.block(S, b, h, c, False)
        mback, mldb = ref.block(S, b, out, c, True)
        for a, w, what in ((mine, out, "output"), (mld, ld, "log-det"), (mback, back, "inverse"),
                           (mldb, ldb, "inverse log-det")):
            if not _ex._close(a, w.reshape(a.shape), tol):
                raise ExportError("%s: the exported block does not reproduce the module's %s "
                                  "(max difference %.3g)" % (where, what,
                                                            float((a - w.reshape(a.shape)).abs().max())))
        h = out
    with torch.no_grad():
        if isinstance(flow, _ZukoEst):
            z64 = copy.deepcopy(flow.net).to(F64).eval()
            e = flow._embedding_net
            cz = None
            if y is not None:
                cz = y if e is None else copy.deepcopy(e).to(F64).eval()(y)
            want = z64(cz).log_prob(x)
        else:
            f64 = copy.deepcopy(flow).to(F64).eval()
            want = f64.log_prob(x, context=y) if y is not None else f64.log_prob(x)
    mine = M.log_prob(x, y)
    if not _ex._close(mine, want, tol):
        raise ExportError("log_prob: the exported model does not reproduce the estimator "
                          "(max difference %.3g)" % float((mine - want).abs().max()))


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------

def export_sbi(obj, path, *, low=None, high=None, x_names=None, y_names=None,
               description=None, test_inputs=None, n_tests=8, seed=0, rtol=1e-4, atol=1e-5,
               check=True, check_tol=1e-9, source=None):
    """Write an sbi posterior (DirectPosterior with a BoxUniform prior) or density estimator
    (NFlowsFlow, or an nflows Flow; prior bounds as ``low``/``high``, optional) as an innserve
    checkpoint at ``path``.  innserve's x is sbi's theta, its y sbi's observation x.

    Returns an :class:`~innserve.export.ExportResult`.  Raises ExportError for what innserve
    cannot serve (naming the module) or when a check fails."""
    from . import _sbi_mdn
    if _sbi_mdn.is_mdn(getattr(obj, "posterior_estimator", obj)):
        return _sbi_mdn.export_mdn(obj, path, low=low, high=high, x_names=x_names,
                                   y_names=y_names, description=description,
                                   test_inputs=test_inputs, n_tests=n_tests, seed=seed,
                                   rtol=rtol, atol=atol, check=check, check_tol=check_tol,
                                   source=source)
    flow, prior, what = _resolve(obj)
    if low is not None or high is not None:
        if low is None or high is None:
            raise ExportError("low and high: give both prior bounds, or neither")
        if prior is not None:
            raise ExportError("low and high: the posterior carries its prior already")
        prior = (_ex._tensor(low, "low").reshape(-1), _ex._tensor(high, "high").reshape(-1))
    ctx = _ex._Ctx({"check_tol": check_tol, "allow_non_contractive": False,
                    "iresnet_logdet": "exact", "iresnet_series_terms": 10,
                    "residual_blocks": None, "freia_version": "auto"})
    zuko = isinstance(flow, _ZukoEst)
    if zuko:
        std_x, blocks, mods, dx, cond, dy = _zuko_chain(ctx, flow.net, _version("zuko"))
    else:
        dist = getattr(flow, "_distribution", None)
        if _cls(dist) != "StandardNormal":
            _refuse("base distribution", dist)
        # refuse what is not supported first, naming the module (an NSF's spline, LU layers)
        tr = flow._transform
        ts = list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]
        for i, t in enumerate(ts):
            inner = t._transform if _cls(t) == "InverseTransform" else t
            if _cls(inner) not in _SUPPORTED:
                _refuse("_transform._transforms.%d (%s)" % (i, _cls(t)), inner)
        # theta's width and the condition's from the transforms, then the embedding's input
        dx = next((w for w in map(_features, ts) if w is not None), None)
        if dx is None:
            raise ExportError("the flow has no transform to read theta's width from")
        cw = next((c for c in map(_context_width, ts) if c is not None), (False, 0))
        cond, dy = cw
    std_y = net = emb_mod = None
    if cond:
        # the embedding may change the width: read dy from its first layer or Standardize
        emb = getattr(flow, "_embedding_net", None)
        for mod in (emb.modules() if emb is not None else []):
            if _cls(mod) == "Standardize":
                if mod._mean.numel() > 1:
                    dy = int(mod._mean.numel())
                    break
            elif isinstance(mod, nn.Linear):
                dy = int(mod.weight.shape[1])
                break
        std_y, net, emb_mod = _embedding(ctx, flow, dy)
    if not zuko:    # after the embedding: its tensors come first in the file
        std_x, blocks, mods = _chain(ctx, flow, cond)

    manifest = collections.OrderedDict()
    manifest["format"] = "innserve-manifest"
    manifest["version"] = 1
    manifest["kind"] = "cinn" if cond else "flow"
    manifest["description"] = str(description or "sbi %s exported by innserve" % what)
    src = {"framework": "sbi", "exporter": "innserve %s" % __version__,
           "torch": torch.__version__, "sbi": _version("sbi")}
    if zuko:
        src["zuko"] = _version("zuko")
    else:
        src["nflows"] = _version("nflows")
    src["object"] = what
    if source:
        src.update(source)
    manifest["source"] = src
    manifest["dims"] = {"x": dx, "y": dy} if cond else {"x": dx}
    names = {}
    xn, yn = _ex._names(x_names, dx, "x_names"), _ex._names(y_names, dy, "y_names")
    if xn:
        names["x"] = xn
    if yn:
        names["y"] = yn
    if names:
        manifest["names"] = names
    std = {}
    if std_x is not None or std_y is not None:
        manifest["standardize"] = {}
    if std_x is not None:
        manifest["standardize"]["x"] = {"mean": ctx.add("std.x.mean", std_x[0], torch.float32),
                                        "std": ctx.add("std.x.std", std_x[1], torch.float32)}
        std["x"] = (ctx.tensors["std.x.mean"].to(F64), ctx.tensors["std.x.std"].to(F64))
    if std_y is not None:
        manifest["standardize"]["y"] = {"mean": ctx.add("std.y.mean", std_y[0], torch.float32),
                                        "std": ctx.add("std.y.std", std_y[1], torch.float32)}
        std["y"] = (ctx.tensors["std.y.mean"].to(F64), ctx.tensors["std.y.std"].to(F64))
    if prior is not None:
        lo, hi = prior
        if lo.numel() != dx or hi.numel() != dx:
            raise ExportError("prior: %d lower and %d upper bounds for %d parameters" %
                              (lo.numel(), hi.numel(), dx))
        lo32, hi32 = lo.to(torch.float32), hi.to(torch.float32)
        if not bool(torch.isfinite(lo32).all() and torch.isfinite(hi32).all()) or \
                bool((lo32 >= hi32).any()):
            raise ExportError("prior: the bounds must be finite float32 values with low < high")
        manifest["prior"] = {"type": "box", "low": [float(v) for v in lo32],
                             "high": [float(v) for v in hi32]}
    if cond:
        manifest["conditions"] = [{"net": net}]
    manifest["blocks"] = blocks

    if test_inputs is None and prior is not None:
        gen = torch.Generator().manual_seed(int(seed))
        lo, hi = prior
        xt = lo + (hi - lo) * torch.rand(n_tests, dx, generator=gen, dtype=F64)
        yt = None
        if cond:
            yt = torch.randn(n_tests, dy, generator=gen, dtype=F64)
            if "y" in std:
                yt = std["y"][0] + std["y"][1] * yt
        test_inputs = {"x": xt, "y": yt} if cond else xt
    x, y = _ex._test_inputs(test_inputs, n_tests, seed, dx, dy, std)
    if check:
        _check(ctx, manifest, mods, flow, emb_mod, x, y, max(check_tol, 1e-6))
    M = ref.Model(manifest, ctx.tensors)
    tests = _ex._test_vectors(ctx, manifest, M, x, y, rtol, atol)
    _ex._write(path, manifest, ctx.tensors)
    res = _ex.ExportResult(path, json.loads(json.dumps(manifest)), dict(ctx.tensors), tests)
    res.notes = list(ctx.notes)
    return res
