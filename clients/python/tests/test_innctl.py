"""innctl (the C CLI) as a subprocess against a live daemon: every command, inputs from
arguments, files and stdin, JSON/CSV/NPY output, error paths and exit codes
(0 ok, 1 usage, 2 HTTP error, 3 no connection, 4 invalid checkpoint)."""

import http.server
import io
import json
import os
import socket
import threading
import unittest

import util
import served
import numpy as np

from innserve import Client


def setUpModule():
    global D, RES, URL, TMP
    if not util.INNCTL_BIN:
        raise unittest.SkipTest("innctl not built (set INNCTL_BIN)")
    d, RES = served.repository()
    D = util.Daemon(d)
    if not D.wait_ready(30):
        raise RuntimeError("daemon not ready")
    URL = D.url
    TMP = util.TmpDir("innctl-test-")


def tearDownModule():
    D.stop()
    TMP.cleanup()


def ctl(*args, stdin=None, url=True, env=None):
    a = (["--url", URL] if url else []) + list(args)
    return util.innctl(*a, stdin=stdin, env=env)


class TestHelpAndUsage(unittest.TestCase):
    def test_help(self):
        p = ctl("--help", url=False)
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        for cmd in ("models", "info", "sample", "forward", "inverse", "log-prob", "preimage",
                    "certificate", "inspect", "verify", "Exit codes"):
            self.assertIn(cmd, out)

    def test_help_per_command(self):
        for cmd in ("models", "info", "sample", "forward", "inverse", "log-prob", "preimage",
                    "certificate", "health", "metrics", "inspect", "verify"):
            p = ctl(cmd, "--help", url=False)
            self.assertEqual(p.returncode, 0, cmd)
            self.assertIn(b"usage: innctl " + cmd.encode(), p.stdout)
            q = ctl("help", cmd, url=False)
            self.assertEqual(q.stdout, p.stdout)

    def test_usage_errors_exit_1(self):
        for args in (["frobnicate"], ["sample"], ["sample", "ik", "--bogus", "1"],
                     ["sample", "ik", "-n", "zero"], ["sample", "ik", "--format", "xml"],
                     ["forward", "flow"], ["forward", "flow", "--x", "1,a"],
                     ["forward", "flow", "--x", "1,2,3;4,5"], ["forward", "flow", "--x", "@/nonexistent"],
                     ["models", "extra"], ["inspect"], ["verify"], []):
            p = ctl(*args)
            self.assertEqual(p.returncode, 1, "%s: %s" % (args, p.stderr))
            self.assertTrue(p.stderr.startswith(b"innctl: ") or b"usage" in p.stderr, args)

    def test_bad_input_messages(self):
        p = ctl("forward", "flow", "--x", "1,2,3;4,5")
        self.assertIn(b"row 1 has 2 values, row 0 has 3", p.stderr)
        p = ctl("forward", "flow", "--x", "1,nan,2")
        self.assertEqual(p.returncode, 1)


class TestOnline(unittest.TestCase):
    def test_models(self):
        p = ctl("models")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertTrue(out.startswith("NAME"))
        for n in ("ik", "flow", "inn", "surr", "ires"):
            self.assertIn(n, out)
        self.assertIn("READY", out)
        j = json.loads(ctl("models", "--json").stdout)
        self.assertEqual({m["name"] for m in j["models"]}, {"ik", "flow", "inn", "surr", "ires"})

    def test_url_from_environment(self):
        p = util.innctl("models", env={"INNSERVE_URL": URL})
        self.assertEqual(p.returncode, 0, p.stderr)
        p = util.innctl("--url=" + URL, "models")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_info(self):
        p = ctl("info", "ik")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("kind:", out)
        self.assertIn("cinn", out)
        self.assertIn("h, a1, a2, a3", out)
        self.assertIn("AllInOneBlock", out)
        j = json.loads(ctl("info", "ik", "--json").stdout)
        self.assertEqual(j["names"]["y"], ["px", "py"])

    def test_sample_json_matches_client(self):
        p = ctl("sample", "ik", "--y", "1.5,0", "-n", "20", "--seed", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        c = Client(URL).sample("ik", y=[1.5, 0], num_samples=20, seed=1)
        self.assertEqual(j["seed"], 1)
        self.assertTrue(np.array_equal(np.array(j["samples"]), c["samples"]))

    def test_sample_csv_and_stdin(self):
        p = ctl("sample", "ik", "--y", "-", "-n", "3", "--seed", "2", "--format", "csv",
                "--log-prob", stdin=b"px,py\n1.5,0\n0.5,1\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().strip().split("\n")
        self.assertEqual(lines[0], "obs,sample,h,a1,a2,a3,log_prob")
        self.assertEqual(len(lines), 7)
        self.assertTrue(lines[4].startswith("1,0,"))

    def test_sample_npy_to_file(self):
        out = os.path.join(TMP.path, "s.npy")
        p = ctl("sample", "ik", "--y", "1.5,0;0,1", "-n", "8", "--seed", "3", "--format", "npy",
                "-o", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        a = np.load(out)
        self.assertEqual(a.shape, (2, 8, 4))
        c = Client(URL).sample("ik", y=[[1.5, 0], [0, 1]], num_samples=8, seed=3)
        self.assertTrue(np.array_equal(a, c["samples"].astype(np.float32)))
        # npy to a pipe works too
        p = ctl("sample", "ik", "--y", "1.5,0", "-n", "2", "--seed", "3", "--format", "npy")
        self.assertEqual(np.load(io.BytesIO(p.stdout)).shape, (1, 2, 4))

    def test_sample_summary(self):
        p = ctl("sample", "ik", "--y", "1.5,0", "-n", "300", "--seed", "1", "--summary",
                "--quantiles", "0.1,0.9")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("observation 0", out)
        for w in ("mean", "std", "q0.1", "q0.9", "h ", "a3"):
            self.assertIn(w, out)
        j = json.loads(ctl("sample", "ik", "--y", "1.5,0", "-n", "50", "--summary", "--json").stdout)
        self.assertIn("summary", j)

    def test_sample_inn_resimulation(self):
        p = ctl("sample", "inn", "--y", "0.2,-0.1", "-n", "50", "--summary", "--resimulation")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"resimulation rmse", p.stdout)

    def test_forward_inverse_files(self):
        xcsv = os.path.join(TMP.path, "x.csv")
        with open(xcsv, "w") as f:
            f.write("h,a1,a2,a3\n0.1,0.2,-0.3,0.4\n# comment\n\n0,-0.5,0.5,1\n")
        yjson = os.path.join(TMP.path, "y.json")
        with open(yjson, "w") as f:
            json.dump({"y": [[1.5, 0.0]]}, f)
        p = ctl("forward", "ik", "--x", "@" + xcsv, "--y", "@" + yjson)
        self.assertEqual(p.returncode, 0, p.stderr)
        fw = json.loads(p.stdout)
        self.assertEqual(len(fw["z"]), 2)
        c = Client(URL).forward("ik", [[0.1, 0.2, -0.3, 0.4], [0, -0.5, 0.5, 1]], [1.5, 0])
        self.assertTrue(np.allclose(fw["z"], c["z"]))
        zjson = json.dumps(fw["z"]).encode()
        p = ctl("inverse", "ik", "--z", "-", "--y", "1.5,0", stdin=zjson)
        self.assertEqual(p.returncode, 0, p.stderr)
        x = np.array(json.loads(p.stdout)["x"])
        self.assertTrue(np.allclose(x, [[0.1, 0.2, -0.3, 0.4], [0, -0.5, 0.5, 1]], atol=2e-5))

    def test_forward_csv(self):
        p = ctl("forward", "ik", "--x", "0.1,0.2,-0.3,0.4", "--y", "1.5,0", "--format", "csv")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().strip().split("\n")
        self.assertEqual(lines[0], "z0,z1,z2,z3,log_det")
        self.assertEqual(len(lines[1].split(",")), 5)
        p = ctl("inverse", "ik", "--z", "0,0,0,0", "--y", "1.5,0", "--format", "csv")
        self.assertEqual(p.stdout.decode().split("\n")[0], "h,a1,a2,a3,log_det")

    def test_log_prob(self):
        p = ctl("log-prob", "flow", "--x", "[[0.1,0.2,0.3],[0,0,0]]")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(json.loads(p.stdout)["log_prob"]), 2)

    def test_preimage(self):
        p = ctl("preimage", "surr", "--target", "0.1,0.2", "--num-solutions", "3", "--max-steps",
                "50", "--low", "-1,-1,-1", "--high", "1,1,1", "--format", "csv")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().strip().split("\n")
        self.assertEqual(lines[0], "target,rank,p,q,r,residual")
        # up to 3 distinct solutions of target row 0, ranked from 0, best (smallest residual)
        # first, inside the box given
        rows = [[float(v) for v in ln.split(",")] for ln in lines[1:]]
        self.assertTrue(1 <= len(rows) <= 3, lines)
        self.assertEqual([r[:2] for r in rows], [[0, k] for k in range(len(rows))])
        self.assertEqual([r[5] for r in rows], sorted(r[5] for r in rows))
        self.assertTrue(all(-1 <= v <= 1 for r in rows for v in r[2:5]), rows)

    def test_certificate(self):
        p = ctl("certificate", "ires")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"invertible: yes (guarantee: contraction)", p.stdout)
        self.assertIn(b"Lip", p.stdout)
        j = json.loads(ctl("certificate", "surr", "--json").stdout)
        self.assertFalse(j["invertible"])

    def test_health_and_metrics(self):
        p = ctl("health")
        self.assertEqual((p.returncode, p.stdout), (0, b"ready\n"))
        self.assertEqual(ctl("health", "--live", "--quiet").returncode, 0)
        p = ctl("metrics")
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"innserve_requests_total", p.stdout)


class TestErrorExitCodes(unittest.TestCase):
    def test_unknown_model_exit_2(self):
        p = ctl("info", "nope")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 404", p.stderr)
        self.assertIn(b"nope", p.stderr)

    def test_bad_shape_exit_2(self):
        p = ctl("forward", "flow", "--x", "1,2")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 400", p.stderr)

    def test_unsupported_operation_exit_2(self):
        p = ctl("sample", "surr", "-n", "3")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 422", p.stderr)

    def test_connection_refused_exit_3(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        for args in (["models"], ["health"], ["sample", "ik", "--y", "1,0"]):
            p = util.innctl("--url", "http://127.0.0.1:%d" % port, *args)
            self.assertEqual(p.returncode, 3, args)
            self.assertIn(b"cannot reach the daemon", p.stderr)

    def test_timeout_exit_3(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        try:
            p = util.innctl("--url", "http://127.0.0.1:%d" % srv.getsockname()[1],
                            "--timeout", "0.5", "models")
            self.assertEqual(p.returncode, 3)
            self.assertIn(b"timeout", p.stderr)
        finally:
            srv.close()


class _Plan(http.server.BaseHTTPRequestHandler):
    """Answers the planned (status, code, message) errors in turn, then 200 {"models": []}."""
    plan = []
    seen = 0

    def log_message(self, *a):
        pass

    def do_GET(self):
        type(self).seen += 1
        if self.plan:
            status, code, msg = self.plan.pop(0)
            body = json.dumps({"error": msg, "code": code}).encode()
            self.send_response(status)
            self.send_header("Retry-After", "0")
        else:
            body = json.dumps({"models": []}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TestRetries(unittest.TestCase):
    """innctl retries transient 429/503 answers and reports a permanent one at once."""

    @classmethod
    def setUpClass(cls):
        cls.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plan)
        threading.Thread(target=cls.srv.serve_forever, daemon=True).start()
        cls.url = "http://127.0.0.1:%d" % cls.srv.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()

    def run_models(self, plan):
        _Plan.plan, _Plan.seen = list(plan), 0
        return util.innctl("--url", self.url, "--retries", "4", "models")

    def test_transient_answers_are_retried(self):
        p = self.run_models([(503, "model_unavailable", "model 'm' is still loading"),
                             (503, "draining", "the server is shutting down"),
                             (503, "overloaded", "the queue is full"),
                             (429, "overloaded", "slow down")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(_Plan.seen, 5)

    def test_model_that_failed_to_load_is_not_retried(self):
        p = self.run_models([(503, "model_unavailable",
                              "model 'm' is unavailable: m.safetensors: file is truncated")])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"model_unavailable", p.stderr)
        self.assertEqual(_Plan.seen, 1)

    def test_retries_run_out(self):
        p = self.run_models([(503, "overloaded", "the queue is full")] * 5)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(_Plan.seen, 5)


class TestOffline(unittest.TestCase):
    def test_inspect(self):
        p = util.innctl("inspect", RES["ik"].path)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        for w in ("kind:        cinn", "x 4, y 2", "h, a1, a2, a3", "parameters:", "AllInOneBlock",
                  "certificate: invertible", "self-test:   passed", "exporter innserve"):
            self.assertIn(w, out)
        # --json: the daemon's GET /v1/models/{m} document for the file
        p = util.innctl("inspect", "--json", RES["ires"].path)
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        name = os.path.basename(RES["ires"].path)[:-len(".safetensors")]
        self.assertEqual((j["model"], j["name"], j["version"], j["state"]), (name, name, "1", "READY"))
        self.assertTrue(j["numeric_inverse"])
        self.assertEqual(j["certificate"]["guarantee"], "contraction")
        self.assertEqual(j["kind"], "flow")
        self.assertEqual(j["parameters"], sum(
            t.numel() for n, t in RES["ires"].tensors.items() if not n.startswith("test.")))

    def test_inspect_graph(self):
        # a graph model: its nodes with their inputs, the outputs in z order, lists of conditions
        path = os.path.join(util.ROOT, "tests", "fixtures", "golden", "graph_two_conditions.safetensors")
        p = util.innctl("inspect", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        for w in ("graph:       5 nodes, outputs (z in this order): cat[0]",
                  "cat              Concat                      <- caff_a[0] aio_b[0]",
                  "GLOWCouplingBlock           cond 0,1", "self-test:   passed"):
            self.assertIn(w, out)

    def test_verify_many(self):
        paths = [r.path for r in RES.values()]
        p = util.innctl("verify", *paths)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout.count(b"PASS"), len(paths))
        p = util.innctl("verify", "--quiet", *paths)
        self.assertEqual((p.returncode, p.stdout), (0, b""))
        bad = os.path.join(TMP.path, "bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
        p = util.innctl("verify", "--json", paths[0], bad)
        self.assertEqual(p.returncode, 4)
        j = json.loads(p.stdout)
        self.assertEqual([e["passed"] for e in j], [True, False])


if __name__ == "__main__":
    unittest.main()
