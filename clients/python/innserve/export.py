"""Export a trained PyTorch model as an innserve checkpoint (docs/checkpoint-format.md).

    from innserve.export import export
    export(inn, "ik.safetensors", kind="cinn", x_names=[...], y_names=[...],
           standardize={"x": (x_mean, x_std), "y": (y_mean, y_std)},
           description="cINN for 4-DOF inverse kinematics")

What can be exported (docs/clients.md has the full table):

* FrEIA ``SequenceINN`` and chain-shaped ``GraphINN`` / ``ReversibleGraphNet`` models made of
  AllInOneBlock, NICE/RNVP/GLOW/GIN coupling blocks, AffineCouplingOneSided,
  ConditionalAffineTransform, RationalQuadraticSpline, PermuteRandom, ActNorm (both
  storage versions), FixedLinearTransform, LearnedElementwiseScaling, OrthogonalTransform,
  HouseholderPerm, InvertibleSigmoid and IResNetLayer, whose subnets are ``nn.Sequential``
  stacks of ``nn.Linear`` and activations; a plain list of such modules works too;
* i-ResNet / Residual-Flows residual blocks (``Residual(g)`` below, Residual Flows'
  ``iResBlock``/``SequentialFlow``, or any class named in ``residual_blocks``), whose
  ``nn.Linear`` layers may carry the official i-ResNet ``spectral_norm_fc`` hook, PyTorch's
  spectral norm (hook or parametrization) or be Residual Flows' ``InducedNormLinear`` /
  ``SpectralNormLinear``: the effective weight is computed as their code does and baked in;
* ``kind="mlp"``: a plain ``nn.Sequential`` of Linear layers and activations (a surrogate
  y = f(x), served for prediction and preimage search).

Modules are recognised by class name (anywhere in their MRO) and attributes, so the real
FrEIA and look-alike classes both work; FrEIA is never imported.  Anything else is refused
with an :class:`ExportError` naming the module and the reason.

The exporter computes test vectors in float64 from the float32 weights *as stored in the
file* (innserve._reference) and embeds them; the engine re-runs them at load and refuses
the file when they disagree.  Unless ``check=False`` it also runs every module of your
model in float64 on the same inputs and refuses to write a file whose blocks do not
reproduce the module's own output, so a misread module is caught here, not in
production.
"""

import collections
import copy
import inspect
import json
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _reference as ref
from . import _safetensors
from ._version import __version__

__all__ = ["export", "export_sbi", "ExportError", "ExportResult", "Residual",
           "SUPPORTED_BLOCKS", "FREIA_VERSIONS"]

F64 = torch.float64
FREIA_VERSIONS = ("auto", "head", "0.2")

SUPPORTED_BLOCKS = (
    "AllInOneBlock", "NICECouplingBlock", "RNVPCouplingBlock", "GLOWCouplingBlock",
    "GINCouplingBlock", "AffineCouplingOneSided", "ConditionalAffineTransform",
    "RationalQuadraticSpline", "PermuteRandom", "ActNorm", "FixedLinearTransform",
    "LearnedElementwiseScaling", "OrthogonalTransform", "HouseholderPerm",
    "InvertibleSigmoid", "IResNetLayer",
)

# FrEIA modules that exist but that the engine does not implement, with the reason.
_UNSUPPORTED = {
    "ElementwiseRationalQuadraticSpline": "the elementwise spline is not implemented by the "
                                          "engine (use RationalQuadraticSpline)",
    "LinearSpline": "linear splines are not implemented by the engine",
    "Fixed1x1Conv": "convolutional (image) modules are not supported",
    "HaarDownsampling": "image reshaping modules are not supported",
    "HaarUpsampling": "image reshaping modules are not supported",
    "IRevNetDownsampling": "image reshaping modules are not supported",
    "IRevNetUpsampling": "image reshaping modules are not supported",
    "Split": "splitting makes the graph branch; only chains are supported",
    "Concat": "merging makes the graph branch; only chains are supported",
    "Flatten": "reshaping modules are not supported (data must be a flat vector)",
    "Reshape": "reshaping modules are not supported (data must be a flat vector)",
    "GaussianMixtureModel": "the Gaussian mixture module is not supported",
    "InvAutoAct": "InvAutoAct is not supported", "InvAutoActFixed": "InvAutoAct is not supported",
    "InvAutoActTwoSided": "InvAutoActTwoSided is not supported",
    "InvAutoFC": "InvAutoFC is not supported", "InvAutoConv2D": "InvAutoConv2D is not supported",
    "Inverse": "inverted modules (FrEIA Inverse) are not supported",
    "BinnedSpline": "generic binned splines are not supported",
}

_LINEAR_CLASSES = ("Linear", "InducedNormLinear", "SpectralNormLinear")
_RESIDUAL_CLASSES = {"IResNetLayer": "residual", "iResBlock": "nnet", "Residual": "g"}


class ExportError(ValueError):
    """The model cannot be exported; the message names the module and the reason."""


class Residual(nn.Module):
    """An invertible residual block x -> x + g(x) (i-ResNet), for models you build yourself.

    ``g`` is an ``nn.Sequential`` of Linear layers (plain, or with i-ResNet's
    ``spectral_norm_fc`` hook, PyTorch's spectral norm, or Residual Flows' induced-norm
    linears) and activations.  It is invertible when Lip(g) < 1; the engine certifies that
    from the exported weights (GET /v1/models/{m}/certificate).
    """

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, x):
        return x + self.g(x)


class ExportResult:
    """What :func:`export` wrote: ``path``, ``manifest`` (dict), ``tensors`` (name -> torch
    tensor as stored), ``tests`` (dict of float64 tensors: x, y, z, y_out, log_det, x_inv)
    and ``model`` (an innserve._reference.Model that evaluates the file in float64:
    forward, inverse, log_prob)."""

    def __init__(self, path, manifest, tensors, tests):
        self.path = path
        self.manifest = manifest
        self.tensors = tensors
        self.tests = tests
        self.model = ref.Model(manifest, tensors)

    def __repr__(self):
        return "ExportResult(%r, kind=%r, blocks=%d)" % (
            self.path, self.manifest["kind"], len(self.manifest.get("blocks", [])))


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------

def _mro(obj):
    return [c.__name__ for c in type(obj).__mro__]


def _is(obj, *names):
    m = _mro(obj)
    return any(n in m for n in names)


def _cls(obj):
    return type(obj).__name__


def _tensor(v, what, dtype=F64):
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().to(dtype)
    try:
        return torch.as_tensor(v, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a user error here
        raise ExportError("%s: cannot convert %r to a tensor (%s)" % (what, type(v).__name__, e))


class _Ctx:
    """State of one export: stored tensors and options."""

    def __init__(self, opts):
        self.opts = opts
        self.tensors = collections.OrderedDict()
        self.notes = []

    def add(self, name, value, dtype=None, where=None):
        """Store a tensor (float -> F32 unless dtype says otherwise); returns its name."""
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
        else:
            try:
                t = torch.as_tensor(value)
            except Exception as e:  # noqa: BLE001
                raise ExportError("%s: cannot store %r as a tensor (%s)" % (where or name, type(value).__name__, e))
        if t.dtype == torch.bool and dtype is None:
            dtype = torch.bool
        if dtype is None:
            dtype = torch.float32 if t.is_floating_point() else torch.int64
        t = t.to(dtype).contiguous().clone()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ExportError("%s: tensor %s holds NaN or Inf values" % (where or name, name))
        base, k = name, 2
        while name in self.tensors:
            if self.tensors[name].dtype == t.dtype and torch.equal(self.tensors[name], t):
                return name
            name = "%s#%d" % (base, k)
            k += 1
        self.tensors[name] = t
        return name


class _Link:
    """One invertible module of the chain."""

    def __init__(self, module, prefix, label, cond=None):
        self.module = module
        self.prefix = prefix        # tensor name prefix, e.g. "module_list.3."
        self.label = label          # for messages, e.g. "module_list.3 (GLOWCouplingBlock)"
        self.cond = cond            # None, ("c", k) or ("ff", ffnode, k)
        self.block = None


# ---------------------------------------------------------------------------------------
# subnets
# ---------------------------------------------------------------------------------------

def _flatten_seq(net, prefix):
    if isinstance(net, nn.Sequential):
        out = []
        for name, child in net.named_children():
            out.extend(_flatten_seq(child, prefix + name + "."))
        return out
    return [(net, prefix)]


def _lin_weight(ctx, lin, where):
    """The weight a Linear-like module applies in eval mode (float64), spectral norm baked in."""
    o = ctx.opts
    cls = _cls(lin)
    if cls in ("InducedNormLinear", "SpectralNormLinear"):
        W = lin.weight.detach().to(F64)
        coeff = o["spectral_coeff"] if o["spectral_coeff"] is not None else float(lin.coeff)
        if o["spectral_sigma"] == "exact":
            sigma = torch.linalg.matrix_norm(W, 2)
        else:
            sigma = torch.dot(lin.u.detach().to(F64), W @ lin.v.detach().to(F64))
        return W / max(1.0, float(sigma) / coeff)
    par = getattr(lin, "parametrizations", None)
    if par is not None and "weight" in par:
        if o["spectral_sigma"] == "exact" and any(_cls(p) == "_SpectralNorm" for p in par.weight):
            W = par.weight.original.detach().to(F64)
            return W / torch.linalg.matrix_norm(W, 2)
        m2 = copy.deepcopy(lin).to(F64).eval()
        with torch.no_grad():
            return m2.weight.detach().clone()
    if hasattr(lin, "weight_orig"):
        hooks = [h for h in lin._forward_pre_hooks.values() if getattr(h, "name", None) == "weight"]
        W = lin.weight_orig.detach().to(F64)
        u = getattr(lin, "weight_u", None)
        v = getattr(lin, "weight_v", None)
        if o["spectral_sigma"] == "exact" or u is None or v is None:
            sigma = float(torch.linalg.matrix_norm(W.reshape(W.shape[0], -1), 2))
        else:
            sigma = float(torch.dot(u.detach().to(F64), W.reshape(W.shape[0], -1) @ v.detach().to(F64)))
        coeff = o["spectral_coeff"]
        if coeff is None and hooks and hasattr(hooks[0], "coeff"):
            coeff = float(hooks[0].coeff)
        if coeff is not None:          # i-ResNet soft normalisation: W / max(1, sigma / c)
            return W / max(1.0, sigma / coeff)
        if hooks:                      # torch.nn.utils.spectral_norm: hard W / sigma
            return W / sigma
        raise ExportError("%s: has weight_orig but no spectral-norm hook to say how it is "
                          "normalised; pass spectral_coeff=c (i-ResNet: W_orig / max(1, sigma/c))"
                          % where)
    return lin.weight.detach().to(F64)


def _act(mod, where):
    """Activation module -> (manifest layer dict, lipswish scale b or None)."""
    c = _cls(mod)
    if c == "ReLU":
        return {"type": "relu"}, None
    if c == "LeakyReLU":
        return {"type": "leaky_relu", "negative_slope": float(mod.negative_slope)}, None
    if c == "ELU":
        return {"type": "elu", "alpha": float(mod.alpha)}, None
    if c == "Tanh":
        return {"type": "tanh"}, None
    if c == "Sigmoid":
        return {"type": "sigmoid"}, None
    if c == "Softplus":
        return {"type": "softplus", "beta": float(mod.beta), "threshold": float(mod.threshold)}, None
    if c == "GELU":
        return {"type": "gelu", "approximate": str(getattr(mod, "approximate", "none"))}, None
    if c == "SiLU":
        return {"type": "silu"}, None
    if c in ("Swish", "LipSwish"):
        beta = getattr(mod, "beta", None)
        if beta is None:
            return {"type": "lipswish"}, None
        b = float(F.softplus(beta.detach().to(F64)).reshape(-1)[0])
        return {"type": "lipswish"}, b
    return None, None


_REJECT_IN_SUBNET = {
    "Dropout": "Dropout is a training-time layer; remove it (or replace it by nn.Identity) "
               "before exporting",
    "BatchNorm": "BatchNorm depends on running statistics; fold it into the neighbouring "
                 "Linear layer or remove it",
    "LayerNorm": "LayerNorm is not supported in subnets",
    "CLipSwish": "CLipSwish doubles the width and is not supported",
}


def _subnet(ctx, net, prefix, where, allow_preact=False):
    """nn.Sequential/Linear -> manifest subnet {"layers": [...]} (tensors registered).

    With allow_preact (residual blocks) the first layer may be an activation."""
    if net is None:
        raise ExportError("%s: the subnet is missing" % where)
    items = _flatten_seq(net, prefix)
    layers = []      # [kind, payload]; linear payload: [W f64, b f64 or None, key prefix]
    for mod, kp in items:
        c = _cls(mod)
        if isinstance(mod, nn.Linear) or c in _LINEAR_CLASSES:
            W = _lin_weight(ctx, mod, "%s, layer %s%s" % (where, kp, c))
            b = None if getattr(mod, "bias", None) is None else mod.bias.detach().to(F64)
            layers.append(["linear", [W, b, kp]])
            continue
        if c == "Identity":
            continue
        spec, scale = _act(mod, where)
        if spec is not None:
            layers.append(["act", [spec, scale, kp]])
            continue
        for bad, why in _REJECT_IN_SUBNET.items():
            if any(n.startswith(bad) for n in _mro(mod)):
                raise ExportError("%s: subnet layer %s%s is not supported: %s"
                                  % (where, kp, c, why))
        raise ExportError("%s: subnet layer %s%s is not supported: a subnet may contain only "
                          "nn.Linear layers and the activations ReLU, LeakyReLU, ELU, Tanh, "
                          "Sigmoid, Softplus, GELU, SiLU and LipSwish" % (where, kp or "", c))
    if not layers:
        raise ExportError("%s: the subnet has no layers" % where)
    if layers[0][0] != "linear":
        if not allow_preact:
            raise ExportError("%s: the subnet must start with a Linear layer (it starts with %s)"
                              % (where, layers[0][1][0]["type"]))
        # pre-activation (Residual Flows): g(x) = ... W1 act(x).  Prepend an identity Linear,
        # exact in floating point and of norm 1, so the Lipschitz bound is unchanged.
        nxt = next((pl for kind, pl in layers if kind == "linear"), None)
        if nxt is None:
            raise ExportError("%s: the residual branch has no Linear layer" % where)
        d = nxt[0].shape[1]
        layers.insert(0, ["linear", [torch.eye(d, dtype=F64), None, layers[0][1][2] + "input_identity."]])
        ctx.notes.append("%s: input activation exported after an identity Linear" % where)
    # LipSwish with a learned beta: x*sigmoid(b x)/1.1 = lipswish(b x)/b.  Fold b into the
    # Linear before (W, bias *= b) and 1/b into the Linear after (W /= b).
    for i, (kind, pl) in enumerate(layers):
        if kind != "act" or pl[1] is None or abs(pl[1] - 1.0) < 1e-15:
            continue
        b = pl[1]
        if i == 0 or layers[i - 1][0] != "linear" or i + 1 >= len(layers) or \
                layers[i + 1][0] != "linear":
            raise ExportError("%s: LipSwish %s with beta softplus %.6g != 1 must sit between "
                              "two Linear layers to be exported" % (where, pl[2], b))
        prev, nxt = layers[i - 1][1], layers[i + 1][1]
        prev[0] = prev[0] * b
        if prev[1] is not None:
            prev[1] = prev[1] * b
        nxt[0] = nxt[0] / b
        ctx.notes.append("%s: LipSwish %s beta folded into the neighbouring Linear layers"
                         % (where, pl[2]))
    out = []
    for kind, pl in layers:
        if kind == "linear":
            W, b, kp = pl
            L = {"type": "linear", "weight": ctx.add(kp + "weight", W, torch.float32, where)}
            if b is not None:
                L["bias"] = ctx.add(kp + "bias", b, torch.float32, where)
            out.append(L)
        else:
            out.append(dict(pl[0]))
    return {"layers": out}


def _subnet_widths(net):
    """(in, out) of a subnet module (first/last Linear)."""
    lins = [m for m, _ in _flatten_seq(net, "") if isinstance(m, nn.Linear) or
            _cls(m) in _LINEAR_CLASSES]
    if not lins:
        return None, None
    return int(lins[0].in_features), int(lins[-1].out_features)


# ---------------------------------------------------------------------------------------
# block converters: (ctx, module, link) -> manifest block dict (without "cond")
# ---------------------------------------------------------------------------------------

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


def _check_1d(m, link, attr, want):
    v = getattr(m, attr, want)
    if v != want:
        raise ExportError("%s: only flat (1-D) data is supported, this module works on "
                          "%d-D tensors" % (link.label, v if attr == "ndims" else v + 1))


def _width(m):
    dims_in = getattr(m, "dims_in", None)
    if dims_in:
        first = dims_in[0] if isinstance(dims_in[0], (tuple, list)) else dims_in
        return int(first[0])
    return None


def _blk_allinone(ctx, m, link):
    _check_1d(m, link, "input_rank", 0)
    d = int(m.in_channels)
    p = link.prefix
    b = {"type": "AllInOneBlock", "affine_clamping": float(m.clamp),
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
    return b


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


def _blk_coupling(ctx, m, link):
    _check_1d(m, link, "ndims", 1)
    p = link.prefix
    known = ("NICECouplingBlock", "RNVPCouplingBlock", "GLOWCouplingBlock",
             "GINCouplingBlock", "AffineCouplingOneSided", "ConditionalAffineTransform")
    ty = next(n for n in _mro(m) if n in known)
    b = {"type": ty}
    if ty != "ConditionalAffineTransform":
        b["split"] = int(m.split_len1)
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
    _check_1d(m, link, "ndims", 1)
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
    b = {"type": "RationalQuadraticSpline", "split": int(m.split_len1), "bins": int(sb.bins),
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


# Lipschitz constants of the activations (the engine's act_lipschitz, engine/subnet.c)
_ACT_LIPSCHITZ = {"relu": lambda a: 1.0, "tanh": lambda a: 1.0, "softplus": lambda a: 1.0,
                  "lipswish": lambda a: 1.0, "sigmoid": lambda a: 0.25,
                  "leaky_relu": lambda a: max(1.0, abs(a["negative_slope"])),
                  "elu": lambda a: max(1.0, a["alpha"]),
                  "gelu": lambda a: 1.1289, "silu": lambda a: 1.0998}


def _lipschitz_bound(ctx, net):
    """Upper bound of Lip(g) for an exported subnet: the product of the exact spectral norms
    of its stored (float32) weights and of its activations' Lipschitz constants."""
    L = 1.0
    for layer in net["layers"]:
        if layer["type"] == "linear":
            W = ctx.tensors[layer["weight"]].to(F64)
            L *= float(torch.linalg.matrix_norm(W, 2))
        else:
            L *= _ACT_LIPSCHITZ.get(layer["type"], lambda a: math.inf)(layer)
    return L


def _caller_stacklevel():
    """The warnings.warn stacklevel, for its caller in this module, that names the first
    frame outside this module (the user's export() call)."""
    f, level = inspect.currentframe().f_back, 1
    while f is not None and f.f_code.co_filename == __file__:
        f, level = f.f_back, level + 1
    return level


def _check_contraction(ctx, net, link):
    """FrEIA IResNetLayer: refuse (or, with allow_non_contractive, warn about) a residual
    branch that is not a contraction."""
    L = _lipschitz_bound(ctx, net)
    if L < 1.0:
        return
    norms = ", ".join("%.3g" % float(torch.linalg.matrix_norm(ctx.tensors[l["weight"]].to(F64), 2))
                      for l in net["layers"] if l["type"] == "linear")
    what = ("%s: the residual branch is not a contraction: its Lipschitz bound is %.4g >= 1 "
            "(spectral norms of its Linear layers %s), so x + g(x) is not certified invertible "
            "and the daemon's certificate says \"invertible: NO\"" % (link.label, L, norms))
    if ctx.opts["allow_non_contractive"]:
        warnings.warn(what + " (exported anyway: allow_non_contractive=True)",
                      stacklevel=_caller_stacklevel())
        ctx.notes.append(what)
        return
    raise ExportError(what + ". FrEIA's IResNetLayer rescales its weights only when "
                      "lipschitz_correction() is called: call it on every IResNetLayer after "
                      "each optimizer step (and before exporting), or pass "
                      "allow_non_contractive=True to export the block anyway")


def _blk_residual(ctx, m, link, attr):
    if _cls(m) == "IResNetLayer" or "IResNetLayer" in _mro(m):
        dims = getattr(m, "dims_in", None)
        if dims is not None and len(dims) != 1:
            raise ExportError("%s: convolutional IResNetLayer is not supported" % link.label)
    g = getattr(m, attr, None)
    if g is None:
        raise ExportError("%s: residual block without its residual branch %r" % (link.label, attr))
    net = _subnet(ctx, g, link.prefix + attr + ".", "%s.%s" % (link.label, attr),
                  allow_preact=True)
    if _cls(m) == "IResNetLayer" or "IResNetLayer" in _mro(m):
        _check_contraction(ctx, net, link)
    b = {"type": "IResNetBlock", "subnet": net}
    if ctx.opts["iresnet_logdet"] == "series":
        b["logdet"] = "series"
        b["series_terms"] = int(ctx.opts["iresnet_series_terms"])
    return b


_CONVERTERS = collections.OrderedDict([
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
])


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


# ---------------------------------------------------------------------------------------
# chains: SequenceINN, GraphINN, lists
# ---------------------------------------------------------------------------------------

def _node_pair(entry):
    """A GraphINN input/condition entry -> node (HEAD: (node, idx); 0.2: node or tuple)."""
    if isinstance(entry, (tuple, list)):
        return entry[0], (entry[1] if len(entry) > 1 else 0)
    return entry, 0


def _chain(model):
    """-> (links, input shape tuple or None, framework name)."""
    names = _mro(model)
    if "SequenceINN" in names:
        shape = tuple(model.shapes[0]) if getattr(model, "shapes", None) else None
        conds = list(getattr(model, "conditions", [None] * len(model.module_list)))
        links = []
        for i, mod in enumerate(model.module_list):
            k = conds[i] if i < len(conds) else None
            links.append(_Link(mod, "module_list.%d." % i, "module_list.%d (%s)" % (i, _cls(mod)),
                               None if k is None else ("c", int(k))))
        return links, shape, "FrEIA"
    if "GraphINN" in names or "ReversibleGraphNet" in names:
        return _graph_chain(model)
    if "SequentialFlow" in names and hasattr(model, "chain"):
        links = [_Link(mod, "chain.%d." % i, "chain.%d (%s)" % (i, _cls(mod)))
                 for i, mod in enumerate(model.chain)]
        return links, None, "residual-flows"
    if isinstance(model, (list, tuple, nn.ModuleList, nn.Sequential)):
        links = []
        for i, item in enumerate(model):
            cond = None
            if isinstance(item, (tuple, list)):
                item, k = item
                cond = None if k is None else ("c", int(k))
            links.append(_Link(item, "blocks.%d." % i, "blocks[%d] (%s)" % (i, _cls(item)), cond))
        return links, None, "torch"
    return [_Link(model, "blocks.0.", "blocks[0] (%s)" % _cls(model))], None, "torch"


def _infer_width(m, residual_blocks):
    w = _width(m)
    if w is not None:
        return w
    for cls_name in _mro(m):
        attr = dict(_RESIDUAL_CLASSES, **(residual_blocks or {})).get(cls_name)
        if attr and getattr(m, attr, None) is not None:
            return _subnet_widths(getattr(m, attr))[0]
    for attr in ("weight", "log_scale", "s", "perm"):      # elementwise modules
        t = getattr(m, attr, None)
        if isinstance(t, torch.Tensor) and t.dim() <= 2:
            return int(t.numel())
    return None


def _graph_chain(g):
    ins = list(getattr(g, "in_nodes", []))
    outs = list(getattr(g, "out_nodes", []))
    cnodes = list(getattr(g, "condition_nodes", []))
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError("GraphINN with %d input nodes and %d output nodes: only a chain from "
                          "one InputNode to one OutputNode is supported" % (len(ins), len(outs)))
    node = ins[0]
    shape = tuple(getattr(node, "dims", ()))
    links, seen = [], []
    while True:
        nouts = [o for o in node.outputs]
        if len(nouts) != 1 or nouts[0] is None:
            raise ExportError("GraphINN node %r (%s) has %d outputs: branching graphs are not "
                              "supported, only chains" % (node.name, _node_type(node), len(nouts)))
        nxt = nouts[0][0]
        if "OutputNode" in _mro(nxt):
            break
        if len(nxt.inputs) != 1:
            raise ExportError("GraphINN node %r (%s) has %d inputs: merging graphs are not "
                              "supported, only chains" % (nxt.name, _node_type(nxt), len(nxt.inputs)))
        conds = list(getattr(nxt, "conditions", []) or [])
        cond = None
        label = "node %r (%s)" % (nxt.name, _node_type(nxt))
        if len(conds) > 1:
            raise ExportError("%s reads %d conditions: the engine gives a block at most one "
                              "condition" % (label, len(conds)))
        if conds:
            cn, _ = _node_pair(conds[0])
            if "FeedForwardNode" in _mro(cn):
                src = list(getattr(cn, "conditions", []))
                if len(src) != 1 or _node_pair(src[0])[0] not in cnodes:
                    raise ExportError("%s: its FeedForwardNode %r must read exactly one "
                                      "ConditionNode" % (label, cn.name))
                cond = ("ff", cn, cnodes.index(_node_pair(src[0])[0]))
            elif cn in cnodes:
                cond = ("c", cnodes.index(cn))
            else:
                raise ExportError("%s: condition from node %r (%s) is not supported"
                                  % (label, getattr(cn, "name", "?"), _node_type(cn)))
        links.append(_Link(nxt.module, "graph.%d." % len(links), label, cond))
        seen.append(nxt)
        node = nxt
    all_nodes = list(getattr(g, "node_list", None) or getattr(g, "node_list_fwd", []) or [])
    for n in all_nodes:
        t = _mro(n)
        if any(x in t for x in ("InputNode", "OutputNode", "ConditionNode", "FeedForwardNode")):
            continue
        if n not in seen:
            raise ExportError("GraphINN node %r (%s) is not on the chain from the input to the "
                              "output: only chains are supported" % (n.name, _node_type(n)))
    return links, shape, "FrEIA"


def _node_type(node):
    mt = getattr(node, "module_type", None)
    if mt is not None:
        return getattr(mt, "__name__", str(mt))
    return _cls(node)


# ---------------------------------------------------------------------------------------
# running the user's modules (the cross-check)
# ---------------------------------------------------------------------------------------

def _is_residual(ctx, m):
    names = _mro(m)
    res = dict(_RESIDUAL_CLASSES)
    res.update(ctx.opts["residual_blocks"] or {})
    return any(n in names for n in res)


def _run_module(ctx, m, h, c):
    """Run one user module forward on float64 input; -> (out, log_det or None)."""
    try:
        mm = copy.deepcopy(m).to(device="cpu", dtype=F64).eval()
    except Exception:  # noqa: BLE001 - fall back on the module itself in float32
        mm = None
    hh = h if mm is not None else h.float()
    cc = None if c is None else (c if mm is not None else c.float())
    target = mm if mm is not None else m
    with torch.no_grad():
        if (_is_residual(ctx, m) and not _is(m, "IResNetLayer")) or _cls(m) == "ActNorm1d":
            y = target(hh)
            if isinstance(y, (tuple, list)):
                y = y[0]
            return y.to(F64), None, (mm is None)
        jac = not _is(m, "IResNetLayer")
        if cc is not None:
            out = target([hh], c=[cc], rev=False, jac=jac)
        else:
            out = target([hh], rev=False, jac=jac)
    y, ld = out[0], (out[1] if len(out) > 1 else None)
    if isinstance(y, (list, tuple)):
        y = y[0]
    if ld is not None and not isinstance(ld, torch.Tensor):
        ld = torch.full((h.shape[0],), float(ld), dtype=F64)
    elif ld is not None:
        ld = ld.to(F64).reshape(-1).expand(h.shape[0]) if ld.numel() == 1 else ld.to(F64).reshape(-1)
    if not jac:
        ld = None
    return y.to(F64), ld, (mm is None)


def _close(a, b, tol):
    return float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max())) if a.numel() else True


def _check_block(ctx, link, b, h, c, out, ld):
    """Compare the reference block with the user's module on input h."""
    try:
        y, mld, f32 = _run_module(ctx, link.module, h, c)
    except Exception as e:  # noqa: BLE001
        raise ExportError("%s: running the module to check the export failed: %s: %s "
                          "(pass check=False to skip the check)" % (link.label, type(e).__name__, e))
    tol = 1e-4 if f32 else ctx.opts["check_tol"]
    if y.shape != out.shape:
        raise ExportError("%s: the module returned shape %s, the exported block %s"
                          % (link.label, tuple(y.shape), tuple(out.shape)))
    if not _close(out, y, tol):
        raise ExportError(
            "%s: the exported block does not reproduce the module's own forward (max |diff| "
            "%.3g): the module may be a modified subclass or use an option the engine does not "
            "implement (pass check=False to skip this check)" % (link.label, float((out - y).abs().max())))
    skip_ld = b["type"] in ("IResNetBlock", "LearnedElementwiseScaling") and mld is None
    if mld is not None and not skip_ld:
        if not _close(ld, mld, tol * max(1, h.shape[1])):
            raise ExportError("%s: the exported block's log-det differs from the module's (max "
                              "|diff| %.3g)" % (link.label, float((ld - mld).abs().max())))


def _resolve_clamp_formula(ctx, link, b, S, h, c):
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
            out, _ = ref.block(S, bb, h, c)
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


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------

def _std_pair(v, n, what):
    if v is None:
        return None
    if isinstance(v, dict):
        mean, std = v.get("mean"), v.get("std")
    else:
        mean, std = v
    mean = _tensor(mean, what + " mean").reshape(-1)
    std = _tensor(std, what + " std").reshape(-1)
    if mean.numel() == 1 and n > 1:
        mean = mean.expand(n)
    if std.numel() == 1 and n > 1:
        std = std.expand(n)
    if mean.numel() != n or std.numel() != n:
        raise ExportError("standardize %s: mean and std need %d values (got %d and %d)"
                          % (what, n, mean.numel(), std.numel()))
    if not bool((std.float() > 0).all()) or not bool(torch.isfinite(mean).all()):
        raise ExportError("standardize %s: std must be > 0 and mean finite" % what)
    return mean, std


def _names(v, n, what):
    if v is None:
        return None
    v = [str(s) for s in v]
    if len(v) != n:
        raise ExportError("%s: %d names for %d columns" % (what, len(v), n))
    return v


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


def export(model, path, kind=None, *, conditions=None, cond_net=None, dims=None, layout=None,
           x_names=None, y_names=None, standardize=None, description="",
           freia_version="auto", test_inputs=None, n_tests=8, seed=0, rtol=1e-4, atol=1e-4,
           inn_sigma=None, spectral_sigma="stored", spectral_coeff=None, residual_blocks=None,
           iresnet_logdet="exact", iresnet_series_terms=10, source=None, check=True,
           check_tol=1e-5, allow_non_contractive=False):
    """Write ``model`` to ``path`` as an innserve checkpoint; returns an :class:`ExportResult`.

    model
        FrEIA ``SequenceINN`` / chain ``GraphINN``; a list of invertible modules (items may
        be ``(module, cond_index)``); Residual Flows ``SequentialFlow``; or, with
        ``kind="mlp"``, an ``nn.Sequential`` of Linear layers and activations.
    kind
        ``"flow"``, ``"cinn"``, ``"inn"`` or ``"mlp"``; default: ``mlp`` for an
        ``nn.Sequential`` of Linear/activation layers, ``cinn`` when a block reads a
        condition, else ``flow``.  ``inn`` must be asked for.
    conditions
        cinn: one entry per condition index k (SequenceINN ``cond=k``, GraphINN ConditionNode
        order): ``None`` (c_k is the standardized y) or an ``nn.Sequential`` conditioning
        network applied to the standardized y.  Default: every condition is y.
        ``cond_net=net`` is short for ``conditions=[net]``.
    dims
        ``{"y": n}`` for a cinn whose y width cannot be inferred; for ``inn`` the Ardizzone
        slices ``{"x", "y", "z", "pad_x", "pad_y"}`` with x + pad_x = z + pad_y + y = width
        (missing pads are derived).  ``layout`` gives the segment order, default
        ``{"input": ["x", "pad"], "output": ["z", "pad", "y"]}``.
    x_names, y_names, description
        Shown in the metadata and CSV headers.
    standardize
        ``{"x": (mean, std), "y": (mean, std)}`` (either may be left out): the model was
        trained on (x - mean) / std; the engine works in physical units.
    freia_version
        AllInOneBlock clamp formula: ``"head"`` (FrEIA >= 2023-08, s = a*tanh(x/a)),
        ``"0.2"`` (PyPI 0.2, s = a*tanh(x)) or ``"auto"`` (default: run each block both ways
        and keep the formula that reproduces it; if that cannot decide, read the module's
        source; else HEAD with a warning).
    test_inputs
        x rows (or ``(x, y)`` / ``{"x": .., "y": ..}``) for the embedded test vectors;
        default ``n_tests`` rows drawn with ``seed`` around the standardization.
    rtol, atol
        Tolerances written into the manifest for the engine's self-test at load.
    inn_sigma
        inn: ``{"sigma_y": .., "sigma_pad": ..}`` for log_prob.
    spectral_sigma
        i-ResNet spectral norms: ``"stored"`` (default) uses sigma = u^T W v from the stored
        u, v as the model's eval forward does; ``"exact"`` recomputes sigma by SVD (use it
        for Residual Flows EMA checkpoints, whose u, v belong to the non-EMA weights; the
        module cross-check is then skipped for those blocks).
    spectral_coeff
        Override the coefficient c of soft spectral normalisation W / max(1, sigma/c).
    residual_blocks
        ``{class name: attribute}`` for your own residual block classes computing
        x + getattr(block, attribute)(x).
    iresnet_logdet, iresnet_series_terms
        i-ResNet log-determinant the engine reports: ``"exact"`` (default; the true
        log|det(I + J_g)|) or ``"series"`` (the truncated power series with
        ``iresnet_series_terms`` terms and exact traces, to reproduce the densities of a
        model trained with that estimator; needs Lip(g) < 1).
    check
        Run the model's own modules and refuse a file that does not reproduce them.
    allow_non_contractive
        A FrEIA ``IResNetLayer`` is invertible only while its residual branch g is a
        contraction (Lip(g) < 1), which FrEIA enforces only when ``lipschitz_correction()``
        is called.  By default a block whose Lipschitz bound (the product of its layers'
        exact spectral norms and its activations' bounds, as the daemon's certificate
        computes it) is not below 1 is refused, naming the block and the bound; with
        ``True`` it is exported with a warning (``warnings.warn``) and the daemon certifies
        it "invertible: NO".
    """
    if freia_version not in FREIA_VERSIONS:
        raise ExportError("freia_version must be one of %s" % (FREIA_VERSIONS,))
    if spectral_sigma not in ("stored", "exact"):
        raise ExportError("spectral_sigma must be 'stored' or 'exact'")
    if iresnet_logdet not in ("exact", "series") or not 1 <= int(iresnet_series_terms) <= 1000:
        raise ExportError("iresnet_logdet must be 'exact' or 'series' with 1 to 1000 terms")
    if kind not in (None, "flow", "cinn", "inn", "mlp"):
        raise ExportError("kind must be flow, cinn, inn or mlp (got %r)" % (kind,))
    ctx = _Ctx({"freia_version": freia_version, "spectral_sigma": spectral_sigma,
                "spectral_coeff": spectral_coeff, "residual_blocks": residual_blocks,
                "iresnet_logdet": iresnet_logdet, "iresnet_series_terms": iresnet_series_terms,
                "check_tol": check_tol, "allow_non_contractive": bool(allow_non_contractive)})
    if cond_net is not None:
        if conditions is not None:
            raise ExportError("give either conditions or cond_net, not both")
        conditions = [cond_net]
    dims = dict(dims or {})

    model = _on_cpu(model)
    if conditions is not None:
        conditions = [_on_cpu(c) for c in conditions]
    if kind is None and isinstance(model, (nn.Sequential, nn.Linear)) and _plain_mlp(model):
        kind = "mlp"
    if kind == "mlp":
        return _export_mlp(ctx, model, path, dims, x_names, y_names, standardize, description,
                           test_inputs, n_tests, seed, rtol, atol, source, check)

    links, shape, framework = _chain(model)
    if not links:
        raise ExportError("the model has no blocks")
    if shape is not None and len(shape) != 1:
        raise ExportError("the model's input has shape %s: only flat (1-D) data is supported"
                          % (shape,))
    width = shape[0] if shape else _infer_width(links[0].module, residual_blocks)
    if width is None:
        if "x" in dims and kind != "inn":
            width = int(dims["x"])
        elif "x" in dims and kind == "inn":
            width = int(dims["x"]) + int(dims.get("pad_x", 0))
        else:
            raise ExportError("cannot tell the width of the model's input: pass dims={'x': n}")
    uses_cond = any(l.cond is not None for l in links)
    if kind is None:
        kind = "cinn" if uses_cond else "flow"
    if kind in ("flow", "inn") and uses_cond:
        bad = next(l for l in links if l.cond is not None)
        raise ExportError("%s reads a condition but kind is %s (use kind='cinn')" % (bad.label, kind))
    if kind == "cinn" and not uses_cond:
        raise ExportError("kind cinn but no block reads a condition")

    # ---- blocks ----
    blocks = []
    for l in links:
        b = _convert(ctx, l)
        l.block = b
        blocks.append(b)

    # ---- conditions (cinn) ----
    man_conds, cond_keys = [], {}
    dy = None
    if kind == "cinn":
        conditions = list(conditions or [])
        kmax = max(l.cond[-1] if l.cond[0] == "ff" else l.cond[1] for l in links if l.cond)
        while len(conditions) <= kmax:
            conditions.append(None)
        dy = dims.get("y")
        for l in links:            # infer y width
            if l.cond is None or dy is not None:
                continue
            k = l.cond[1] if l.cond[0] == "c" else l.cond[2]
            if conditions[k] is None and l.cond[0] == "c":
                dc = getattr(l.module, "dims_c", None)
                if dc:
                    dy = int(sum(s[0] for s in dc))
            elif conditions[k] is not None:
                dy = _subnet_widths(conditions[k])[0]
        if dy is None:
            for l in links:
                if l.cond is not None and l.cond[0] == "ff":
                    dy = _subnet_widths(l.cond[1].module)[0]
        if dy is None:
            raise ExportError("cannot tell the width of y: pass dims={'y': n}")
        dy = int(dy)
        for l in links:
            if l.cond is None:
                continue
            key = (l.cond[0], l.cond[-1] if l.cond[0] == "c" else id(l.cond[1]))
            if key not in cond_keys:
                k = l.cond[1] if l.cond[0] == "c" else l.cond[2]
                layers = []
                if conditions[k] is not None:
                    layers += _subnet(ctx, conditions[k], "cond.%d." % k,
                                      "conditions[%d]" % k)["layers"]
                if l.cond[0] == "ff":
                    ff = l.cond[1]
                    layers += _subnet(ctx, ff.module, "cond_ff.%s." % ff.name,
                                      "FeedForwardNode %r" % ff.name)["layers"]
                cond_keys[key] = len(man_conds)
                man_conds.append({"net": {"layers": layers} if layers else None,
                                  "_src": (l.cond, conditions[k])})
            l.block["cond"] = cond_keys[key]
            # width check
            want = getattr(l.module, "dims_c", None)
            entry = man_conds[cond_keys[key]]
            have = dy if entry["net"] is None else _net_out_width(ctx, entry["net"])
            if want:
                w = int(sum(s[0] for s in want))
                if w != have:
                    raise ExportError("%s expects a condition of width %d but condition %d has "
                                      "width %d" % (l.label, w, cond_keys[key], have))

    # ---- dims / layout ----
    D = int(width)
    if kind == "flow":
        man_dims = {"x": D}
        dx = D
    elif kind == "cinn":
        man_dims = {"x": D, "y": dy}
        dx = D
    else:
        try:
            dx, dyy, dz = int(dims["x"]), int(dims["y"]), int(dims["z"])
        except KeyError as e:
            raise ExportError("kind inn needs dims with x, y and z (missing %s)" % e)
        px = int(dims.get("pad_x", D - dx))
        py = int(dims.get("pad_y", D - dz - dyy))
        if dx + px != D or dz + py + dyy != D or min(dx, px, dz, py, dyy) < 0:
            raise ExportError("inn dims x %d + pad_x %d and z %d + pad_y %d + y %d must both "
                              "equal the network width %d" % (dx, px, dz, py, dyy, D))
        man_dims = {"x": dx, "y": dyy, "z": dz, "pad_x": px, "pad_y": py}
        dy = dyy

    manifest = collections.OrderedDict()
    manifest["format"] = "innserve-manifest"
    manifest["version"] = 1
    manifest["kind"] = kind
    manifest["description"] = str(description or "")
    src = {"framework": framework, "exporter": "innserve %s" % __version__,
           "torch": torch.__version__}
    fi = _freia_info(links)
    if fi:
        src.update(fi)
    if source:
        src.update(source)
    manifest["source"] = src
    manifest["dims"] = man_dims
    names = {}
    xn, yn = _names(x_names, dx, "x_names"), _names(y_names, dy or 0, "y_names")
    if xn:
        names["x"] = xn
    if yn:
        names["y"] = yn
    if names:
        manifest["names"] = names
    std = _add_standardize(ctx, manifest, standardize, dx, dy)
    if kind == "cinn":
        manifest["conditions"] = [{"net": c["net"]} for c in man_conds]
    if kind == "inn":
        lay = dict(layout or {})
        manifest["layout"] = {"input": list(lay.get("input", ["x", "pad"])),
                              "output": list(lay.get("output", ["z", "pad", "y"]))}
        if inn_sigma:
            manifest["inn"] = {k: float(v) for k, v in dict(inn_sigma).items()}
    manifest["blocks"] = blocks

    # ---- test vectors (and the cross-check) ----
    x, y = _test_inputs(test_inputs, n_tests, seed, dx, dy if kind == "cinn" else 0, std)
    S = ref.Store(ctx.tensors)
    M = ref.Model(manifest, ctx.tensors)
    with torch.no_grad():
        xs, _ = M.std_x(x)
    if kind == "inn":
        h = M.assemble("input", {"x": xs}, x.shape[0])
        conds_ref = []
    else:
        h = xs
        conds_ref = M.conditions(y) if kind == "cinn" else []
        if kind == "cinn" and check:
            _check_conditions(ctx, man_conds, conds_ref, M.std_y(y))
    for l, b in zip(links, blocks):
        c = conds_ref[b["cond"]] if "cond" in b else None
        if b["type"] == "AllInOneBlock":
            _resolve_clamp_formula(ctx, l, b, S, h, c)
        out, ld = ref.block(S, b, h, c)
        if check and not (b["type"] == "IResNetBlock" and spectral_sigma == "exact"):
            _check_block(ctx, l, b, h, c, out, ld)
        h = out.detach()
    for c in man_conds:
        c.pop("_src", None)
    tests = _test_vectors(ctx, manifest, M, x, y, rtol, atol)
    _write(path, manifest, ctx.tensors)
    res = ExportResult(path, json.loads(json.dumps(manifest)), dict(ctx.tensors), tests)
    res.notes = list(ctx.notes)
    return res


def _on_cpu(model):
    """A CPU copy of a model that lives on another device (the original is not touched)."""
    if isinstance(model, (list, tuple)):
        return type(model)(_on_cpu(m) if not isinstance(m, tuple) else (_on_cpu(m[0]), m[1])
                           for m in model)
    if isinstance(model, nn.Module):
        tensors = list(model.parameters()) + list(model.buffers())
        if any(t.device.type != "cpu" for t in tensors):
            return copy.deepcopy(model).cpu()
    return model


def _net_out_width(ctx, net):
    for L in reversed(net["layers"]):
        if L["type"] == "linear":
            return int(ctx.tensors[L["weight"]].shape[0])
    return None


def _check_conditions(ctx, man_conds, conds_ref, ys):
    for k, c in enumerate(man_conds):
        cond, user_net = c["_src"]
        v = ys
        with torch.no_grad():
            try:
                if user_net is not None:
                    v = copy.deepcopy(user_net).to(F64).eval()(v)
                if cond[0] == "ff":
                    v = copy.deepcopy(cond[1].module).to(F64).eval()(v)
            except Exception as e:  # noqa: BLE001
                raise ExportError("conditions[%d]: running the conditioning network failed: %s"
                                  % (k, e))
        if not _close(conds_ref[k], v.to(F64), ctx.opts["check_tol"]):
            raise ExportError("conditions[%d]: the exported conditioning network does not "
                              "reproduce the module's output" % k)


def _plain_mlp(model):
    try:
        for m, _ in _flatten_seq(model, ""):
            if not (isinstance(m, nn.Linear) or _cls(m) in _LINEAR_CLASSES or
                    _cls(m) == "Identity" or _act(m, "")[0] is not None):
                return False
    except Exception:  # noqa: BLE001
        return False
    return True


def _add_standardize(ctx, manifest, standardize, dx, dy):
    std = {}
    standardize = dict(standardize or {})
    unknown = set(standardize) - {"x", "y"}
    if unknown:
        raise ExportError("standardize: unknown keys %s (use 'x' and 'y')" % sorted(unknown))
    out = {}
    for which, n in (("x", dx), ("y", dy)):
        if standardize.get(which) is None:
            continue
        if not n:
            raise ExportError("standardize: this model has no %s" % which)
        mean, sd = _std_pair(standardize[which], n, which)
        out[which] = {"mean": ctx.add("std.%s.mean" % which, mean, torch.float32),
                      "std": ctx.add("std.%s.std" % which, sd, torch.float32)}
        std[which] = (ctx.tensors[out[which]["mean"]].to(F64), ctx.tensors[out[which]["std"]].to(F64))
    if out:
        manifest["standardize"] = out
    return std


def _test_inputs(test_inputs, n, seed, dx, dy, std):
    gen = torch.Generator().manual_seed(int(seed))
    x = y = None
    if test_inputs is not None:
        if isinstance(test_inputs, dict):
            x, y = test_inputs.get("x"), test_inputs.get("y")
        elif isinstance(test_inputs, (tuple, list)) and len(test_inputs) == 2 and dy and \
                not isinstance(test_inputs[0], (int, float)):
            x, y = test_inputs
        else:
            x = test_inputs
        x = _tensor(x, "test_inputs x").reshape(-1, dx)
        n = x.shape[0]
        if y is not None:
            y = _tensor(y, "test_inputs y").reshape(-1, dy)
            if y.shape[0] == 1 and n > 1:
                y = y.expand(n, dy)
            if y.shape[0] != n:
                raise ExportError("test_inputs: %d x rows but %d y rows" % (n, y.shape[0]))
    if x is None:
        x = torch.randn(n, dx, generator=gen, dtype=F64)
        if "x" in std:
            x = std["x"][0] + std["x"][1] * x
    if dy and y is None:
        y = torch.randn(n, dy, generator=gen, dtype=F64)
        if "y" in std:
            y = std["y"][0] + std["y"][1] * y
    if n < 1 or n > 4096:
        raise ExportError("test_inputs: 1 to 4096 rows needed")
    # the engine receives float32 inputs: expectations are computed from the rounded values
    x = x.to(torch.float32).to(F64)
    if y is not None:
        y = y.to(torch.float32).to(F64)
    return x, y


def _test_vectors(ctx, manifest, M, x, y, rtol, atol):
    kind = manifest["kind"]
    f = M.forward(x, y)
    tests = {"x": x}
    man = {"x": ctx.add("test.x", x, F64)}
    if kind == "cinn":
        tests["y"] = y
        man["y"] = ctx.add("test.y", y, F64)
    for k in ("z", "y_out", "log_det"):
        if k in f:
            v = f[k].detach()
            if not bool(torch.isfinite(v).all()):
                raise ExportError("the model gives non-finite %s on the test inputs" % k)
            tests[k] = v
            man[k] = ctx.add("test." + k, v, F64)
    if kind == "inn":
        with torch.no_grad():
            xi, _ = M.inverse(f["z"], f["y_out"])
        if bool(torch.isfinite(xi).all()):
            tests["x_inv"] = xi.detach()
            man["x_inv"] = ctx.add("test.x_inv", xi, F64)
    man["rtol"] = float(rtol)
    man["atol"] = float(atol)
    manifest["tests"] = man
    return tests


def _export_mlp(ctx, model, path, dims, x_names, y_names, standardize, description,
                test_inputs, n_tests, seed, rtol, atol, source, check):
    net = _subnet(ctx, model, "network.", "network")
    dx = int(ctx.tensors[net["layers"][0]["weight"]].shape[1])
    dy = _net_out_width(ctx, net)
    manifest = collections.OrderedDict()
    manifest["format"] = "innserve-manifest"
    manifest["version"] = 1
    manifest["kind"] = "mlp"
    manifest["description"] = str(description or "")
    src = {"framework": "torch", "exporter": "innserve %s" % __version__, "torch": torch.__version__}
    if source:
        src.update(source)
    manifest["source"] = src
    manifest["dims"] = {"x": dx, "y": dy}
    names = {}
    xn, yn = _names(x_names, dx, "x_names"), _names(y_names, dy, "y_names")
    if xn:
        names["x"] = xn
    if yn:
        names["y"] = yn
    if names:
        manifest["names"] = names
    std = _add_standardize(ctx, manifest, standardize, dx, dy)
    manifest["network"] = net
    x, _ = _test_inputs(test_inputs, n_tests, seed, dx, 0, std)
    M = ref.Model(manifest, ctx.tensors)
    if check:
        xs, _ = M.std_x(x)
        want = ref.subnet(ref.Store(ctx.tensors), net, xs)
        with torch.no_grad():
            got = copy.deepcopy(model).to(F64).eval()(xs)
        if not _close(want, got.to(F64), ctx.opts["check_tol"]):
            raise ExportError("network: the exported layers do not reproduce the module's output")
    tests = _test_vectors(ctx, manifest, M, x, None, rtol, atol)
    _write(path, manifest, ctx.tensors)
    res = ExportResult(path, json.loads(json.dumps(manifest)), dict(ctx.tensors), tests)
    res.notes = list(ctx.notes)
    return res


def _write(path, manifest, tensors):
    text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
    _safetensors.write(path, tensors, {"format": "innserve", "manifest": text})


def export_sbi(obj, path, **kw):
    """Export an sbi posterior or density estimator (sbi's MAF); see innserve._sbi."""
    from ._sbi import export_sbi as _export_sbi
    return _export_sbi(obj, path, **kw)
