"""innserve.export.statedict: :func:`export_sbi_state_dict`, an sbi estimator exported from
its ``state_dict`` and a small config, for pickles that no longer load across sbi versions.

    from innserve.export import export_sbi_state_dict
    export_sbi_state_dict(torch.load("npe_state.pt"), {"estimator": "maf"}, "npe.safetensors",
                          low=[-2, -1, -1.5], high=[2, 1, 1.5])

Nothing of sbi, nflows or zuko is imported or rebuilt.  The state_dict's keys are read
directly (the layouts sbi >= 0.23 writes, ``net._transform._transforms.K...`` for nflows
flows, ``net.transform.transforms.K...`` for zuko flows, and the older layout without the
``net.`` prefix) into stand-ins that carry, under the class names of the modules they stand
for, exactly the attributes the module mappers of innserve.export.nflows, .zuko and .sbi
read; those mappers then write the manifest.  So a posterior exported from its object and
from its state_dict gives the same blocks and tensors.  What a state_dict does not hold (the
estimator type, activations, the number of bins, the tail bound, zuko's slope, the prior)
comes from the config, with sbi's defaults:

    estimator        "maf", "nsf", "maf_rqs", "zuko_maf", "zuko_nsf" or "made" (required)
    x_dim, y_dim     theta's and the observation's widths (default: read from the keys)
    hidden_features  50 (zuko: an int, repeated num_transforms times as sbi does, or a list)
    num_transforms   5;  num_blocks 2 (nflows MADE / ResidualNet blocks)
    num_bins 10, tail_bound 3.0, min_bin_width / min_bin_height / min_derivative 1e-3
    z_score_x, z_score_y   True (sbi's "independent"; False for "none")
    embedding        None (the identity), "fc" (sbi's FCEmbedding: Linear layers with a ReLU
                     after each, the last included) or a list of layers: a key prefix below
                     the embedding net (e.g. "1.0") for a Linear, or an activation name
    zuko_version     zuko's version (its default slope depends on it; required for zuko
                     estimators unless ``slope`` is given); sbi_version, nflows_version: recorded
    low, high        the prior box (or the keyword arguments of the same names)
    prefix           the keys' prefix before ``net.`` / ``_transform.`` (default "")

A key the layout needs that is missing, a tensor of the wrong shape, a MADE mask that does
not follow its degrees and a key nothing reads are refused with an ExportError naming the
key.  The cross-check before writing cannot run the modules (there are none): it checks
every block's inverse against its forward, and the log-determinants, in float64.

Estimator types register in ``_LAYOUTS`` (estimator name -> builder of the stand-in flow);
an estimator exported by its own module registers in ``_EXPORTERS`` instead: ``made``
(innserve.export.mogmade rebuilds sbi's MoG-MADE from the keys and exports it as
export_sbi does; its hidden width, components and blocks are read from the tensors).
"""

import collections
import copy
import functools
import math

import torch
import torch.nn as nn

from .. import _reference as ref
from .. import _safetensors
from .common import F64, ExportError, _close, _tensor
from .sbi import _export_flow
from .zuko import _ZukoEst

_DEFAULTS = {"hidden_features": 50, "num_transforms": 5, "num_blocks": 2, "num_bins": 10,
             "tail_bound": 3.0, "min_bin_width": 1e-3, "min_bin_height": 1e-3,
             "min_derivative": 1e-3, "z_score_x": True, "z_score_y": True, "embedding": None,
             "prefix": ""}
_KNOWN = set(_DEFAULTS) | {"estimator", "x_dim", "y_dim", "zuko_version", "slope",
                           "sbi_version", "nflows_version", "low", "high"}
_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "sigmoid": nn.Sigmoid,
         "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus, "gelu": nn.GELU, "silu": nn.SiLU}


# ---------------------------------------------------------------------------------------
# the state_dict, read key by key
# ---------------------------------------------------------------------------------------

class _Keys:
    """The state_dict with the keys read so far; every read names the key in its errors."""

    def __init__(self, sd, prefix, estimator):
        self.sd, self.prefix, self.estimator, self.used = sd, prefix, estimator, set()

    def has(self, key):
        return self.prefix + key in self.sd

    def get(self, key, shape=None, why=""):
        k = self.prefix + key
        if k not in self.sd:
            raise ExportError("state_dict: missing key %r%s" % (k, why and " (%s)" % why))
        t = self.sd[k]
        if not isinstance(t, torch.Tensor):
            raise ExportError("state_dict: key %r holds a %s, not a tensor" % (k, type(t).__name__))
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ExportError("state_dict: key %r has shape %s, the config needs %s%s"
                              % (k, tuple(t.shape), tuple(shape), why and " (%s)" % why))
        self.used.add(k)
        return t.detach().cpu()

    def indices(self, key):
        """The integers i for which some key starts with key + "i."."""
        head = self.prefix + key
        out = set()
        for k in self.sd:
            if k.startswith(head):
                i = k[len(head):].split(".", 1)[0]
                if i.isdigit():
                    out.add(int(i))
        return sorted(out)

    def finish(self):
        rest = [k for k in self.sd if k not in self.used]
        if rest:
            raise ExportError("state_dict: key %r is not part of the %s layout the config "
                              "describes (%d unread keys; check estimator, num_transforms, "
                              "num_blocks, z_score_x/z_score_y and embedding)"
                              % (rest[0], self.estimator, len(rest)))


def _stand_in(cls_name, **attrs):
    """An object of a class named cls_name (the module mappers recognise classes by name)
    holding attrs."""
    obj = type(cls_name, (), {})()
    obj.__dict__.update(attrs)
    return obj


class Standardize(nn.Module):
    """sbi's Standardize (the z-scoring of the observation), rebuilt from its two buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("_mean", mean)
        self.register_buffer("_std", std)

    def forward(self, y):
        return (y - self._mean) / self._std


def _linear(keys, pre, shape, masked=False, bias=True, why=""):
    w = keys.get(pre + "weight", shape, why)
    attrs = {"weight": w, "bias": keys.get(pre + "bias", (shape[0],), why) if bias else None}
    if masked:
        attrs["mask"] = keys.get(pre + "mask", shape, why)
    return _stand_in("Linear", **attrs)


def _torch_linear(w, b):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


# ---------------------------------------------------------------------------------------
# the parts every layout shares: z-scoring, embedding net, dims
# ---------------------------------------------------------------------------------------

def _dims(keys, cfg, dx_key):
    """theta's width: the config's x_dim, or the last dimension of the tensor at dx_key."""
    dx = cfg.get("x_dim")
    dx_t = keys.sd.get(keys.prefix + dx_key)
    if dx is None:
        if dx_t is None:
            keys.get(dx_key, why="theta's width is read from it; or give x_dim")
        dx = int(dx_t.shape[-1] if dx_t.dim() else dx_t.numel())
    return int(dx)


def _embedding(keys, cfg, emb_pre, cw):
    """-> the embedding net (a real nn.Sequential: Standardize, then the MLP) or None, and the
    observation's width."""
    parts = []
    dy = cfg.get("y_dim")
    e = cfg["embedding"]
    layers = []
    if e == "fc":
        idx = keys.indices(emb_pre + "1.net.")
        if not idx:
            keys.get(emb_pre + "1.net.0.weight", why="embedding 'fc'")
        for i in idx:
            layers.append(("1.net.%d" % i, "%d" % i))
            layers.append(("relu", "%d" % (i + 2)))
    elif e is not None:
        if not isinstance(e, (list, tuple)):
            raise ExportError("config embedding: None, \"fc\" or a list of layers (key "
                              "prefixes and activation names), not %r" % (e,))
        for j, item in enumerate(e):
            item = str(item)
            layers.append((item, item.rsplit(".", 1)[-1] if item not in _ACTS else "act%d" % j))
    mlp = collections.OrderedDict()
    width = None
    for item, name in layers:
        if item in _ACTS:
            mlp[name] = _ACTS[item]()
            continue
        pre = emb_pre + item + "."
        w = keys.get(pre + "weight", why="embedding layer %s" % item)
        if w.dim() != 2:
            raise ExportError("state_dict: key %r is not a Linear weight (shape %s): only "
                              "Linear layers and activations can be exported in an embedding"
                              % (keys.prefix + pre + "weight", tuple(w.shape)))
        b = keys.get(pre + "bias", (w.shape[0],)) if keys.has(pre + "bias") else None
        if width is None:
            width = int(w.shape[1])
        mlp[name] = _torch_linear(w, b)
    if layers and not mlp:
        raise ExportError("config embedding: no Linear layer")
    if dy is None:
        dy = width if width is not None else cw
    dy = int(dy)
    if cfg["z_score_y"]:
        mean = keys.get(emb_pre + "0._mean", why="z_score_y")
        std = keys.get(emb_pre + "0._std", (mean.shape), why="z_score_y")
        if mean.numel() > 1:
            dy = int(mean.numel())
        parts.append(Standardize(mean, std))
    if mlp:
        parts.append(nn.Sequential(mlp))
    elif cfg["z_score_y"]:
        parts.append(nn.Identity())
    return (nn.Sequential(*parts) if parts else None), dy


def _pointwise_affine(keys, pre, dx):
    return _stand_in("PointwiseAffineTransform",
                     _shift=keys.get(pre + "_shift", (dx,), "z_score_x"),
                     _scale=keys.get(pre + "_scale", (dx,), "z_score_x"))


# ---------------------------------------------------------------------------------------
# nflows layouts: maf, maf_rqs, nsf
# ---------------------------------------------------------------------------------------

def _masked(keys, pre, shape, deg_out, deg_in, output):
    """A MaskedLinear of sbi's MADE (sequential degrees, random_mask=False): its mask must be
    deg_out >= deg_in (hidden layers) or deg_out > deg_in (the output layer), and its
    degrees buffer, when the state_dict has one, deg_out."""
    lin = _linear(keys, pre, shape, True)
    want = deg_out[:, None] > deg_in[None, :] if output else deg_out[:, None] >= deg_in[None, :]
    if not torch.equal(lin.mask.to(torch.bool), want):
        raise ExportError("state_dict: key %r is not the mask of sbi's MADE (sequential input "
                          "degrees 1..D, hidden degrees arange(H) %% max(1, D-1) + min(1, D-1))"
                          % (keys.prefix + pre + "mask"))
    if keys.has(pre + "degrees") and \
            not torch.equal(keys.get(pre + "degrees", (shape[0],)).to(torch.int64), deg_out):
        raise ExportError("state_dict: key %r is not what sbi's MADE gives that layer"
                          % (keys.prefix + pre + "degrees"))
    return lin


def _made(keys, pre, cfg, D, cw, m):
    """A MADE stand-in from the keys under pre (autoregressive_net.), m outputs per feature."""
    H, nb = int(cfg["hidden_features"]), int(cfg["num_blocks"])
    din = torch.arange(1, D + 1)
    dh = torch.arange(H) % max(1, D - 1) + min(1, D - 1)
    dfin = din.repeat_interleave(m)   # nflows' tile: feature i's m outputs side by side
    init = _masked(keys, pre + "initial_layer.", (H, D), dh, din, False)
    ctx_layer = _linear(keys, pre + "context_layer.", (H, cw)) if cw else None
    blocks = [_stand_in("MaskedFeedforwardBlock", batch_norm=None,
                        linear=_masked(keys, pre + "blocks.%d.linear." % j, (H, H), dh, dh, False))
              for j in range(nb)]
    final = _masked(keys, pre + "final_layer.", (D * m, H), dfin, dh, True)
    return _stand_in("MADE", use_residual_blocks=False, activation=torch.tanh, initial_layer=init,
                     context_layer=ctx_layer, blocks=blocks, final_layer=final)


def _nflows_layout(keys, cfg, est):
    """maf, maf_rqs, nsf -> (stand-in nflows Flow, its embedding, x width, y width)."""
    tp = "_transform._transforms."
    z = 1 if cfg["z_score_x"] else 0
    first = z
    if est == "nsf":
        dx = cfg.get("x_dim")
        if dx is None:
            ids = keys.sd.get(keys.prefix + tp + "%d.identity_features" % first)
            trs = keys.sd.get(keys.prefix + tp + "%d.transform_features" % first)
            if ids is None or trs is None:
                keys.get(tp + "%d.transform_features" % first, why="theta's width is read from "
                         "it; or give x_dim")
            dx = int(ids.numel() + trs.numel())
        init_key = tp + "%d.transform_net.blocks.0.context_layer.weight" % first
    else:
        dx = _dims(keys, cfg, tp + "%d.autoregressive_net.initial_layer.weight" % first)
        init_key = tp + "%d.autoregressive_net.context_layer.weight" % first
    dx = int(dx)
    ck = keys.sd.get(keys.prefix + init_key)
    if ck is None and est == "nsf" and dx == 1:
        sp = keys.indices(tp + "%d.transform_net.spline_predictor." % first)
        if sp:
            ck = keys.sd[keys.prefix + tp + "%d.transform_net.spline_predictor.%d.weight"
                         % (first, sp[0])]
    cw = int(ck.shape[1]) if ck is not None else 0
    emb, dy = _embedding(keys, cfg, "_embedding_net.", cw)
    n, K, B = int(cfg["num_transforms"]), int(cfg["num_bins"]), float(cfg["tail_bound"])
    H = int(cfg["hidden_features"])
    spline = {"tails": "linear", "num_bins": K, "tail_bound": B,
              "min_bin_width": float(cfg["min_bin_width"]),
              "min_bin_height": float(cfg["min_bin_height"]),
              "min_derivative": float(cfg["min_derivative"])}
    ts = []
    if z:
        ts.append(_pointwise_affine(keys, tp + "0.", dx))
    i = z
    for k in range(n):
        pre = "%s%d." % (tp, i)
        if est == "maf":
            made = _made(keys, pre + "autoregressive_net.", cfg, dx, cw, 2)
            ts.append(_stand_in("MaskedAffineAutoregressiveTransform", autoregressive_net=made,
                                _epsilon=1e-3))
        elif est == "maf_rqs":
            made = _made(keys, pre + "autoregressive_net.", cfg, dx, cw, 3 * K - 1)
            ts.append(_stand_in("MaskedPiecewiseRationalQuadraticAutoregressiveTransform",
                                autoregressive_net=made, **spline))
        else:
            ts.append(_coupling(keys, pre, cfg, dx, cw, H, K, spline))
        i += 1
        if est in ("maf", "maf_rqs"):
            ts.append(_stand_in("RandomPermutation",
                                _permutation=keys.get("%s%d._permutation" % (tp, i), (dx,))))
            i += 1
        elif dx > 1:
            p2 = "%s%d." % (tp, i)
            ts.append(_stand_in("LULinear", features=dx,
                                lower_entries=keys.get(p2 + "lower_entries", (dx * (dx - 1) // 2,)),
                                upper_entries=keys.get(p2 + "upper_entries", (dx * (dx - 1) // 2,)),
                                unconstrained_upper_diag=keys.get(p2 + "unconstrained_upper_diag",
                                                                  (dx,)),
                                bias=keys.get(p2 + "bias", (dx,)), eps=1e-3))
            i += 1
    flow = _stand_in("Flow", _transform=_stand_in("CompositeTransform", _transforms=ts),
                     _distribution=_stand_in("StandardNormal"), _embedding_net=emb)
    return flow


def _coupling(keys, pre, cfg, dx, cw, H, K, spline):
    idf = keys.get(pre + "identity_features")
    trf = keys.get(pre + "transform_features")
    if idf.numel() + trf.numel() != dx:
        raise ExportError("state_dict: keys %r and %r hold %d + %d features, theta has %d"
                          % (keys.prefix + pre + "identity_features",
                             keys.prefix + pre + "transform_features", idf.numel(), trf.numel(),
                             dx))
    n_out = int(trf.numel()) * (3 * K - 1)
    tn = pre + "transform_net."
    if dx == 1:
        idx = keys.indices(tn + "spline_predictor.")
        if not idx or idx != list(range(0, 2 * len(idx), 2)):
            raise ExportError("state_dict: the keys under %r are not sbi's ContextSplineMap "
                              "(Linear layers at 0, 2, 4, ...)"
                              % (keys.prefix + tn + "spline_predictor."))
        mods = collections.OrderedDict()
        for j, i in enumerate(idx):
            last = j == len(idx) - 1
            shape = (n_out if last else H, cw if j == 0 else H)
            lin = _linear(keys, tn + "spline_predictor.%d." % i, shape)
            mods[str(i)] = _torch_linear(lin.weight, lin.bias)
            if not last:
                mods[str(i + 1)] = nn.ReLU()
        net = _stand_in("ContextSplineMap", spline_predictor=nn.Sequential(mods),
                        hidden_features=H)
    else:
        nb = int(cfg["num_blocks"])
        initial = _linear(keys, tn + "initial_layer.", (H, int(idf.numel()) + cw))
        blocks = []
        for j in range(nb):
            bp = tn + "blocks.%d." % j
            blocks.append(_stand_in(
                "ResidualBlock", use_batch_norm=False, activation=torch.relu,
                linear_layers=[_linear(keys, bp + "linear_layers.0.", (H, H)),
                               _linear(keys, bp + "linear_layers.1.", (H, H))],
                context_layer=_linear(keys, bp + "context_layer.", (H, cw)) if cw else None))
        net = _stand_in("ResidualNet", blocks=blocks, hidden_features=H,
                        context_features=cw if cw else None,
                        initial_layer=initial,
                        final_layer=_linear(keys, tn + "final_layer.", (n_out, H)))
    return _stand_in("PiecewiseRationalQuadraticCouplingTransform", unconditional_transform=None,
                     transform_features=trf, features=dx, transform_net=net, **spline)


# ---------------------------------------------------------------------------------------
# zuko layouts: zuko_maf, zuko_nsf
# ---------------------------------------------------------------------------------------

class _Univariate:
    """The stand-in of zuko's univariate transform classes (only their name is read)."""


class _Callable:
    """A stand-in called as a module (zuko's Unconditional): returns what it holds."""

    def __init__(self, value):
        self.value = value

    def __call__(self):
        return self.value


def _zuko_layout(keys, cfg, est):
    tp = "net.transform.transforms."
    z = 1 if cfg["z_score_x"] else 0
    n, K = int(cfg["num_transforms"]), int(cfg["num_bins"])
    hidden = cfg["hidden_features"]
    hidden = list(hidden) if isinstance(hidden, (list, tuple)) else [int(hidden)] * n
    dx = _dims(keys, cfg, tp + "%d.order" % z)
    h0 = keys.sd.get(keys.prefix + tp + "%d.hyper.0.weight" % z)
    cw = int(h0.shape[1]) - dx if h0 is not None else 0
    emb, dy = _embedding(keys, cfg, "_embedding_net.", cw)
    name = "MonotonicAffineTransform" if est == "zuko_maf" else "MonotonicRQSTransform"
    uni = type(name, (_Univariate,), {})
    if cfg.get("slope") is not None:
        uni = functools.partial(uni, slope=float(cfg["slope"]))
    m = 2 if est == "zuko_maf" else 3 * K - 1
    shapes = ((), ()) if est == "zuko_maf" else ((K,), (K,), (K - 1,))
    ts = []
    if z:
        loc = keys.get(tp + "0.loc", (dx,), "z_score_x")
        scale = keys.get(tp + "0.scale", (dx,), "z_score_x")
        aff = torch.distributions.transforms.AffineTransform(loc, scale)
        ts.append(type("UnconditionalTransform", (_Callable,), {})(aff))
    for k in range(n):
        pre = "%s%d." % (tp, z + k)
        order = keys.get(pre + "order", (dx,))
        widths = [dx + cw] + hidden + [dx * m]
        idx = keys.indices(pre + "hyper.")
        want = list(range(0, 2 * len(widths) - 2, 2))
        if idx != want:
            raise ExportError("state_dict: the keys under %r are Linear layers %s; the config "
                              "(hidden_features %s) needs %s"
                              % (keys.prefix + pre + "hyper.", idx, hidden, want))
        hyper = []
        for j in range(len(widths) - 1):
            shape = (widths[j + 1], widths[j])
            hyper.append(_linear(keys, pre + "hyper.%d." % (2 * j), shape, True))
            if j < len(widths) - 2:
                hyper.append(nn.ReLU())
        ts.append(_stand_in("MaskedAutoregressiveTransform", univariate=uni, shapes=shapes,
                            hyper=hyper, order=order))
    loc = keys.get("net.base.loc", (dx,))
    scale = keys.get("net.base.scale", (dx,))
    base = type("UnconditionalDistribution", (_Callable,), {})(
        torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1))
    zflow = _stand_in("Flow", transform=_stand_in("LazyComposedTransform", transforms=ts),
                      base=base)
    return _ZukoEst(zflow, emb)


_LAYOUTS = {"maf": _nflows_layout, "maf_rqs": _nflows_layout, "nsf": _nflows_layout,
            "zuko_maf": _zuko_layout, "zuko_nsf": _zuko_layout}
# estimators whose own module maps a state_dict: name -> function(state_dict, config, path, **kw)
def _export_made(*a, **kw):
    from .mogmade import export_state_dict
    return export_state_dict(*a, **kw)


_EXPORTERS = {"made": _export_made}


# ---------------------------------------------------------------------------------------
# the check without modules: each block's inverse against its forward, in float64
# ---------------------------------------------------------------------------------------

def _load(path):
    """A state_dict from a .safetensors file or one torch.save wrote."""
    try:
        if path.endswith(".safetensors"):
            tensors, _ = _safetensors.read(path)
            header, _ = _safetensors.read_header(path)
            return {k: torch.tensor(v, dtype=_ST_DTYPES[header[k]["dtype"]]).reshape(shape)
                    for k, (v, shape) in tensors.items()}
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
        raise ExportError("state_dict: cannot load %r (%s: %s)" % (path, type(e).__name__, e))


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _check_blocks(ctx, manifest, mods, flow, emb_mod, x, y, tol):
    M = ref.Model(manifest, ctx.tensors)
    S = ref.Store(ctx.tensors)
    conds = M.conditions(y) if y is not None else []
    c = conds[0] if conds else None
    if emb_mod is not None:      # the embedding is real torch: run it
        with torch.no_grad():
            got = copy.deepcopy(emb_mod).to(F64).eval()(M.std_y(y))
        if not _close(c, got, tol):
            raise ExportError("embedding net: the exported layers do not reproduce the "
                              "state_dict's")
    h, _ = M.std_x(x)
    for (where, _t), b in zip(mods, manifest["blocks"]):
        out, ld = ref.block(S, b, h, c, False)
        back, ldb = ref.block(S, b, out, c, True)
        for a, w, what in ((back, h, "inverse"), (ldb, -ld, "inverse log-det")):
            if not bool(torch.isfinite(a).all()) or not _close(a, w, tol):
                raise ExportError("%s: the block's inverse does not undo its forward (%s, "
                                  "max difference %.3g): the state_dict and the config do not "
                                  "describe one estimator" % (where, what,
                                                              float((a - w).abs().max())))
        h = out
    lp = M.log_prob(x, y)
    if not bool(torch.isfinite(lp).all()):
        raise ExportError("log_prob: not finite on the test inputs")


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------

def export_sbi_state_dict(state_dict, config, path, *, low=None, high=None, x_names=None,
                          y_names=None, description=None, test_inputs=None, n_tests=8, seed=0,
                          rtol=1e-4, atol=1e-5, check=True, check_tol=1e-9, source=None):
    """Write the sbi estimator whose ``state_dict`` (a mapping of names to tensors, or the path
    of a .safetensors file or of one ``torch.save`` wrote) and ``config`` (a dict, see the module's
    documentation) describe as an innserve checkpoint at ``path``; the other arguments are
    those of :func:`export_sbi`.  Returns an :class:`~innserve.export.ExportResult`."""
    if isinstance(state_dict, str):
        state_dict = _load(state_dict)
    if not hasattr(state_dict, "keys"):
        raise ExportError("state_dict: a mapping of names to tensors, not %s"
                          % type(state_dict).__name__)
    if not isinstance(config, dict):
        raise ExportError("config: a dict, not %s" % type(config).__name__)
    est = config.get("estimator")
    if est in _EXPORTERS:
        return _EXPORTERS[est](state_dict, config, path, low=low, high=high, x_names=x_names,
                               y_names=y_names, description=description,
                               test_inputs=test_inputs, n_tests=n_tests, seed=seed, rtol=rtol,
                               atol=atol, check=check, check_tol=check_tol, source=source)
    if est not in _LAYOUTS:
        raise ExportError("config estimator: %r is not supported (%s)"
                          % (est, ", ".join(sorted(set(_LAYOUTS) | set(_EXPORTERS)))))
    unknown = sorted(set(config) - _KNOWN)
    if unknown:
        raise ExportError("config: unknown key %r (known: %s)"
                          % (unknown[0], ", ".join(sorted(_KNOWN))))
    cfg = dict(_DEFAULTS)
    cfg.update(config)
    for k in ("hidden_features", "num_transforms", "num_blocks", "num_bins"):
        v = cfg[k]
        ok = all(isinstance(u, int) and u >= 1 for u in (v if isinstance(v, (list, tuple))
                                                        and k == "hidden_features" else [v]))
        if not ok:
            raise ExportError("config %s: a positive integer, not %r" % (k, v))
    if not (isinstance(cfg["tail_bound"], (int, float)) and math.isfinite(cfg["tail_bound"])
            and cfg["tail_bound"] > 0):
        raise ExportError("config tail_bound: a finite number > 0, not %r" % (cfg["tail_bound"],))
    zuko = est.startswith("zuko")
    if zuko and cfg.get("zuko_version") is None:
        raise ExportError("config zuko_version: needed for %s (zuko's default slope, which the "
                          "state_dict does not hold, depends on it; 1e-3 in 1.0 and >= 1.5, "
                          "1e-4 in 1.1 to 1.4)" % est)
    prefix = str(cfg["prefix"])
    if not zuko and not any(k.startswith(prefix + "net._transform.") for k in state_dict) and \
            any(k.startswith(prefix + "_transform.") for k in state_dict):
        keys = _Keys(state_dict, prefix, est)      # sbi < 0.23: the nflows Flow itself
    else:   # sbi's NFlowsFlow holds the Flow as net; its ZukoFlow the embedding beside net
        keys = _Keys(state_dict, prefix + ("" if zuko else "net."), est)
    flow = _LAYOUTS[est](keys, cfg, est)
    keys.finish()
    lo = low if low is not None else cfg.get("low")
    hi = high if high is not None else cfg.get("high")
    if (lo is None) != (hi is None):
        raise ExportError("low and high: give both prior bounds, or neither")
    prior = None if lo is None else (_tensor(lo, "low").reshape(-1),
                                     _tensor(hi, "high").reshape(-1))
    versions = {"sbi": cfg.get("sbi_version")}
    if zuko:
        versions["zuko"] = str(cfg["zuko_version"])
    else:
        versions["nflows"] = cfg.get("nflows_version")
    return _export_flow(flow, prior, "state_dict (%s)" % est, path, versions, _check_blocks,
                        x_names=x_names, y_names=y_names, description=description,
                        test_inputs=test_inputs, n_tests=n_tests, seed=seed, rtol=rtol,
                        atol=atol, check=check, check_tol=check_tol, source=source)
