"""innserve.export.nflows: nflows transforms (sbi's maf, nsf, maf_rqs) -> manifest blocks:
MaskedAffineAutoregressiveTransform (MADE) and its InverseTransform (IAF),
MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
PiecewiseRationalQuadraticCouplingTransform (ResidualNet or sbi's ContextSplineMap
conditioner), LULinear, permutations, and sbi's PointwiseAffineTransform z-scoring."""

import torch
import torch.nn as nn

from .common import F64, ExportError, _Ctx, _cls, _refuse
from .subnets import _subnet

_SUPPORTED = ("PointwiseAffineTransform", "MaskedAffineAutoregressiveTransform",
              "MaskedPiecewiseRationalQuadraticAutoregressiveTransform",
              "PiecewiseRationalQuadraticCouplingTransform", "LULinear",
              "RandomPermutation", "ReversePermutation", "Permutation")


_PERMS = ("RandomPermutation", "ReversePermutation", "Permutation")


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
        c = {"type": "mlp"}
        c.update(_subnet(ctx, net.spline_predictor, pre + "spline_predictor.", where))
        return c
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


def manifest_blocks(transform, cond, prefix="net._transform._transforms."):
    """The manifest blocks export_sbi writes for an nflows transform (a CompositeTransform
    or one transform; no z-scoring), naming each tensor prefix + its state_dict key below
    the transform list (``prefix`` + "3.autoregressive_net.final_layer.weight"); cond: the
    blocks read condition 0.  For code that stores the tensors itself (the fixture
    generators)."""
    ctx = _Ctx({"check_tol": 1e-9})
    std_x, blocks, _ = _chain(ctx, transform, cond, prefix)
    if std_x is not None:
        raise ExportError("manifest_blocks: a PointwiseAffineTransform is standardization, "
                          "not a block")
    return blocks


def _chain(ctx, tr, cond, prefix="net._transform._transforms."):
    """An nflows transform -> (standardize.x pair or None, manifest blocks, modules (for the
    checks)); tensor names are prefix + the state_dict key below the transform list."""
    ts = list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]
    std_x, blocks, mods = None, [], []
    for i, t in enumerate(ts):
        pre = "%s%d." % (prefix, i)
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
