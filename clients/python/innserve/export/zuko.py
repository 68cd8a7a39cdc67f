"""innserve.export.zuko: zuko flows (sbi's zuko_maf, zuko_nsf) -> ``ZukoMaskedAutoregressive``
blocks: MaskedAutoregressiveTransform / ElementWiseTransform with an affine or
rational-quadratic univariate map, the slope zuko does not store, and sbi's
UnconditionalTransform z-scoring."""

import torch

from .common import F64, ExportError, _Ctx, _cls, _refuse

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


def manifest_blocks(zflow, version, prefix="net.transform.transforms."):
    """The manifest blocks export_sbi writes for a zuko Flow (its first transform may be
    sbi's z-scoring, which is standardization, not a block), naming each tensor prefix + its
    state_dict key below the transform list; ``version``: zuko's, for the default slope.
    For code that stores the tensors itself (the fixture generators)."""
    return _zuko_chain(_Ctx({"check_tol": 1e-9}), zflow, version, prefix)[1]


def _zuko_chain(ctx, zflow, version, prefix="net.transform.transforms."):
    """-> (standardize.x pair or None, blocks, modules, dx, has a condition, its width);
    tensor names are prefix + the state_dict key below the transform list."""
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
        pre = "%s%d." % (prefix, i)
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
