"""The clients' side of jobs against a scripted server that follows the jobs contract of
docs/api.md (202 + Location, GET /v1/jobs/{id} with progress, /result, DELETE): progress
that advances one step per poll, so what the clients draw while they wait is known.
innserve.Client: calibration()/mmd()/sample(async_=True), wait() with a tqdm bar, with the
plain stderr line (tqdm hidden) and with nothing, failed and cancelled jobs, cancel();
innctl: calibrate/mmd waiting with --progress, --async, jobs, job ID [--wait] [--cancel].
The same commands against the real daemon are in test_jobs.py."""

import contextlib
import http.server
import io
import json
import sys
import threading
import unittest

import util
import numpy as np

import innserve
from innserve import Client, Job, JobFailed

STEPS = 4   # polls until a job is done


class _Jobs(http.server.BaseHTTPRequestHandler):
    """Jobs whose progress advances by total/STEPS on every GET of the job."""

    jobs = {}
    posts = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def _send(self, status, obj=None, body=None, ctype="application/json", headers=()):
        if body is None:
            body = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _job(self, j, with_result=True):
        o = {k: j[k] for k in ("id", "url", "operation", "model", "version", "sha256", "state",
                               "created", "started", "finished", "result_url")}
        o["progress"] = {"done": j["done"], "total": j["total"], "unit": "samples",
                         "rate": 1000.0, "eta_s": None if j["state"] != "running" else 1.0}
        if j["state"] == "failed":
            o["error"] = {"error": "num_samples x n is too large", "code": "too_large",
                          "status": 413}
        if with_result and j["state"] == "done" and j["accept"] == "application/json":
            o["result"] = j["result"]
        return o

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        model, op = self.path.split("/")[3:5]
        with self.lock:
            _Jobs.posts.append((self.path, body, self.headers.get("Prefer")))
            if not body.get("async") or model == "sync":
                # a daemon without jobs answers at once
                return self._send(200, {"model": model, "sync": True})
            jid = "j%d" % (len(_Jobs.jobs) + 1)
            total = body.get("num_samples", 10) * len(body.get("x", body.get("y", [[0]])))
            accept = self.headers.get("Accept", "application/json")
            if op == "calibration":
                result = {"model": model, "version": "1", "sha256": "ab", "seed": 7,
                          "num_samples": body["num_samples"], "n": len(body["x"]),
                          "sbc": {"ranks": [[1, 2], [3, 4]], "ks_statistic": [0.25, 0.5],
                                  "ks_pvalue": [0.9, 0.05],
                                  "histogram": {"edges": [0, 2, 4], "counts": [[1, 1], [0, 2]]}},
                          "coverage": {"levels": [0, 0.5, 1], "lower": [0, 0.2, 0.9],
                                       "upper": [0.1, 0.8, 1],
                                       "hpd": {"ranks": [1, 2], "empirical": [0, 0.5, 1]},
                                       "central": {"empirical": [[0, 0.4, 1], [0, 0.6, 1]]}},
                          "tarp": {"alpha": [0, 1], "ecp": [0, 1], "atc": 0.125,
                                   "ks_pvalue": 0.75}}
            elif op == "mmd":
                result = {"model": model, "version": "1", "sha256": "ab", "seed": 3,
                          "num_samples": body["num_samples"], "m": len(body["reference"]),
                          "kernel": "imq", "scales": [0.05, 0.2, 0.9], "estimator": "unbiased",
                          "mmd2": 0.0125, "permutations": 200, "p_value": 0.5}
            else:
                result = {"model": model, "samples": [[[1.0, 2.0]]]}
            _Jobs.jobs[jid] = {"id": jid, "url": "/v1/jobs/" + jid, "operation": op,
                               "model": model, "version": "1", "sha256": "ab", "state": "queued",
                               "created": "2026-01-01T00:00:00Z", "started": None,
                               "finished": None, "result_url": "/v1/jobs/%s/result" % jid,
                               "done": 0, "total": total, "result": result, "accept": accept,
                               "fail": model == "failing", "polls": 0}
            j = _Jobs.jobs[jid]
            o = {k: j[k] for k in ("id", "url", "state", "operation", "model", "version",
                                   "sha256")}
        self._send(202, o, headers=[("Location", "/v1/jobs/" + jid)])

    def _lookup(self):
        parts = self.path.split("/")
        j = _Jobs.jobs.get(parts[3]) if len(parts) > 3 else None
        if j is None:
            self._send(404, {"error": "job '%s' is not known: jobs live in memory only"
                             % (parts[3] if len(parts) > 3 else ""), "code": "job_not_found"})
        return j, parts

    def do_GET(self):
        with self.lock:
            if self.path == "/v1/jobs":
                return self._send(200, {"jobs": [self._job(j, False) for j in
                                                 _Jobs.jobs.values()]})
            if self.path.startswith("/v1/models/"):
                return self._send(200, {"names": {"x": ["alpha", "beta"]}})
            j, parts = self._lookup()
            if j is None:
                return
            if len(parts) > 4 and parts[4] == "result":
                if j["state"] == "cancelled":
                    return self._send(409, {"error": "job cancelled", "code": "job_cancelled"})
                if j["state"] != "done":
                    return self._send(409, {"error": "job not done", "code": "job_not_done"})
                if j["accept"] == "text/csv":
                    return self._send(200, body=b"obs,sample,a,b\n0,0,1,2\n", ctype="text/csv")
                return self._send(200, j["result"])
            if j["state"] in ("queued", "running"):
                j["polls"] += 1
                j["state"] = "running"
                j["started"] = "2026-01-01T00:00:01Z"
                j["done"] = min(j["total"], j["total"] * j["polls"] // STEPS)
                if j["polls"] >= STEPS:
                    j["state"] = "failed" if j["fail"] else "done"
                    j["finished"] = "2026-01-01T00:00:02Z"
            self._send(200, self._job(j))

    def do_DELETE(self):
        with self.lock:
            j, _ = self._lookup()
            if j is None:
                return
            if j["state"] in ("queued", "running"):
                j["state"] = "cancelled"
            self._send(200, self._job(j, False))


def setUpModule():
    global SRV, URL
    SRV = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jobs)
    threading.Thread(target=SRV.serve_forever, daemon=True).start()
    URL = "http://127.0.0.1:%d" % SRV.server_address[1]


def tearDownModule():
    SRV.shutdown()
    SRV.server_close()


@contextlib.contextmanager
def captured_stderr():
    old, buf = sys.stderr, io.StringIO()
    sys.stderr = buf
    try:
        yield buf
    finally:
        sys.stderr = old


@contextlib.contextmanager
def without_tqdm():
    saved = sys.modules.get("tqdm")
    sys.modules["tqdm"] = None   # import tqdm raises ImportError
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["tqdm"]
        else:
            sys.modules["tqdm"] = saved


def have_tqdm():
    try:
        import tqdm  # noqa: F401
        return True
    except ImportError:
        return False


class TestPythonClient(unittest.TestCase):
    def setUp(self):
        self.c = Client(URL, timeout=10)

    def test_calibration_waits_and_returns_the_answer(self):
        with captured_stderr() as err:
            r = self.c.calibration("m", x=[[1, 2], [3, 4]], y=[[0.5], [0.25]], num_samples=5,
                                   seed=7, diagnostics=["sbc", "tarp"], bins=3, z_score=False,
                                   progress=False)
        self.assertEqual(err.getvalue(), "")
        path, body, prefer = _Jobs.posts[-1]
        self.assertEqual(path, "/v1/models/m/calibration")
        self.assertEqual(prefer, "respond-async")
        self.assertEqual(body, {"x": [[1, 2], [3, 4]], "y": [[0.5], [0.25]], "num_samples": 5,
                                "seed": 7, "diagnostics": ["sbc", "tarp"], "bins": 3,
                                "z_score": False, "async": True})
        self.assertEqual(r["tarp"]["atc"], 0.125)
        self.assertEqual(r["sbc"]["ranks"].dtype, np.int64)
        self.assertEqual(r["sbc"]["ks_pvalue"].tolist(), [0.9, 0.05])
        self.assertEqual(r["coverage"]["central"]["empirical"].shape, (2, 3))

    def test_wait_false_returns_the_job(self):
        job = self.c.mmd("m", y=[0.5], reference=[[1, 2], [3, 4], [5, 6]], num_samples=8,
                         wait=False)
        self.assertIsInstance(job, Job)
        self.assertEqual((job.state, job.operation, job.model), ("queued", "mmd", "m"))
        self.assertFalse(job.finished)
        self.assertEqual(_Jobs.posts[-1][1]["reference"], [[1, 2], [3, 4], [5, 6]])
        r = self.c.wait(job.id, progress=False)
        self.assertEqual((r["mmd2"], r["p_value"]), (0.0125, 0.5))
        self.assertTrue(self.c.job(job.id).finished)

    def test_progress_line_without_tqdm(self):
        job = self.c.mmd("m", y=[0.5], reference=[[1, 2]], num_samples=100, wait=False)
        with without_tqdm(), captured_stderr() as err:
            self.c.wait(job, progress=True)
        lines = err.getvalue().split("\r")
        self.assertIn("mmd %s: running  25%% 25/100 samples, ETA 1s" % job.id, lines[1])
        self.assertIn("mmd %s: done 100%% 100/100 samples" % job.id, lines[-1])
        self.assertTrue(err.getvalue().endswith("\n"))
        # progress=None without tqdm: nothing
        job = self.c.mmd("m", y=[0.5], reference=[[1, 2]], num_samples=100, wait=False)
        with without_tqdm(), captured_stderr() as err:
            self.c.wait(job)
        self.assertEqual(err.getvalue(), "")

    @unittest.skipUnless(have_tqdm(), "tqdm is not installed (Debian python3-tqdm)")
    def test_tqdm_bar(self):
        job = self.c.mmd("m", y=[0.5], reference=[[1, 2]], num_samples=100, wait=False)
        with captured_stderr() as err:
            self.c.wait(job)   # progress=None: tqdm when importable
        out = err.getvalue()
        self.assertIn("mmd %s: 100%%|" % job.id, out)
        self.assertIn("100/100", out)
        with captured_stderr() as err:
            self.c.wait(self.c.mmd("m", y=[0.5], reference=[[1, 2]], wait=False),
                        progress=False)
        self.assertEqual(err.getvalue(), "")

    def test_sample_async_csv(self):
        job = self.c.sample("m", y=[1.0], num_samples=2, format="csv", async_=True)
        self.assertEqual(job.operation, "sample")
        self.assertEqual(self.c.wait(job, progress=False), "obs,sample,a,b\n0,0,1,2\n")
        self.assertEqual(_Jobs.posts[-1][1]["async"], True)

    def test_failed_and_cancelled(self):
        with self.assertRaises(JobFailed) as cm:
            self.c.calibration("failing", x=[[1, 2]], y=[[0]], progress=False)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.job.state), (413, "too_large", "failed"))
        self.assertIn("too large", e.message)
        job = self.c.calibration("m", x=[[1, 2]], y=[[0]], wait=False)
        j = self.c.cancel(job)
        self.assertEqual(j.state, "cancelled")
        with self.assertRaises(JobFailed) as cm:
            self.c.wait(job, progress=False)
        self.assertEqual(cm.exception.code, "job_cancelled")
        with self.assertRaises(innserve.ApiError) as cm:
            self.c.job("nope")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "job_not_found"))

    def test_jobs_list(self):
        self.c.mmd("m", y=[0.5], reference=[[1, 2]], wait=False)
        jobs = self.c.jobs()
        self.assertTrue(jobs and all(isinstance(j, Job) for j in jobs))
        self.assertNotIn("result", jobs[0].raw)

    def test_synchronous_answer(self):
        # a daemon that answers at once (200): the answer itself, no job
        self.assertEqual(self.c.calibration("sync", x=[[1, 2]]), {"model": "sync", "sync": True})
        self.assertEqual(self.c.mmd("sync", reference=[[1]], wait=False),
                         {"model": "sync", "sync": True})


class TestInnctl(unittest.TestCase):
    def setUp(self):
        util.need_innctl(self)

    def ctl(self, *args):
        return util.innctl("--url", URL, *args)

    def test_calibrate_report_with_progress(self):
        p = self.ctl("calibrate", "m", "--x", "1,2;3,4", "--y", "0.5;0.25", "-n", "50",
                     "--seed", "7", "--diagnostics", "sbc,coverage", "--no-z-score",
                     "--progress")
        self.assertEqual(p.returncode, 0, p.stderr)
        body = _Jobs.posts[-1][1]
        self.assertEqual(body, {"x": [[1, 2], [3, 4]], "y": [[0.5], [0.25]], "num_samples": 50,
                                "seed": 7, "diagnostics": ["sbc", "coverage"],
                                "z_score": False, "async": True})
        out = p.stdout.decode()
        self.assertIn("m version 1: 2 pairs x 50 posterior samples (seed 7)", out)
        self.assertRegex(out, r"alpha +0\.25 +0\.9\n")
        self.assertRegex(out, r"beta +0\.5 +0\.05\n")
        self.assertRegex(out, r"level +lower +upper +hpd +alpha +beta\n")
        self.assertRegex(out, r"0\.5 +0\.2 +0\.8 +0\.5 +0\.4 +0\.6\n")
        self.assertIn("TARP: ATC 0.125, KS p-value 0.75", out)
        err = p.stderr.decode()
        # one line per poll, rewritten: 25%, 50%, 75%, 100%
        self.assertIn("running   [########......................]  25%  25/100 samples", err)
        self.assertIn("done      [##############################] 100%  100/100 samples", err)
        self.assertTrue(err.endswith("\n"))

    def test_no_progress_when_stderr_is_not_a_terminal(self):
        p = self.ctl("mmd", "m", "--y", "0.5", "--reference", "1,2;3,4", "-n", "10", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        j = json.loads(p.stdout)
        self.assertEqual((j["mmd2"], j["p_value"]), (0.0125, 0.5))
        p = self.ctl("mmd", "m", "--y", "0.5", "--reference", "1,2;3,4", "--estimator", "biased",
                     "--scales", "0.1,1", "--permutations", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(_Jobs.posts[-1][1]["scales"], [0.1, 1])
        self.assertEqual(_Jobs.posts[-1][1]["estimator"], "biased")
        self.assertIn("mmd2 0.0125  p-value 0.5 (200 permutations)", p.stdout.decode())
        p = self.ctl("mmd", "m", "--reference", "1,2", "--estimator", "fancy")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"--estimator must be one of: unbiased biased", p.stderr)

    def test_async_then_job(self):
        p = self.ctl("sample", "m", "--y", "1", "-n", "3", "--format", "csv", "--async")
        self.assertEqual(p.returncode, 0, p.stderr)
        job = json.loads(p.stdout)
        self.assertEqual((job["state"], job["operation"]), ("queued", "sample"))
        jid = job["id"]
        p = self.ctl("job", jid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("state      running", p.stdout.decode())
        self.assertIn("progress   0/3 samples, 1000/s, ETA 1 s", p.stdout.decode())
        p = self.ctl("jobs")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"\n%s +running +sample +m +0/3 samples" % jid)
        p = self.ctl("job", jid, "--wait", "--progress")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"obs,sample,a,b\n0,0,1,2\n")
        self.assertIn(b"done      [", p.stderr)
        p = self.ctl("job", jid, "--json")
        self.assertEqual(json.loads(p.stdout)["state"], "done")

    def test_synchronous_answer(self):
        p = self.ctl("mmd", "sync", "--reference", "1,2", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"model": "sync", "sync": True})

    def test_cancel_and_failures(self):
        p = self.ctl("mmd", "m", "--reference", "1,2", "--async")
        jid = json.loads(p.stdout)["id"]
        p = self.ctl("job", jid, "--cancel")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("state      cancelled", p.stdout.decode())
        p = self.ctl("job", jid, "--wait")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"job %s was cancelled" % jid.encode(), p.stderr)
        p = self.ctl("calibrate", "failing", "--x", "1,2", "--y", "0")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"failed: HTTP 413 too_large: num_samples x n is too large", p.stderr)
        p = self.ctl("job", "nope")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 404 job_not_found", p.stderr)
        p = self.ctl("job", jid, "--wait", "--cancel")
        self.assertEqual(p.returncode, 1)
        p = self.ctl("calibrate", "m", "--y", "0")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"calibrate needs --x ROWS", p.stderr)


if __name__ == "__main__":
    unittest.main()
