"""innserve.export.freia: FrEIA's invertible modules (AllInOneBlock, the coupling blocks,
RationalQuadraticSpline, PermuteRandom, ActNorm, ...) -> manifest blocks, one converter per
module family, as engine/blocks/ has one file per family; the AllInOneBlock clamp formula
(FrEIA HEAD or PyPI 0.2) and the FrEIA version recorded in the manifest."""

import collections
import inspect
import os
import warnings

import torch

from .. import _reference as ref
from .checks import _run_module
from .common import F64, ExportError, _close, _cls, _mro
from .freia_fixed import CONVERTERS as _FIXED_CONVERTERS
from .residual import _RESIDUAL_CLASSES, _blk_residual
from .subnets import _subnet

FREIA_VERSIONS = ("auto", "head", "0.2")


SUPPORTED_BLOCKS = (
    "AllInOneBlock", "NICECouplingBlock", "RNVPCouplingBlock", "GLOWCouplingBlock",
    "GINCouplingBlock", "AffineCouplingOneSided", "ConditionalAffineTransform",
    "RationalQuadraticSpline", "PermuteRandom", "ActNorm", "FixedLinearTransform",
    "LearnedElementwiseScaling", "OrthogonalTransform", "HouseholderPerm",
    "InvertibleSigmoid", "IResNetLayer", "Flatten", "Reshape",
) + tuple(n for n, _ in _FIXED_CONVERTERS)


# FrEIA modules that exist but that the engine does not implement, with the reason.
_UNSUPPORTED = {
    "Split": "Split is a graph node with several outputs: build the model as a FrEIA GraphINN",
    "Concat": "Concat is a graph node with several inputs: build the model as a FrEIA GraphINN",
    "BinnedSpline": "generic binned splines are not supported",
}


def _probe_equal(f, g):
    u = torch.linspace(-6.0, 6.0, 97, dtype=F64)
    try:
        with torch.no_grad():
            a = f(u.clone())
            b = g(u.clone())
        return bool(torch.allclose(a.to(F64), b, rtol=1e-9, atol=1e-12))
    except Exception:  # noqa: BLE001 - a callable that fails is simply not this one
        return False


_CLAMP_ACTS = {
    "ATAN": lambda u: 0.636 * torch.atan(u),
    "TANH": torch.tanh,
    "SIGMOID": lambda u: 2.0 * (torch.sigmoid(u) - 0.5),
}


def _clamp_activation(m, link):
    f = getattr(m, "f_clamp", None)
    if f is None:
        return "ATAN"
    for name, g in _CLAMP_ACTS.items():
        if _probe_equal(f, g):
            return name
    raise ExportError("%s: clamp_activation is a callable (%s) that is none of \"ATAN\", "
                      "\"TANH\", \"SIGMOID\"; a custom callable cannot be serialised"
                      % (link.label, getattr(f, "__name__", type(f).__name__)))


def _positions(m):
    """Positions per channel of a FrEIA module's input: 1 for (d,), H*W for (C, H, W), L for
    (C, L).  Coupling blocks split along channels, the flat split is channels * positions."""
    dims = getattr(m, "dims_in", None)
    if not dims:
        return 1
    first = dims[0] if isinstance(dims[0], (tuple, list)) else dims
    p = 1
    for v in first[1:]:
        p *= int(v)
    return p


def _image_rank(m, link):
    dims = getattr(m, "dims_in", None)
    first = (dims[0] if isinstance(dims[0], (tuple, list)) else dims) if dims else (0,)
    if len(first) > 3:
        raise ExportError("%s: %d-D data is not supported (vectors, (C, L) signals and (C, H, W) "
                          "images are)" % (link.label, len(first)))


def _blk_allinone(ctx, m, link):
    _image_rank(m, link)
    d = int(m.in_channels)
    p = link.prefix
    b = {"type": "AllInOneBlock", "affine_clamping": float(m.clamp),
         "split": int(m.splits[0]) * _positions(m) if _positions(m) > 1 else None,
         "clamp_formula": "auto", "gin_block": bool(getattr(m, "GIN", False)),
         "global_affine_type": _global_affine_type(m, link),
         "global_scale": ctx.add(p + "global_scale", m.global_scale),
         "global_offset": ctx.add(p + "global_offset", m.global_offset)}
    k = int(getattr(m, "householder", 0) or 0)
    if k:
        b["permutation"] = {"type": "householder", "w0": ctx.add(p + "w_0", m.w_0),
                            "v": ctx.add(p + "vk_householder", m.vk_householder)}
    else:
        w = m.w_perm.detach()
        if not w.is_floating_point():
            b["permutation"] = {"type": "hard", "perm": ctx.add(p + "w_perm", w, torch.int64)}
        else:
            W = w.reshape(d, d)
            onehot = bool(((W == 0) | (W == 1)).all()) and bool((W.sum(0) == 1).all()) \
                and bool((W.sum(1) == 1).all())
            if onehot:   # PyPI 0.2 stores a hard permutation as a one-hot float matrix
                b["permutation"] = {"type": "hard",
                                    "perm": ctx.add(p + "w_perm", W.argmax(1), torch.int64)}
                ctx.notes.append("%s: one-hot permutation matrix (FrEIA 0.2) stored as an "
                                 "index vector" % link.label)
            else:
                b["permutation"] = {"type": "soft", "w": ctx.add(p + "w_perm", W),
                                    "w_inv": ctx.add(p + "w_perm_inv",
                                                     m.w_perm_inv.detach().reshape(d, d))}
    b["reverse_permutation"] = bool(getattr(m, "reverse_pre_permute", False))
    b["subnet"] = _subnet(ctx, m.subnet, p + "subnet.", link.label)
    if b["split"] is None:
        del b["split"]
    return b


def _blk_coupling(ctx, m, link):
    _image_rank(m, link)
    p = link.prefix
    known = ("NICECouplingBlock", "RNVPCouplingBlock", "GLOWCouplingBlock",
             "GINCouplingBlock", "AffineCouplingOneSided", "ConditionalAffineTransform")
    ty = next(n for n in _mro(m) if n in known)
    b = {"type": ty}
    if ty != "ConditionalAffineTransform":
        b["split"] = int(m.split_len1) * _positions(m)
    if ty != "NICECouplingBlock":
        b["clamp"] = float(m.clamp)
        b["clamp_activation"] = _clamp_activation(m, link)
    sub = lambda attr: _subnet(ctx, getattr(m, attr), p + attr + ".", "%s.%s" % (link.label, attr))
    if ty == "NICECouplingBlock":
        b["F"], b["G"] = sub("F"), sub("G")
    elif ty == "RNVPCouplingBlock":
        b["s1"], b["t1"] = sub("subnet_s1"), sub("subnet_t1")
        b["s2"], b["t2"] = sub("subnet_s2"), sub("subnet_t2")
    elif ty in ("GLOWCouplingBlock", "GINCouplingBlock"):
        b["subnet1"], b["subnet2"] = sub("subnet1"), sub("subnet2")
    else:
        b["subnet"] = sub("subnet")
    return b


def _blk_spline(ctx, m, link):
    _image_rank(m, link)
    sb = m.spline_base
    p = link.prefix
    tails = "identity" if bool(sb.identity_tails) else "affine"
    keys = set(getattr(sb, "parameter_counts", {}).keys())
    want = {"widths", "heights", "deltas"} | ({"total_width"} if tails == "identity"
                                               else {"bottom", "left"})
    if keys and keys != want:
        raise ExportError("%s: spline parameters %s are not those of a rational-quadratic "
                          "spline" % (link.label, sorted(keys)))
    dc = getattr(sb, "domain_clamping", None)
    b = {"type": "RationalQuadraticSpline", "split": int(m.split_len1) * _positions(m),
         "bins": int(sb.bins),
         "tails": tails,
         "default_domain": [float(v) for v in sb.default_domain.reshape(-1)],
         "min_bin_sizes": [float(v) for v in sb.min_bin_sizes.reshape(-1)],
         "domain_clamping": None if dc is None else float(dc)}
    b["subnet1"] = _subnet(ctx, m.subnet1, p + "subnet1.", link.label + ".subnet1")
    b["subnet2"] = _subnet(ctx, m.subnet2, p + "subnet2.", link.label + ".subnet2")
    return b


def _blk_permute(ctx, m, link):
    return {"type": "PermuteRandom", "perm": ctx.add(link.prefix + "perm", m.perm, torch.int64)}


def _blk_actnorm(ctx, m, link):
    p = link.prefix
    if isinstance(getattr(m, "log_scale", None), torch.Tensor):       # FrEIA >= 2023
        init = getattr(m, "is_initialized", None)
        if init is not None and not bool(init):
            raise ExportError("%s: ActNorm was never initialized (is_initialized is False): "
                              "run a batch of training data through the model first"
                              % link.label)
        b = {"type": "ActNorm", "log_scale": ctx.add(p + "log_scale", m.log_scale),
             "loc": ctx.add(p + "loc", m.loc)}
        if init is not None:
            b["is_initialized"] = ctx.add(p + "is_initialized", init.reshape(()), torch.bool)
        return b
    if isinstance(getattr(m, "scale", None), torch.Tensor) and \
            isinstance(getattr(m, "bias", None), torch.Tensor):         # PyPI 0.2
        if bool(getattr(m, "init_on_next_batch", False)):
            raise ExportError("%s: ActNorm (FrEIA 0.2) was never initialized with data: run "
                              "a batch through the model first" % link.label)
        return {"type": "ActNorm", "scale": ctx.add(p + "scale", m.scale),
                "bias": ctx.add(p + "bias", m.bias)}
    if _cls(m) == "ActNorm1d" and isinstance(getattr(m, "weight", None), torch.Tensor):
        # Residual Flows: y = (x + bias) * exp(weight)  ==  (x - loc) * exp(-log_scale)
        if not bool(getattr(m, "initialized", torch.tensor(1))):
            raise ExportError("%s: ActNorm1d was never initialized" % link.label)
        return {"type": "ActNorm", "log_scale": ctx.add(p + "log_scale", -m.weight.detach()),
                "loc": ctx.add(p + "loc", -m.bias.detach())}
    raise ExportError("%s: ActNorm has neither log_scale/loc (FrEIA >= 2023) nor scale/bias "
                      "(FrEIA 0.2)" % link.label)


def _blk_fixedlinear(ctx, m, link):
    p = link.prefix
    M = m.M.detach()
    d = M.shape[0]
    b = {"type": "FixedLinearTransform", "M": ctx.add(p + "M", M.reshape(d, d))}
    bias = getattr(m, "b", None)
    if isinstance(bias, torch.Tensor) and bias.numel() == d:
        b["b"] = ctx.add(p + "b", bias.detach().reshape(1, d))
    elif bias is not None and float(torch.as_tensor(bias).reshape(-1)[0]) != 0.0:
        b["b"] = ctx.add(p + "b", torch.full((1, d), float(torch.as_tensor(bias).reshape(-1)[0])))
    return b


def _blk_elementwise(ctx, m, link):
    return {"type": "LearnedElementwiseScaling", "s": ctx.add(link.prefix + "s", m.s)}


def _blk_orthogonal(ctx, m, link):
    p = link.prefix
    W = m.weights.detach().to(F64)
    defect = float((W.t() @ W - torch.eye(W.shape[0], dtype=F64)).abs().max())
    if defect > 1e-5:
        raise ExportError("%s: the weights are not orthogonal (max |W^T W - I| = %.3g), so the "
                          "block's inverse W^T would be wrong; FrEIA re-orthogonalises them "
                          "every correction_interval steps: call FrEIA.modules.orthogonal."
                          "orth_correction(module.weights.data) before exporting"
                          % (link.label, defect))
    return {"type": "OrthogonalTransform", "weights": ctx.add(p + "weights", m.weights),
            "bias": ctx.add(p + "bias", m.bias), "scaling": ctx.add(p + "scaling", m.scaling),
            "clamp": float(m.clamp)}


def _blk_householder(ctx, m, link):
    if bool(getattr(m, "conditional", False)):
        raise ExportError("%s: a conditional HouseholderPerm (reflections taken from the "
                          "condition) is not supported" % link.label)
    return {"type": "HouseholderPerm", "Vs": ctx.add(link.prefix + "Vs", m.Vs)}


def _blk_sigmoid(ctx, m, link):
    return {"type": "InvertibleSigmoid"}


def _global_affine_type(m, link):
    f = getattr(m, "global_scale_activation", None)
    if f is None:
        raise ExportError("%s: AllInOneBlock without global_scale_activation" % link.label)
    a = torch.linspace(-5.0, 45.0, 101, dtype=F64)
    for name in ("SOFTPLUS", "SIGMOID", "EXP"):
        try:
            with torch.no_grad():
                got = f(a.clone()).to(F64)
        except Exception as e:  # noqa: BLE001
            raise ExportError("%s: cannot evaluate global_scale_activation (%s)" % (link.label, e))
        if torch.allclose(got, ref.global_scale(name, a), rtol=1e-6, atol=1e-9):
            return name
    raise ExportError("%s: the global affine activation is none of SOFTPLUS (0.1*softplus, "
                      "beta 0.5), SIGMOID, EXP" % link.label)


def _blk_flatten(ctx, m, link):
    return {"type": "Flatten"}


def _blk_reshape(ctx, m, link):
    dims = getattr(m, "target_dim", None) or getattr(m, "output_dims", None)
    if callable(dims) or dims is None:
        raise ExportError("%s: cannot read its output shape (target_dim)" % link.label)
    return {"type": "Reshape", "output_dims": [int(v) for v in dims]}


_CONVERTERS = collections.OrderedDict([
    ("Flatten", _blk_flatten), ("Reshape", _blk_reshape),
    ("AllInOneBlock", _blk_allinone),
    ("NICECouplingBlock", _blk_coupling), ("RNVPCouplingBlock", _blk_coupling),
    ("GLOWCouplingBlock", _blk_coupling), ("GINCouplingBlock", _blk_coupling),
    ("AffineCouplingOneSided", _blk_coupling), ("ConditionalAffineTransform", _blk_coupling),
    ("RationalQuadraticSpline", _blk_spline),
    ("PermuteRandom", _blk_permute),
    ("ActNorm", _blk_actnorm), ("ActNorm1d", _blk_actnorm),
    ("FixedLinearTransform", _blk_fixedlinear),
    ("LearnedElementwiseScaling", _blk_elementwise),
    ("OrthogonalTransform", _blk_orthogonal),
    ("HouseholderPerm", _blk_householder),
    ("InvertibleSigmoid", _blk_sigmoid),
] + _FIXED_CONVERTERS)


def _convert(ctx, link):
    m = link.module
    res = dict(_RESIDUAL_CLASSES)
    res.update(ctx.opts["residual_blocks"] or {})
    for cls_name in _mro(m):          # the most derived known class decides
        if cls_name in res:
            return _blk_residual(ctx, m, link, res[cls_name])
        if cls_name in _CONVERTERS:
            return _CONVERTERS[cls_name](ctx, m, link)
        if cls_name in _UNSUPPORTED:
            raise ExportError("%s is not supported: %s" % (link.label, _UNSUPPORTED[cls_name]))
    raise ExportError("%s is not supported: not a known invertible block (supported: %s; "
                      "i-ResNet residual blocks via innserve.export.Residual or "
                      "residual_blocks={class name: attribute of g})"
                      % (link.label, ", ".join(SUPPORTED_BLOCKS)))


def _resolve_clamp_formula(ctx, link, b, S, h, c, shape=None):
    """AllInOneBlock: choose the clamp formula (FrEIA HEAD vs PyPI 0.2)."""
    v = ctx.opts["freia_version"]
    if v in ("head", "0.2"):
        b["clamp_formula"] = "head" if v == "head" else "legacy"
        return
    # auto: run the module and see which formula reproduces it
    try:
        y, _, _ = _run_module(ctx, link.module, h, c)
        hits = []
        for f in ("head", "legacy"):
            bb = dict(b, clamp_formula=f)
            out, _ = ref.block(S, bb, h, c, False, shape)
            if _close(out, y, 1e-6):
                hits.append(f)
        if hits:
            b["clamp_formula"] = hits[0]
            if len(hits) == 1:
                ctx.notes.append("%s: clamp formula %s detected by running the module"
                                 % (link.label, hits[0]))
            return
    except Exception:  # noqa: BLE001 - fall back on reading the source
        pass
    try:
        src = inspect.getsource(type(link.module))
        flat = src.replace(" ", "")
        if "/self.clamp" in flat:
            b["clamp_formula"] = "head"
            return
        if "tanh(a[:,:ch])" in flat:
            b["clamp_formula"] = "legacy"
            return
    except (OSError, TypeError):
        pass
    b["clamp_formula"] = "head"
    warnings.warn("%s: could not tell the AllInOneBlock clamp formula; assuming FrEIA HEAD "
                  "(s = a*tanh(x/a)); pass freia_version='0.2' for PyPI FrEIA 0.2" % link.label)


def _freia_info(links):
    for l in links:
        mod = type(l.module).__module__.split(".")[0]
        if mod == "FrEIA":
            info = {"framework": "FrEIA"}
            try:
                import importlib.metadata as md
                info["package_version"] = md.version("FrEIA")
            except Exception:  # noqa: BLE001
                pass
            import sys
            path = getattr(sys.modules.get("FrEIA"), "__file__", None)
            if path:
                info["path"] = path
                commit = _git_commit(os.path.dirname(os.path.dirname(os.path.abspath(path))))
                if commit:
                    info["commit"] = commit
            return info
    return None


def _git_commit(root):
    """The commit of a git checkout at root (FrEIA installed from source), or None."""
    def read(*p):
        with open(os.path.join(root, ".git", *p)) as f:
            return f.read()
    try:
        head = read("HEAD").strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        try:
            return read(ref).strip()
        except OSError:
            for line in read("packed-refs").splitlines():
                if line.strip().endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return None
