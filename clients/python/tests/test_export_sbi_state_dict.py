"""export_sbi_state_dict against export_sbi: tests/fixtures/sbi/NAME.state_dict.safetensors
holds the state_dict of the estimator that export_sbi exported as NAME.safetensors (see
gen_sbi.py there), with the config export_sbi_state_dict needs and the export's arguments.
Exported from the state_dict alone (sbi is not imported), every fixture gives the same
manifest (its ``source`` and ``description`` aside) and the same tensors, bit for bit; the
old key layout (sbi < 0.23, no ``net.`` prefix) and a ``torch.save`` file give them too,
and sbi's one-dimensional nsf (ContextSplineMap) gives the blocks of golden/nsf_d1_sbi.
Wrong or missing keys, wrong shapes, masks that are not MADE's and configs that do not match
the state_dict are refused naming the key.
"""

import json
import os
import unittest

import torch

import util
from innserve import _safetensors
from innserve.export import ExportError, export_sbi_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "sbi"))
FLOWS = ("sbi_maf", "sbi_maf_fc", "sbi_nsf", "sbi_maf_rqs", "sbi_zuko_maf", "sbi_zuko_nsf")
DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "BOOL": torch.bool,
          "U8": torch.uint8}


def load_state_dict(name):
    """-> (state_dict of torch tensors, config, export keyword arguments)."""
    tensors, meta = _safetensors.read(os.path.join(FIXTURES, name + ".state_dict.safetensors"))
    header, _ = _safetensors.read_header(os.path.join(FIXTURES, name + ".state_dict.safetensors"))
    sd = {k: torch.tensor(v, dtype=DTYPES[header[k]["dtype"]]).reshape(shape)
          for k, (v, shape) in tensors.items()}
    return sd, json.loads(meta["config"]), json.loads(meta["export"])


def checkpoint(path):
    """-> (manifest without source and description, {name: (dtype, shape, values)})."""
    tensors, meta = _safetensors.read(path)
    header, _ = _safetensors.read_header(path)
    m = json.loads(meta["manifest"])
    m.pop("source")
    m.pop("description")
    return m, {k: (header[k]["dtype"], v[1], v[0]) for k, v in tensors.items()}


def setUpModule():
    global TMP
    TMP = util.TmpDir("innserve-sbi-sd-")


def tearDownModule():
    TMP.cleanup()


class SameAsExportSbi(unittest.TestCase):
    def _same(self, name, sd, config, kw):
        path = os.path.join(TMP.path, name + ".safetensors")
        res = export_sbi_state_dict(sd, config, path, **kw)
        want_m, want_t = checkpoint(os.path.join(FIXTURES, name + ".safetensors"))
        got_m, got_t = checkpoint(path)
        self.assertEqual(got_m, want_m, name)
        self.assertEqual(sorted(got_t), sorted(want_t), name)
        for k in want_t:
            if k.startswith("test.") and k not in ("test.x", "test.y"):
                # expected outputs, computed by PyTorch in float64 at export: their last bits
                # follow the BLAS kernel that ran (OPENBLAS_CORETYPE), not the exporter
                dt, shape, vals = got_t[k]
                self.assertEqual((dt, shape), want_t[k][:2], "%s: tensor %s" % (name, k))
                for g, w in zip(vals, want_t[k][2]):
                    self.assertAlmostEqual(g, w, delta=1e-12 * max(1.0, abs(w)),
                                           msg="%s: tensor %s" % (name, k))
            else:
                self.assertEqual(got_t[k], want_t[k], "%s: tensor %s" % (name, k))
        return res

    def test_made(self):
        # sbi's made rebuilt from its state_dict: the same checkpoint as export_sbi wrote
        sd, config, kw = load_state_dict("sbi_made")
        self._same("sbi_made", sd, config, kw)

    def test_every_flow_fixture(self):
        for name in FLOWS:
            sd, config, kw = load_state_dict(name)
            res = self._same(name, sd, config, kw)
            src = res.manifest["source"]
            self.assertEqual(src["object"], "state_dict (%s)" % config["estimator"])
            if "zuko" in name:
                self.assertEqual(src["zuko"], config["zuko_version"])

    def test_old_key_layout_without_net_prefix(self):
        sd, config, kw = load_state_dict("sbi_nsf")
        old = {k[len("net."):] if k.startswith("net.") else k: v for k, v in sd.items()}
        self.assertTrue(any(k.startswith("_transform._transforms.") for k in old))
        self._same("sbi_nsf", old, config, kw)

    def test_from_a_file(self):
        sd, config, kw = load_state_dict("sbi_maf_fc")
        pt = os.path.join(TMP.path, "sd.pt")
        torch.save(sd, pt)
        self._same("sbi_maf_fc", pt, config, kw)
        self._same("sbi_maf_fc", os.path.join(FIXTURES, "sbi_maf_fc.state_dict.safetensors"),
                   config, kw)
        with open(os.path.join(TMP.path, "bad.pt"), "wb") as f:
            f.write(b"not a pickle")
        with self.assertRaises(ExportError) as cm:
            export_sbi_state_dict(os.path.join(TMP.path, "bad.pt"), config,
                                  os.path.join(TMP.path, "never.safetensors"))
        self.assertIn("state_dict: cannot load %r" % os.path.join(TMP.path, "bad.pt"),
                      str(cm.exception))


class OneDimensionalNsf(unittest.TestCase):
    def test_context_spline_map(self):
        # golden/nsf_d1_sbi: sbi's build_nsf for one theta (5 couplings whose spline comes
        # from ContextSplineMap, an MLP of the context; no LULinear), tensors named by the
        # transform's state_dict keys; the state_dict sbi would hold adds the net._transform.
        # prefix and the coupling's identity/transform feature buffers
        path = os.path.join(FIXTURES, "..", "golden", "nsf_d1_sbi.safetensors")
        tensors, meta = _safetensors.read(path)
        want = json.loads(meta["manifest"])["blocks"]
        sd = {"net._transform." + k: torch.tensor(v).reshape(shape)
              for k, (v, shape) in tensors.items() if not k.startswith("test.")}
        for i in range(5):
            pre = "net._transform._transforms.%d." % i
            sd[pre + "identity_features"] = torch.zeros(0, dtype=torch.int64)
            sd[pre + "transform_features"] = torch.zeros(1, dtype=torch.int64)
        res = export_sbi_state_dict(sd, {"estimator": "nsf", "hidden_features": 16,
                                         "z_score_x": False, "z_score_y": False},
                                    os.path.join(TMP.path, "nsf_d1.safetensors"))
        rename = lambda o: json.loads(json.dumps(o).replace('"_transforms.',  # noqa: E731
                                                            '"net._transform._transforms.'))
        self.assertEqual(res.manifest["blocks"], rename(want))
        self.assertEqual(res.manifest["dims"], {"x": 1, "y": 2})
        for k, (v, shape) in tensors.items():
            if not k.startswith("test."):
                self.assertEqual(res.tensors["net._transform." + k].reshape(-1).tolist(), v, k)


class Refusals(unittest.TestCase):
    def _raises(self, sd, config, needle):
        path = os.path.join(TMP.path, "never.safetensors")
        self.assertFalse(os.path.exists(path))
        with self.assertRaises(ExportError) as cm:
            export_sbi_state_dict(sd, config, path)
        self.assertIn(needle, str(cm.exception))
        self.assertFalse(os.path.exists(path))

    def test_missing_key_named(self):
        sd, config, _ = load_state_dict("sbi_maf")
        k = "net._transform._transforms.3.autoregressive_net.blocks.1.linear.weight"
        del sd[k]
        self._raises(sd, config, "state_dict: missing key %r" % k)

    def test_wrong_shape_named(self):
        sd, config, _ = load_state_dict("sbi_nsf")
        k = "net._transform._transforms.1.transform_net.initial_layer.weight"
        self._raises(sd, dict(config, hidden_features=20),
                     "state_dict: key %r has shape (16, 3), the config needs (20, 3)" % k)

    def test_unread_key_named(self):
        sd, config, _ = load_state_dict("sbi_maf")
        # one transform fewer than the state_dict holds: MAF 4 and permutation 4 stay unread
        self._raises(sd, dict(config, num_transforms=4),
                     "state_dict: key 'net._transform._transforms.9.autoregressive_net."
                     "initial_layer.weight' is not part of the maf layout")
        sd["net.something_else"] = torch.zeros(1)
        self._raises(sd, config, "key 'net.something_else' is not part of the maf layout")

    def test_more_transforms_than_stored(self):
        sd, config, _ = load_state_dict("sbi_nsf")
        self._raises(sd, dict(config, num_transforms=3),
                     "state_dict: missing key 'net._transform._transforms.5.identity_features'")
        # sbi's zuko flows have as many hidden layers as transforms (an int hidden_features
        # is repeated num_transforms times)
        sd, config, _ = load_state_dict("sbi_zuko_maf")
        self._raises(sd, dict(config, num_transforms=3),
                     "state_dict: the keys under 'net.transform.transforms.1.hyper.' are Linear "
                     "layers [0, 2, 4]; the config (hidden_features [16, 16, 16]) needs "
                     "[0, 2, 4, 6]")
        self._raises(sd, dict(config, num_transforms=3, hidden_features=[16, 16]),
                     "state_dict: missing key 'net.transform.transforms.3.order'")

    def test_z_scoring_must_match(self):
        sd, config, _ = load_state_dict("sbi_maf_rqs")
        self._raises(sd, dict(config, z_score_y=False),
                     "key 'net._embedding_net.0._mean' is not part of the maf_rqs layout")
        del sd["net._transform._transforms.0._shift"]
        self._raises(sd, config, "missing key 'net._transform._transforms.0._shift' (z_score_x)")

    def test_made_mask_and_degrees_checked(self):
        sd, config, _ = load_state_dict("sbi_maf")
        k = "net._transform._transforms.1.autoregressive_net.blocks.0.linear.mask"
        bad = dict(sd)
        bad[k] = torch.ones_like(sd[k])
        self._raises(bad, config, "state_dict: key %r is not the mask of sbi's MADE" % k)
        k = "net._transform._transforms.1.autoregressive_net.final_layer.degrees"
        bad = dict(sd)
        bad[k] = sd[k].flip(0)
        self._raises(bad, config, "state_dict: key %r is not what sbi's MADE gives" % k)

    def test_config_errors(self):
        sd, config, _ = load_state_dict("sbi_zuko_nsf")
        self._raises(sd, {k: v for k, v in config.items() if k != "zuko_version"},
                     "config zuko_version: needed for zuko_nsf")
        self._raises(sd, dict(config, estimator="zuko_naf"),
                     "config estimator: 'zuko_naf' is not supported (made, maf, maf_rqs, nsf, "
                     "zuko_maf, zuko_nsf)")
        self._raises(sd, dict(config, num_bin=8), "config: unknown key 'num_bin'")
        self._raises(sd, dict(config, num_bins=8),
                     "key 'net.transform.transforms.1.hyper.4.weight' has shape (87, 16), "
                     "the config needs (69, 16)")
        self._raises([1, 2], config, "state_dict: a mapping of names to tensors, not list")

    def test_made_mask_and_components_checked(self):
        sd, config, _ = load_state_dict("sbi_made")
        bad = dict(sd)
        k = "net._distribution._made.blocks.2.linear_layers.1.mask"
        m = bad[k].clone()
        m[0, 1] = 1 - m[0, 1]
        bad[k] = m
        self._raises(bad, config, "state_dict: key %r is not the mask of sbi's MADE" % k)
        self._raises(sd, dict(config, num_mixture_components=4),
                     "config num_mixture_components: 4, but key "
                     "'net._distribution._made.final_layer.weight' gives 3")

    def test_mdn_not_yet(self):
        # innserve.export.mdn exports MDN objects; the state_dict route registers an
        # estimator in statedict._EXPORTERS, which mdn does not do yet
        sd, config, _ = load_state_dict("sbi_mdn")
        self._raises(sd, config, "config estimator: 'mdn' is not supported")



if __name__ == "__main__":
    unittest.main()
