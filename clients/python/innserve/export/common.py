"""innserve.export.common: what every part of the exporter shares: ExportError,
ExportResult, the state of one export (_Ctx: the tensors to store, options, notes), class-name
tests (modules are recognised by the class names in their MRO, never by importing FrEIA,
nflows or zuko), and the tolerance test of the float64 cross-checks."""

import collections

import torch

from .. import _reference as ref

F64 = torch.float64


class ExportError(ValueError):
    """The model cannot be exported; the message names the module and the reason."""


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

    @classmethod
    def sbi(cls, check_tol):
        """The context of an sbi export (the options only other exporters set at defaults)."""
        return cls({"check_tol": check_tol, "allow_non_contractive": False,
                    "iresnet_logdet": "exact", "iresnet_series_terms": 10,
                    "residual_blocks": None, "freia_version": "auto"})

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


def _close(a, b, tol):
    return float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max())) if a.numel() else True


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
