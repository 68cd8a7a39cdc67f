"""innserve.export.graph: walking a model into its invertible modules: FrEIA SequenceINN,
GraphINN / ReversibleGraphNet walked by structure (a chain, or a graph with Split and
Concat nodes, several OutputNodes and several ConditionNodes / FeedForwardNodes per
node), Residual Flows' SequentialFlow, plain lists; the width of the input."""

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
        self.conds = [cond] if cond is not None else []   # all its conditions, in order
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
    """-> (links, input shape tuple or None, framework name, _Graph or None): a chain of
    links, or a GraphINN's graph (whose block nodes are the links)."""
    names = _mro(model)
    if "SequenceINN" in names:
        shape = tuple(model.shapes[0]) if getattr(model, "shapes", None) else None
        conds = list(getattr(model, "conditions", [None] * len(model.module_list)))
        links = []
        for i, mod in enumerate(model.module_list):
            k = conds[i] if i < len(conds) else None
            links.append(_Link(mod, "module_list.%d." % i, "module_list.%d (%s)" % (i, _cls(mod)),
                               None if k is None else ("c", int(k))))
        return links, shape, "FrEIA", None
    if "GraphINN" in names or "ReversibleGraphNet" in names:
        return _graph_walk(model)
    if "SequentialFlow" in names and hasattr(model, "chain"):
        links = [_Link(mod, "chain.%d." % i, "chain.%d (%s)" % (i, _cls(mod)))
                 for i, mod in enumerate(model.chain)]
        return links, None, "residual-flows", None
    if isinstance(model, (list, tuple, nn.ModuleList, nn.Sequential)):
        links = []
        for i, item in enumerate(model):
            cond = None
            if isinstance(item, (tuple, list)):
                item, k = item
                cond = None if k is None else ("c", int(k))
            links.append(_Link(item, "blocks.%d." % i, "blocks[%d] (%s)" % (i, _cls(item)), cond))
        return links, None, "torch", None
    return [_Link(model, "blocks.0.", "blocks[0] (%s)" % _cls(model))], None, "torch", None


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


class _GNode:
    """One node of an exported GraphINN: a block (link) or a Split / Concat."""

    def __init__(self, node, name, kind, inputs, link=None, block=None):
        self.node = node
        self.name = name            # the manifest's node name
        self.kind = kind            # "block", "Split" or "Concat"
        self.inputs = inputs        # [[manifest name or "x", output index], ...]
        self.link = link            # kind "block"
        self.block = block          # Split / Concat: the manifest object


class _Graph:
    """An exported GraphINN that is not a chain: nodes in structural topological order."""

    def __init__(self, nodes, outputs):
        self.nodes = nodes
        self.outputs = outputs      # [[manifest name, output index], ...] in OutputNode order


def _cond_of(label, entry, cnodes):
    """A node's condition entry -> ("c", k) or ("ff", FeedForwardNode, k)."""
    cn, _ = _node_pair(entry)
    if "FeedForwardNode" in _mro(cn):
        src = list(getattr(cn, "conditions", []))
        if len(src) != 1 or _node_pair(src[0])[0] not in cnodes:
            raise ExportError("%s: its FeedForwardNode %r must read exactly one "
                              "ConditionNode" % (label, cn.name))
        return ("ff", cn, cnodes.index(_node_pair(src[0])[0]))
    if cn in cnodes:
        return ("c", cnodes.index(cn))
    raise ExportError("%s: condition from node %r (%s) is not supported"
                      % (label, getattr(cn, "name", "?"), _node_type(cn)))


def _walk_order(g, inp):
    """The nodes reachable from the InputNode, each after all its inputs, found by following
    the outputs in index order (so the order depends only on the graph's structure, not on
    node_list or module_list order, vislearn/FrEIA#168)."""
    order, done, frontier = [], {id(inp)}, [inp]
    while frontier:
        node = frontier.pop(0)
        for k, o in enumerate(list(getattr(node, "outputs", []) or [])):
            if o is None:
                raise ExportError("GraphINN node %r (%s): its output %d is used by no node"
                                  % (node.name, _node_type(node), k))
            nxt = o[0]
            if id(nxt) in done:
                continue
            if all(id(_node_pair(p)[0]) in done for p in nxt.inputs):
                done.add(id(nxt))
                order.append(nxt)
                frontier.append(nxt)
    return order


def _manifest_names(order):
    """Node names for the manifest: the FrEIA name when the user gave one (unique, at most
    64 characters, not "x"), else n<position> (FrEIA's default names come from id() and
    would change the file on every run)."""
    given = {}
    for n in order:
        nm = getattr(n, "name", None)
        if isinstance(nm, str) and nm and nm != hex(id(n))[-6:] and len(nm) <= 64 and nm != "x":
            given[nm] = given.get(nm, 0) + 1
    names, used = {}, set()
    for i, n in enumerate(order):
        nm = getattr(n, "name", None)
        if not (isinstance(nm, str) and given.get(nm) == 1):
            nm = "n%d" % i
            while nm in given or nm in used:
                nm += "_"
        names[id(n)] = nm
        used.add(nm)
    return names


def _graph_walk(g):
    """-> (links, shape, framework, _Graph or None): a GraphINN walked by structure from its
    InputNode.  A chain (every node one input and one output, one OutputNode) gives its
    links and None, as SequenceINN does; anything else a _Graph."""
    ins = list(getattr(g, "in_nodes", []))
    outs = list(getattr(g, "out_nodes", []))
    cnodes = list(getattr(g, "condition_nodes", []))
    if len(ins) != 1:
        raise ExportError("GraphINN with %d InputNodes: the engine has one input x (make one "
                          "InputNode and Split it)" % len(ins))
    if not outs:
        raise ExportError("GraphINN without an OutputNode")
    inp = ins[0]
    shape = tuple(getattr(inp, "dims", ()))
    order = _walk_order(g, inp)
    names = _manifest_names([n for n in order if "OutputNode" not in _mro(n)])
    reached = {id(n) for n in order}
    all_nodes = list(getattr(g, "node_list", None) or getattr(g, "node_list_fwd", []) or [])
    for n in all_nodes + outs:
        t = _mro(n)
        if any(x in t for x in ("InputNode", "ConditionNode", "FeedForwardNode")):
            continue
        if id(n) not in reached:
            raise ExportError("GraphINN node %r (%s) is not reachable from the InputNode"
                              % (n.name, _node_type(n)))

    def ref(entry):
        node, k = _node_pair(entry)
        return ["x" if node is inp else names[id(node)], int(k)]

    gnodes, links = [], []
    for node in order:
        if "OutputNode" in _mro(node):
            continue
        nm = names[id(node)]
        label = "node %r (%s)" % (node.name, _node_type(node))
        mod = getattr(node, "module", None)
        mro = _mro(mod) if mod is not None else []
        inputs = [ref(e) for e in node.inputs]
        if "Split" in mro or "Concat" in mro:
            kind = "Split" if "Split" in mro else "Concat"
            if getattr(node, "conditions", None):
                raise ExportError("%s reads a condition: a %s takes none" % (label, kind))
            dim = int(getattr(mod, "dim", 0))
            b = {"type": kind, "dim": dim}
            if kind == "Split":
                b["section_sizes"] = [int(od[dim]) for od in node.output_dims]
            gnodes.append(_GNode(node, nm, kind, inputs, block=b))
            continue
        nout = len(getattr(node, "outputs", []) or [])
        if len(node.inputs) != 1 or nout != 1:
            raise ExportError("%s has %d inputs and %d outputs: only Split and Concat nodes may "
                              "have several" % (label, len(node.inputs), nout))
        conds = [_cond_of(label, e, cnodes) for e in (getattr(node, "conditions", []) or [])]
        link = _Link(mod, "graph.%s." % nm, label, conds[0] if len(conds) == 1 else None)
        link.conds = conds
        links.append(link)
        gnodes.append(_GNode(node, nm, "block", inputs, link=link))
    outputs = [ref(o.inputs[0]) for o in outs]
    chain = len(outs) == 1 and all(n.kind == "block" for n in gnodes)
    if chain:
        for i, l in enumerate(links):       # the names chains always had
            l.prefix = "graph.%d." % i
        return links, shape, "FrEIA", None
    return links, shape, "FrEIA", _Graph(gnodes, outputs)


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
