"""innserve.export.graph: walking a model into its chain of invertible modules: FrEIA
SequenceINN, chain-shaped GraphINN / ReversibleGraphNet (with ConditionNodes and
FeedForwardNodes), Residual Flows' SequentialFlow, plain lists; the width of the input."""

import copy

import torch
import torch.nn as nn

from .common import ExportError, _cls, _mro
from .residual import _RESIDUAL_CLASSES
from .subnets import _subnet_widths

class _Link:
    """One invertible module of the chain."""

    def __init__(self, module, prefix, label, cond=None):
        self.module = module
        self.prefix = prefix        # tensor name prefix, e.g. "module_list.3."
        self.label = label          # for messages, e.g. "module_list.3 (GLOWCouplingBlock)"
        self.cond = cond            # None, ("c", k) or ("ff", ffnode, k)
        self.block = None


def _width(m):
    dims_in = getattr(m, "dims_in", None)
    if dims_in:
        first = dims_in[0] if isinstance(dims_in[0], (tuple, list)) else dims_in
        return int(first[0])
    return None


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
