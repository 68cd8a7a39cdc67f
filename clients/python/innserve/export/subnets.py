"""innserve.export.subnets: subnets (``nn.Sequential`` stacks of ``nn.Linear`` and
activations; on images also ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.ConvTranspose1d`` /
``nn.ConvTranspose2d``, ``nn.Flatten`` and ``nn.Unflatten``) -> the manifest's
``{"layers": [...]}``, the engine's engine/subnet.c.  Linear
layers with spectral normalisation (i-ResNet's hook, PyTorch's, Residual Flows' induced-norm
linears) are stored with their effective weight; a learned LipSwish beta is folded into the
neighbouring Linear layers."""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import F64, ExportError, _cls, _mro

_LINEAR_CLASSES = ("Linear", "InducedNormLinear", "SpectralNormLinear")


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


_CONV_TYPES = {"Conv1d": "conv1d", "Conv2d": "conv2d", "ConvTranspose1d": "conv_transpose1d",
               "ConvTranspose2d": "conv_transpose2d"}


def _conv(ctx, mod, kp, where):
    """nn.Conv1d/2d, nn.ConvTranspose1d/2d -> a manifest conv layer (tensors registered)."""
    c = _cls(mod)
    t = _CONV_TYPES[c]
    mode = getattr(mod, "padding_mode", "zeros")
    if mode not in ("zeros", "circular") or (mode != "zeros" and t.startswith("conv_t")):
        raise ExportError("%s: subnet layer %s%s has padding_mode %r; the engine supports "
                          "'zeros'%s" % (where, kp, c, mode,
                                         "" if t.startswith("conv_t") else " and 'circular'"))
    if hasattr(mod, "weight_orig") or getattr(mod, "parametrizations", None) is not None:
        raise ExportError("%s: subnet layer %s%s has a weight parametrisation (spectral "
                          "norm); convolutions are exported with their plain weight only"
                          % (where, kp, c))
    L = {"type": t, "weight": ctx.add(kp + "weight", mod.weight.detach().to(F64),
                                      torch.float32, where)}
    if mod.bias is not None:
        L["bias"] = ctx.add(kp + "bias", mod.bias.detach().to(F64), torch.float32, where)
    L["stride"] = [int(v) for v in mod.stride]
    L["padding"] = mod.padding if isinstance(mod.padding, str) else [int(v) for v in mod.padding]
    L["dilation"] = [int(v) for v in mod.dilation]
    L["groups"] = int(mod.groups)
    if t.startswith("conv_transpose"):
        L["output_padding"] = [int(v) for v in mod.output_padding]
    else:
        L["padding_mode"] = mode
    return L


def _has_image_layers(net):
    return any(_cls(m) in _CONV_TYPES or _cls(m) in ("Flatten", "Unflatten")
               for m, _ in _flatten_seq(net, ""))


def _subnet(ctx, net, prefix, where, allow_preact=False):
    """nn.Sequential/Linear -> manifest subnet {"layers": [...]} (tensors registered).

    With allow_preact (residual blocks) the first layer may be an activation."""
    if net is None:
        raise ExportError("%s: the subnet is missing" % where)
    items = _flatten_seq(net, prefix)
    image = _has_image_layers(net)
    layers = []      # [kind, payload]; linear payload: [W f64, b f64 or None, key prefix]
    for mod, kp in items:
        c = _cls(mod)
        if c in _CONV_TYPES:
            layers.append(["layer", [_conv(ctx, mod, kp, where), None, kp]])
            continue
        if c == "Flatten":
            if (mod.start_dim, mod.end_dim) != (1, -1):
                raise ExportError("%s: subnet layer %sFlatten(start_dim=%d, end_dim=%d): only "
                                  "nn.Flatten() (start_dim 1, end_dim -1) is supported"
                                  % (where, kp, mod.start_dim, mod.end_dim))
            layers.append(["layer", [{"type": "flatten"}, None, kp]])
            continue
        if c == "Unflatten":
            if mod.dim != 1:
                raise ExportError("%s: subnet layer %sUnflatten(dim=%d): only dim 1 is supported"
                                  % (where, kp, mod.dim))
            layers.append(["layer", [{"type": "unflatten",
                                      "shape": [int(v) for v in mod.unflattened_size]}, None, kp]])
            continue
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
                          "Sigmoid, Softplus, GELU, SiLU and LipSwish (and on images Conv1d, "
                          "Conv2d, ConvTranspose1d, ConvTranspose2d, Flatten, Unflatten)"
                          % (where, kp or "", c))
    if not layers:
        raise ExportError("%s: the subnet has no layers" % where)
    if layers[0][0] == "act" and image and allow_preact:
        # pre-activation on images (the official i-ResNet's conv blocks): g(x) = ... W1 act(x).
        # Prepend an identity 1x1 convolution, exact and of norm 1.
        nxt = next((pl for kind, pl in layers if kind == "layer" and pl[0]["type"] in
                    _CONV_TYPES.values()), None)
        if nxt is None:
            raise ExportError("%s: the residual branch has no convolution" % where)
        w = ctx.tensors[nxt[0]["weight"]]
        C = int(w.shape[1]) * int(nxt[0].get("groups", 1))
        if nxt[0]["type"].startswith("conv_transpose"):
            C = int(w.shape[0])
        one_d = nxt[0]["type"].endswith("1d")
        eye = torch.eye(C, dtype=F64).reshape(C, C, *([1] if one_d else [1, 1]))
        kp = layers[0][1][2] + "input_identity."
        spec = {"type": "conv1d" if one_d else "conv2d",
                "weight": ctx.add(kp + "weight", eye, torch.float32, where)}
        layers.insert(0, ["layer", [spec, None, kp]])
        ctx.notes.append("%s: input activation exported after an identity 1x1 convolution"
                         % where)
    if layers[0][0] != "linear" and not image:
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


def _net_out_width(ctx, net):
    for L in reversed(net["layers"]):
        if L["type"] == "linear":
            return int(ctx.tensors[L["weight"]].shape[0])
    return None


def _plain_mlp(model):
    try:
        for m, _ in _flatten_seq(model, ""):
            if not (isinstance(m, nn.Linear) or _cls(m) in _LINEAR_CLASSES or
                    _cls(m) == "Identity" or _act(m, "")[0] is not None):
                return False
    except Exception:  # noqa: BLE001
        return False
    return True


# Lipschitz constants of the activations (the engine's act_lipschitz, engine/subnet.c)
_ACT_LIPSCHITZ = {"relu": lambda a: 1.0, "tanh": lambda a: 1.0, "softplus": lambda a: 1.0,
                  "lipswish": lambda a: 1.0, "sigmoid": lambda a: 0.25,
                  "leaky_relu": lambda a: max(1.0, abs(a["negative_slope"])),
                  "elu": lambda a: max(1.0, a["alpha"]),
                  "gelu": lambda a: 1.1289, "silu": lambda a: 1.0998}


def _conv_operator(ctx, layer, shape):
    """(the layer's exact linear map without bias as a dense (out, in) float64 matrix, output
    shape) of a convolution on per-row input `shape`."""
    from .. import _reference as ref
    n_in = 1
    for v in shape:
        n_in *= int(v)
    eye = torch.eye(n_in, dtype=F64).reshape(n_in, *shape)
    L = dict(layer)
    L.pop("bias", None)
    with torch.no_grad():
        out = ref._conv_layer(ref.Store(ctx.tensors), L, eye)
    return out.reshape(n_in, -1).T, tuple(out.shape[1:])


def _lipschitz_bound(ctx, net, shape=None):
    """Upper bound of Lip(g) for an exported subnet: the product of the exact spectral norms
    of its stored (float32) weights (a convolution's: of its exact operator on rows of
    `shape`, the subnet's per-row input shape) and of its activations' Lipschitz
    constants.  +inf for a convolution on more than 2048 input values (the engine's
    certificate still bounds it)."""
    L = 1.0
    cur = tuple(shape) if shape else None
    for layer in net["layers"]:
        t = layer["type"]
        if t == "linear":
            W = ctx.tensors[layer["weight"]].to(F64)
            L *= float(torch.linalg.matrix_norm(W, 2))
            cur = (W.shape[0],)
        elif t in _CONV_TYPES.values():
            if cur is None or len(cur) < 2:
                return math.inf
            n_in = 1
            for v in cur:
                n_in *= int(v)
            if n_in > 2048:
                return math.inf
            M, cur = _conv_operator(ctx, layer, cur)
            L *= float(torch.linalg.matrix_norm(M, 2))
        elif t == "flatten":
            n = 1
            for v in cur or ():
                n *= int(v)
            cur = (n,)
        elif t == "unflatten":
            cur = tuple(layer["shape"])
        else:
            L *= _ACT_LIPSCHITZ.get(t, lambda a: math.inf)(layer)
    return L
