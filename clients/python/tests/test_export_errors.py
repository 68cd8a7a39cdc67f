"""Unsupported models are refused with an ExportError naming the module and the reason;
options are validated; the written file is a standard safetensors file."""

import json
import os
import struct
import unittest

import util
import torch
import torch.nn as nn

from innserve import _safetensors
from innserve.export import ExportError, Residual, export

F = util.mimic("head")
F02 = util.mimic("0.2")


def sn(cin, cout):
    return nn.Sequential(nn.Linear(cin, 8), nn.ReLU(), nn.Linear(8, cout))


class TestGraphs(unittest.TestCase):
    """GraphINNs that are not chains export as a manifest "graph", walked by structure."""

    def setUp(self):
        self.tmp = util.TmpDir()
        self.path = os.path.join(self.tmp.path, "g.safetensors")
        torch.manual_seed(0)

    def tearDown(self):
        self.tmp.cleanup()

    def test_branching_graph_with_two_outputs(self):
        inp = F.InputNode(5, name="in")
        split = F.Node(inp, F.Split, {"section_sizes": [2, 3]}, name="split")
        a = F.Node((split, 1), F.GLOWCouplingBlock, {"subnet_constructor": sn}, name="a")
        g = F.GraphINN([inp, split, a, F.OutputNode(a, name="o1"),
                        F.OutputNode((split, 0), name="o2")])
        res = export(g, self.path)
        gm = res.manifest["graph"]
        self.assertNotIn("blocks", res.manifest)
        self.assertEqual([n["name"] for n in gm["nodes"]], ["split", "a"])
        self.assertEqual(gm["nodes"][0]["block"], {"type": "Split", "dim": 0,
                                                   "section_sizes": [2, 3]})
        self.assertEqual(gm["nodes"][1]["inputs"], [["split", 1]])
        self.assertEqual(gm["outputs"], [["a", 0], ["split", 0]])
        self.assertTrue(any(k.startswith("graph.a.") for k in res.tensors))
        # z is [a(x[:, 2:]), x[:, :2]]: the outputs in OutputNode order
        x = torch.randn(3, 5, dtype=torch.float64)
        with torch.no_grad():
            ya, _ = a.module.double()([x[:, 2:]])
        z = res.model.forward(x)["z"]
        self.assertLess(float((z - torch.cat([ya[0], x[:, :2]], 1)).abs().max()), 1e-5)
        xb, _ = res.model.inverse(z)
        self.assertLess(float((xb - x).abs().max()), 1e-9)

    def test_split_and_concat_make_one_output(self):
        inp = F.InputNode(4, name="in")
        split = F.Node(inp, F.Split, {"section_sizes": [2, 2]}, name="split")
        cat = F.Node([(split, 1), (split, 0)], F.Concat, {}, name="cat")
        g = F.GraphINN([inp, split, cat, F.OutputNode(cat, name="out")])
        res = export(g, self.path)
        self.assertEqual(res.manifest["graph"]["nodes"][1]["inputs"], [["split", 1], ["split", 0]])
        x = torch.randn(2, 4, dtype=torch.float64)
        z = res.model.forward(x)["z"]
        self.assertTrue(torch.equal(z, torch.cat([x[:, 2:], x[:, :2]], 1)))

    def test_two_conditions_on_one_node_are_a_list(self):
        inp = F.InputNode(4, name="in")
        c1, c2 = F.ConditionNode(3, name="c1"), F.ConditionNode(3, name="c2")
        n = F.Node(inp, F.GLOWCouplingBlock, {"subnet_constructor": sn}, conditions=[c1, c2],
                   name="glow")
        g = F.GraphINN([inp, n, F.OutputNode(n, name="out"), c1, c2])
        net = nn.Sequential(nn.Linear(3, 3))
        res = export(g, self.path, conditions=[net, None])
        self.assertEqual(res.manifest["blocks"][0]["cond"], [0, 1])
        self.assertEqual(len(res.manifest["conditions"]), 2)

    def test_default_node_names_are_structural(self):
        inp = F.InputNode(4)
        split = F.Node(inp, F.Split, {"section_sizes": [2, 2]})
        a = F.Node((split, 0), F.GLOWCouplingBlock, {"subnet_constructor": sn})
        g = F.GraphINN([inp, split, a, F.OutputNode(a), F.OutputNode((split, 1))])
        res = export(g, self.path)
        self.assertEqual([n["name"] for n in res.manifest["graph"]["nodes"]], ["n0", "n1"])


class TestRejected(unittest.TestCase):
    def setUp(self):
        self.tmp = util.TmpDir()
        self.path = os.path.join(self.tmp.path, "m.safetensors")
        torch.manual_seed(0)

    def tearDown(self):
        self.tmp.cleanup()

    def refused(self, model, *patterns, **kw):
        with self.assertRaises(ExportError) as cm:
            export(model, self.path, **kw)
        msg = str(cm.exception)
        for p in patterns:
            self.assertIn(p, msg)
        self.assertFalse(os.path.exists(self.path), "no file may be written on failure")
        return msg

    def test_callable_clamp_activation(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn, clamp_activation=lambda u: u / (1 + u.abs()))
        self.refused(inn, "module_list.0 (GLOWCouplingBlock)", "clamp_activation is a callable",
                     "cannot be serialised")

    def test_dropout_in_subnet(self):
        inn = F.SequenceINN(4)
        inn.append(F.RNVPCouplingBlock, subnet_constructor=lambda i, o: nn.Sequential(
            nn.Linear(i, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, o)))
        self.refused(inn, "module_list.0 (RNVPCouplingBlock).subnet_s1", "Dropout",
                     "training-time layer")

    def test_batchnorm_in_subnet(self):
        inn = F.SequenceINN(4)
        inn.append(F.AllInOneBlock, subnet_constructor=lambda i, o: nn.Sequential(
            nn.Linear(i, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, o)))
        self.refused(inn, "module_list.0 (AllInOneBlock)", "BatchNorm1d", "running statistics")

    def test_unknown_layer_in_subnet(self):
        inn = F.SequenceINN(4)
        inn.append(F.NICECouplingBlock, subnet_constructor=lambda i, o: nn.Sequential(
            nn.Linear(i, 8), nn.Hardswish(), nn.Linear(8, o)))
        self.refused(inn, "Hardswish", "only nn.Linear layers and the activations")

    def test_subnet_must_start_with_linear(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=lambda i, o: nn.Sequential(
            nn.Tanh(), nn.Linear(i, o)))
        self.refused(inn, "must start with a Linear layer")

    def test_two_input_nodes(self):
        i1, i2 = F.InputNode(2, name="i1"), F.InputNode(2, name="i2")
        cat = F.Node([i1, i2], F.Concat, {}, name="cat")
        g = F.GraphINN([i1, i2, cat, F.OutputNode(cat, name="out")])
        self.refused(g, "GraphINN with 2 InputNodes", "one input x")

    def test_block_with_two_inputs(self):
        inp = F.InputNode(4, name="in")
        split = F.Node(inp, F.Split, {"section_sizes": [2, 2]}, name="split")
        glow = F.Node([(split, 0), (split, 1)], F.GLOWCouplingBlock, {"subnet_constructor": sn},
                      name="glow")
        g = F.GraphINN([inp, split, glow, F.OutputNode(glow, name="out")])
        # (the look-alike gives a 2-input module 2 outputs, the second used by no node)
        self.refused(g, "node 'glow' (GLOWCouplingBlock)")

    def test_unsupported_module_in_a_graph_names_the_node(self):
        inp = F.InputNode(4, name="in")
        split = F.Node(inp, F.Split, {"section_sizes": [2, 2]}, name="split")
        odd = F.Node((split, 1), F.ElementwiseRationalQuadraticSpline, {}, name="odd")
        g = F.GraphINN([inp, split, odd, F.OutputNode((split, 0), name="o1"),
                        F.OutputNode(odd, name="o2")])
        self.refused(g, "node 'odd' (ElementwiseRationalQuadraticSpline)")

    def test_split_in_a_sequence(self):
        inn = F.SequenceINN(4)
        inn.append(F.Split, section_sizes=[2, 2])
        self.refused(inn, "module_list.0 (Split)", "build the model as a FrEIA GraphINN")

    def test_invautofc_changing_width(self):
        class InvAutoFC(F.InvertibleModule):   # FrEIA's attributes, dims_out = 3
            def __init__(self, dims_in, dims_c=None):
                super().__init__(dims_in, dims_c)
                self.weights = nn.Parameter(torch.randn(3, dims_in[0][0]))
                self.bias = nn.Parameter(torch.randn(1, 3))

            def output_dims(self, input_dims):
                return [(3,)]
        inn = F.SequenceINN(4)
        inn.append(InvAutoFC)
        self.refused(inn, "module_list.0 (InvAutoFC)", "dims_out = 3 != 4 inputs",
                     "not a bijection")

    def test_unknown_module(self):
        class MyFlow(F.InvertibleModule):
            def forward(self, x, c=[], rev=False, jac=True):
                return (x[0],), 0.
        inn = F.SequenceINN(4)
        inn.append(MyFlow)
        self.refused(inn, "module_list.0 (MyFlow) is not supported", "not a known invertible block")

    def test_uninitialized_actnorm(self):
        inn = F.SequenceINN(4)
        inn.append(F.ActNorm)
        self.refused(inn, "module_list.0 (ActNorm)", "never initialized")

    def test_uninitialized_actnorm_02(self):
        inn = F02.SequenceINN(4)
        inn.append(F02.ActNorm)
        self.refused(inn, "ActNorm (FrEIA 0.2) was never initialized")

    def test_conditional_householder(self):
        inn = F.SequenceINN(4)
        inn.append(F.HouseholderPerm, cond=0, cond_shape=(8,), n_reflections=2)
        self.refused(inn, "conditional HouseholderPerm")

    def test_non_orthogonal_orthogonal_transform(self):
        inn = F.SequenceINN(4)
        inn.append(F.OrthogonalTransform)
        with torch.no_grad():
            inn.module_list[0].weights.add_(0.1)
        self.refused(inn, "OrthogonalTransform", "not orthogonal")

    def test_wrong_freia_version(self):
        inn = F02.SequenceINN(4)
        inn.append(F02.AllInOneBlock, subnet_constructor=sn, affine_clamping=2.5)
        for p in inn.parameters():
            if p.requires_grad:
                p.data += torch.randn_like(p)
        # auto-detection finds 0.2; forcing HEAD must be caught by the module check
        r = export(inn, self.path)
        self.assertEqual(r.manifest["blocks"][0]["clamp_formula"], "legacy")
        os.remove(self.path)
        self.refused(inn, "does not reproduce the module's own forward", freia_version="head")

    def test_modified_subclass_caught(self):
        class Scaled(F.GLOWCouplingBlock):
            def forward(self, x, c=[], rev=False, jac=True):
                (y,), j = super().forward(x, c, rev, jac)
                return (2 * y,), j
        inn = F.SequenceINN(4)
        inn.append(Scaled, subnet_constructor=sn)
        self.refused(inn, "module_list.0 (Scaled)", "does not reproduce")

    def test_cinn_without_condition(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        self.refused(inn, "no block reads a condition", kind="cinn")

    def test_condition_in_flow(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, cond=0, cond_shape=(2,), subnet_constructor=sn)
        self.refused(inn, "reads a condition but kind is flow", kind="flow")

    def test_condition_width(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, cond=0, cond_shape=(5,), subnet_constructor=sn)
        self.refused(inn, "expects a condition of width 5", "width 3",
                     conditions=[nn.Sequential(nn.Linear(2, 3))])

    def test_inn_dims(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        self.refused(inn, "kind inn needs dims", kind="inn")
        self.refused(inn, "must both equal the network width 4", kind="inn",
                     dims={"x": 3, "y": 2, "z": 3, "pad_x": 1, "pad_y": 0})

    def test_standardize_validation(self):
        inn = F.SequenceINN(3)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        self.refused(inn, "std must be > 0", standardize={"x": ([0, 0, 0], [1, 0, 1])})
        self.refused(inn, "need 3 values", standardize={"x": ([0, 0], [1, 1])})
        self.refused(inn, "unknown keys", standardize={"z": ([0, 0, 0], [1, 1, 1])})
        self.refused(inn, "this model has no y", standardize={"y": ([0], [1])})

    def test_names_validation(self):
        inn = F.SequenceINN(3)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        self.refused(inn, "x_names: 2 names for 3 columns", x_names=["a", "b"])

    def test_bad_options(self):
        inn = F.SequenceINN(3)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        self.refused(inn, "freia_version must be one of", freia_version="1.0")
        self.refused(inn, "kind must be", kind="gan")

    def test_rank4_rows(self):
        inn = F.SequenceINN(2, 3, 4, 4)
        inn.module_list.append(F.PermuteRandom([(2,)]))
        self.refused(inn, "shape (2, 3, 4, 4)", "(C, L) and (C, H, W) rows")

    def test_nan_weights(self):
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        with torch.no_grad():
            inn.module_list[0].subnet1[0].weight[0, 0] = float("nan")
        self.refused(inn, "NaN or Inf", "subnet1.0.weight")

    def test_mlp_dropout(self):
        self.refused(nn.Sequential(nn.Linear(2, 4), nn.Dropout(), nn.Linear(4, 1)), "Dropout",
                     kind="mlp")

    def test_lipswish_fold_needs_neighbours(self):
        import iresnet_like as IR
        sw = IR.Swish()
        with torch.no_grad():
            sw.beta.fill_(2.0)
        g = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3), sw)
        self.refused([Residual(g)], "LipSwish", "between two Linear layers")


class TestFileFormat(unittest.TestCase):
    def setUp(self):
        self.tmp = util.TmpDir()

    def tearDown(self):
        self.tmp.cleanup()

    def test_written_file_is_safetensors(self):
        inn = F.SequenceINN(4)
        inn.append(F.AllInOneBlock, cond=0, cond_shape=(2,), subnet_constructor=sn)
        inn.append(F.PermuteRandom, seed=0)
        path = os.path.join(self.tmp.path, "a.safetensors")
        r = export(inn, path, x_names=list("abcd"), y_names=["u", "v"], description="test")
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            self.assertEqual(n % 8, 0)
        meta = header.pop("__metadata__")
        self.assertEqual(meta["format"], "innserve")
        man = json.loads(meta["manifest"])
        self.assertEqual(man, r.manifest)
        self.assertEqual(man["kind"], "cinn")
        self.assertEqual(man["dims"], {"x": 4, "y": 2})
        self.assertEqual(man["names"], {"x": list("abcd"), "y": ["u", "v"]})
        self.assertEqual(man["blocks"][0]["cond"], 0)
        self.assertEqual(man["blocks"][1]["perm"], "module_list.1.perm")
        self.assertEqual(header["module_list.1.perm"]["dtype"], "I64")
        self.assertEqual(header["test.log_det"]["dtype"], "F64")
        self.assertEqual(header["module_list.0.subnet.0.weight"]["shape"], [8, 4])
        # offsets are contiguous and in order
        end = 0
        for name, e in header.items():
            self.assertEqual(e["data_offsets"][0], end, name)
            end = e["data_offsets"][1]
        tensors, meta2 = _safetensors.read(path)
        self.assertEqual(meta2["format"], "innserve")
        vals, shape = tensors["module_list.1.perm"]
        self.assertEqual(sorted(vals), [0, 1, 2, 3])

    def test_safetensors_roundtrip_pure_python(self):
        path = os.path.join(self.tmp.path, "b.safetensors")
        _safetensors.write(path, {"a": [[1.5, 2.0], [3.0, -4.0]], "b": ("I64", [3], b"\x01" + b"\x00" * 7 +
                                                                        b"\x02" + b"\x00" * 7 +
                                                                        b"\x00" * 8)},
                           {"k": "v"})
        t, meta = _safetensors.read(path)
        self.assertEqual(meta, {"k": "v"})
        self.assertEqual(t["a"], ([1.5, 2.0, 3.0, -4.0], [2, 2]))
        self.assertEqual(t["b"], ([1, 2, 0], [3]))
        for dt in ("F16", "BF16", "F64", "I32", "U8", "BOOL"):
            raw = _safetensors.encode(torch.tensor([1.0, 0.0, 2.0]), dtype=dt)
            self.assertEqual(raw[0], dt)
            vals, _ = _safetensors.decode({"dtype": dt, "shape": [3]}, raw[2])
            self.assertEqual([float(v) for v in vals], [1.0, 0.0, 2.0 if dt != "BOOL" else 1.0])

    def test_inspect_and_verify_a_broken_file(self):
        util.need_innctl(self)
        inn = F.SequenceINN(4)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=sn)
        path = os.path.join(self.tmp.path, "c.safetensors")
        export(inn, path)
        p = util.innctl("verify", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        # corrupt one expected value: verify must fail with exit code 4 and name the mismatch
        header, base = _safetensors.read_header(path)
        off = base + header["test.z"]["data_offsets"][0]
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(struct.pack("<d", 123.0))
        p = util.innctl("verify", path)
        self.assertEqual(p.returncode, 4)
        self.assertIn(b"FAIL", p.stdout)
        self.assertIn(b"test vector mismatch", p.stdout)
        p = util.innctl("inspect", path)
        self.assertEqual(p.returncode, 4)
        self.assertIn(b"self-test:   FAILED", p.stdout)
        p = util.innctl("inspect", os.path.join(self.tmp.path, "missing.safetensors"))
        self.assertEqual(p.returncode, 4)


if __name__ == "__main__":
    unittest.main()
