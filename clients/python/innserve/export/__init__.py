"""innserve.export: export a trained PyTorch model as an innserve checkpoint
(docs/checkpoint-format.md).

    from innserve.export import export
    export(inn, "ik.safetensors", kind="cinn", x_names=[...], y_names=[...],
           standardize={"x": (x_mean, x_std), "y": (y_mean, y_std)},
           description="cINN for 4-DOF inverse kinematics")

What can be exported (docs/clients.md has the full table):

* FrEIA ``SequenceINN`` and ``GraphINN`` / ``ReversibleGraphNet`` models (walked by
  structure: Split and Concat nodes, several OutputNodes, several conditions per node;
  Flatten and Reshape) made of
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

sbi posteriors and density estimators (nflows and zuko flows, MDNs) are exported by
:func:`export_sbi` (innserve.export.sbi), and from a state_dict by
:func:`export_sbi_state_dict` (innserve.export.statedict).

The package, in reading order (one module per family, as engine/blocks/ has one file per
block family):

* ``common``: ExportError, ExportResult, the state of one export, class-name tests;
* ``subnets``: Linear/activation stacks -> the manifest's subnets;
* ``graph``: walking SequenceINN / GraphINN / lists into a chain or a graph of modules;
* ``freia``: FrEIA block converters; ``residual``: i-ResNet residual blocks;
* ``nflows``, ``zuko``: the flows sbi builds; ``sbi``: posterior / estimator unwrapping
  and :func:`export_sbi`; ``mdn``: sbi's mixture density networks; ``statedict``:
  :func:`export_sbi_state_dict`, the same from a state_dict and a config;
* ``checks``: the float64 cross-checks against the user's modules;
* ``manifest``: names, standardization, test vectors, the file writer;
* ``inn``: :func:`export` itself.
"""

from .common import ExportError, ExportResult
from .freia import FREIA_VERSIONS, SUPPORTED_BLOCKS
from .inn import export
from .residual import Residual
from .sbi import export_sbi
from .statedict import export_sbi_state_dict
from .zuko import default_slope

# the public classes keep the name they had when the exporter was one module (tracebacks,
# pickles of models holding a Residual)
for _c in (ExportError, ExportResult, Residual):
    _c.__module__ = __name__
del _c

__all__ = ["export", "export_sbi", "export_sbi_state_dict", "ExportError", "ExportResult",
           "Residual", "SUPPORTED_BLOCKS", "FREIA_VERSIONS", "default_slope"]
