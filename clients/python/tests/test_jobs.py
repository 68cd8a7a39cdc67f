"""Jobs and diagnostics through both clients against the real daemon:
innserve.Client.sample(async_=True), wait() (the same bytes as the synchronous request, in
every format), cancel(), jobs(), job(), calibration() and mmd() (the synchronous answer's
numbers, through a job); innctl sample --async, job ID [--wait] [--cancel], jobs, calibrate
(--x/--y and --pairs, report and --json) and mmd.  The progress display itself is tested
against a scripted server in test_jobs_clients.py."""

import contextlib
import io
import json
import os
import sys
import unittest

import util
import served
import numpy as np

from innserve import ApiError, Client, Job, JobFailed


def setUpModule():
    global D, RES, C
    d, RES = served.repository()
    D = util.Daemon(d)
    if not D.wait_ready(30):
        raise RuntimeError("daemon not ready:\n" + "\n".join(D.log[-20:]))
    C = Client(D.url, timeout=30)


def tearDownModule():
    D.stop()


@contextlib.contextmanager
def quiet_stderr():
    old, sys.stderr = sys.stderr, io.StringIO()
    try:
        yield sys.stderr
    finally:
        sys.stderr = old


class TestClientJobs(unittest.TestCase):
    def test_async_sample_is_the_synchronous_answer(self):
        want = C.sample("ik", y=[[1.0, 0.2], [0.3, -0.5]], num_samples=700, seed=11,
                        outputs=["samples", "log_prob"])
        job = C.sample("ik", y=[[1.0, 0.2], [0.3, -0.5]], num_samples=700, seed=11,
                       outputs=["samples", "log_prob"], async_=True)
        self.assertIsInstance(job, Job)
        self.assertEqual((job.operation, job.model, job.state), ("sample", "ik", "queued"))
        with quiet_stderr() as err:
            got = C.wait(job, progress=True)
        self.assertIn("sample %s" % job.id, err.getvalue())
        self.assertTrue(np.array_equal(got["samples"], want["samples"]))
        self.assertTrue(np.array_equal(got["log_prob"], want["log_prob"]))
        j = C.job(job.id)
        self.assertEqual(j.state, "done")
        self.assertEqual((j.progress["done"], j.progress["total"], j.progress["unit"]),
                         (1400, 1400, "samples"))
        self.assertIn(job.id, [x.id for x in C.jobs()])

    def test_async_csv_and_npy(self):
        for fmt in ("csv", "npy"):
            want = C.sample("flow", num_samples=50, seed=3, format=fmt)
            job = C.sample("flow", num_samples=50, seed=3, format=fmt, async_=True)
            got = C.wait(job, progress=False)
            if fmt == "csv":
                self.assertEqual(got, want)
            else:
                self.assertTrue(np.array_equal(got, want))
            # result() again, by id: the format must be named then
            again = C.result(job.id, format=fmt)
            self.assertEqual(type(again), type(want))

    def test_cancel(self):
        job = C.sample("flow", num_samples=1000000, seed=1, outputs=["log_prob"], async_=True)
        j = C.cancel(job)
        self.assertEqual(j.state, "cancelled")
        with self.assertRaises(JobFailed) as cm:
            C.wait(job, progress=False)
        self.assertEqual(cm.exception.code, "job_cancelled")
        with self.assertRaises(ApiError) as cm:
            C.result(job)
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "job_cancelled"))
        C.cancel(job)   # a finished job: removed
        with self.assertRaises(ApiError) as cm:
            C.job(job.id)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "job_not_found"))
        self.assertIn("memory", cm.exception.message)

    def test_refused_before_the_job(self):
        # what can be checked before computing is answered at once, not as a job
        with self.assertRaises(ApiError) as cm:
            C.sample("ik", y=[[1.0, 2.0, 3.0]], num_samples=5, async_=True)
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "bad_shape"))


def pairs(n, seed):
    """n pairs (x*, y) for the served cINN "ik" (x 4, y 2): x from a standard normal, y an
    arbitrary smooth function of x (the test checks the plumbing, not the model)."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((n, 4)), 6)
    y = np.round(np.stack([np.cos(x[:, 1]) + x[:, 0], np.sin(x[:, 2]) - x[:, 3]], 1), 6)
    return x, y


def synchronous(model, op, body):
    """The daemon's synchronous answer (no job) as parsed JSON."""
    return C.request("POST", "/v1/models/%s/%s" % (model, op), body)


class TestClientDiagnostics(unittest.TestCase):
    def test_calibration_is_the_synchronous_answer(self):
        x, y = pairs(40, 1)
        want = synchronous("ik", "calibration", {"x": x.tolist(), "y": y.tolist(),
                                                 "num_samples": 30, "seed": 5, "bins": 6,
                                                 "coverage_points": 10})
        got = C.calibration("ik", x, y, num_samples=30, seed=5, bins=6, coverage_points=10,
                            progress=False)
        self.assertEqual((got["model"], got["n"], got["num_samples"], got["seed"]),
                         ("ik", 40, 30, 5))
        self.assertEqual(got["sbc"]["ranks"].dtype, np.int64)
        self.assertEqual(got["sbc"]["ranks"].tolist(), want["sbc"]["ranks"])
        self.assertEqual(got["sbc"]["ks_pvalue"].tolist(), want["sbc"]["ks_pvalue"])
        self.assertEqual(got["sbc"]["histogram"]["counts"].shape, (4, 6))
        self.assertEqual(got["coverage"]["hpd"]["empirical"].tolist(),
                         want["coverage"]["hpd"]["empirical"])
        self.assertEqual(len(got["coverage"]["levels"]), 11)
        self.assertEqual(got["tarp"]["atc"], want["tarp"]["atc"])
        # only some diagnostics; a flow without y
        r = C.calibration("flow", x[:, :3], diagnostics="tarp", num_samples=20, seed=1,
                          progress=False)
        self.assertEqual(set(r) & {"sbc", "coverage", "tarp"}, {"tarp"})

    def test_wait_false_and_progress(self):
        x, y = pairs(50, 2)
        job = C.calibration("ik", x, y, num_samples=200, seed=3, wait=False)
        self.assertIsInstance(job, Job)
        self.assertEqual(job.operation, "calibration")
        with quiet_stderr() as err:
            r = C.wait(job, progress=True)
        self.assertIn("calibration %s" % job.id, err.getvalue())
        self.assertEqual(r["n"], 50)
        done = C.job(job.id).progress
        self.assertEqual((done["done"], done["total"], done["unit"]), (10000, 10000, "samples"))

    def test_mmd_is_the_synchronous_answer(self):
        ref, _ = pairs(60, 3)
        want = synchronous("ik", "mmd", {"y": [[1.0, 0.5]], "reference": ref.tolist(),
                                         "num_samples": 80, "seed": 9, "permutations": 50,
                                         "estimator": "biased", "scales": [0.1, 1.0]})
        got = C.mmd("ik", y=[1.0, 0.5], reference=ref, num_samples=80, seed=9,
                    permutations=50, estimator="biased", scales=[0.1, 1.0], progress=False)
        self.assertEqual((got["mmd2"], got["p_value"], got["m"]),
                         (want["mmd2"], want["p_value"], 60))
        self.assertEqual(got["scales"].tolist(), [0.1, 1.0])
        flow = C.mmd("flow", reference=ref[:, :3], num_samples=50, permutations=0,
                     progress=False)
        self.assertIsNone(flow["p_value"])

    def test_errors_at_submission(self):
        with self.assertRaises(ApiError) as cm:
            C.calibration("surr", [[1, 2, 3]], [[1, 2]], progress=False)
        self.assertEqual(cm.exception.code, "unsupported_operation")
        with self.assertRaises(ApiError) as cm:
            C.mmd("ik", y=[1.0, 0.5], reference=[[1, 2, 3]], progress=False)
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "bad_shape"))


class TestInnctlJobs(unittest.TestCase):
    def setUp(self):
        util.need_innctl(self)

    def ctl(self, *args):
        return util.innctl("--url", D.url, *args)

    def test_sample_async_then_wait(self):
        sync = self.ctl("sample", "ik", "--y", "1,0.2", "-n", "300", "--seed", "5",
                        "--format", "csv", "--log-prob")
        self.assertEqual(sync.returncode, 0, sync.stderr)
        p = self.ctl("sample", "ik", "--y", "1,0.2", "-n", "300", "--seed", "5", "--format",
                     "csv", "--log-prob", "--async")
        self.assertEqual(p.returncode, 0, p.stderr)
        job = json.loads(p.stdout)
        self.assertEqual((job["operation"], job["state"]), ("sample", "queued"))
        p = self.ctl("job", job["id"], "--wait", "--progress")
        self.assertEqual(p.returncode, 0, p.stderr)
        # the CSV the synchronous request prints, byte for byte (innctl prints CSV as
        # the daemon answers it)
        self.assertEqual(p.stdout, sync.stdout)
        self.assertIn(b"done      [##############################] 100%  300/300 samples",
                      p.stderr)
        p = self.ctl("job", job["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("state      done", out)
        self.assertIn("operation  sample", out)
        p = self.ctl("jobs")
        self.assertRegex(p.stdout.decode(), r"\n%s +done +sample +ik +300/300 samples"
                         % job["id"])
        p = self.ctl("jobs", "--json")
        self.assertIn(job["id"], [j["id"] for j in json.loads(p.stdout)["jobs"]])

    def test_npy_and_cancel(self):
        p = self.ctl("sample", "flow", "-n", "40", "--seed", "2", "--format", "npy", "--async")
        jid = json.loads(p.stdout)["id"]
        out = os.path.join(D.models_dir, "..", "innctl-job-%s.npy" % jid)
        try:
            p = self.ctl("job", jid, "--wait", "-o", out)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, b"")   # no terminal, no --progress: no bar
            self.assertTrue(np.array_equal(np.load(out), C.sample("flow", num_samples=40,
                                                                   seed=2, format="npy")))
        finally:
            if os.path.exists(out):
                os.remove(out)
        p = self.ctl("sample", "flow", "-n", "1000000", "--seed", "1", "--async")
        jid = json.loads(p.stdout)["id"]
        p = self.ctl("job", jid, "--cancel", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["state"], "cancelled")
        p = self.ctl("job", jid, "--wait")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"job %s was cancelled" % jid.encode(), p.stderr)
        p = self.ctl("job", "0123456789abcdef0123456789abcdef")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 404 job_not_found", p.stderr)

    def test_calibrate(self):
        x, y = pairs(30, 4)
        xs, ys = json.dumps(x.tolist()), json.dumps(y.tolist())
        want = synchronous("ik", "calibration", {"x": x.tolist(), "y": y.tolist(),
                                                 "num_samples": 25, "seed": 8,
                                                 "diagnostics": ["sbc", "tarp"],
                                                 "z_score": False})
        p = self.ctl("calibrate", "ik", "--x", xs, "--y", ys, "-n", "25", "--seed", "8",
                     "--diagnostics", "sbc,tarp", "--no-z-score", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")   # no terminal, no --progress: no bar
        self.assertEqual(json.loads(p.stdout), want)
        # --pairs: x and y side by side
        both = json.dumps(np.concatenate([x, y], 1).tolist())
        q = self.ctl("calibrate", "ik", "--pairs", both, "-n", "25", "--seed", "8",
                     "--diagnostics", "sbc,tarp", "--no-z-score", "--json", "--progress")
        self.assertEqual(q.returncode, 0, q.stderr)
        self.assertEqual(q.stdout, p.stdout)
        self.assertIn(b"done      [##############################] 100%  750/750 samples",
                      q.stderr)
        # the report
        p = self.ctl("calibrate", "ik", "--pairs", both, "-n", "25", "--seed", "8")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("ik version 1: 30 pairs x 25 posterior samples (seed 8)", out)
        full = synchronous("ik", "calibration", {"x": x.tolist(), "y": y.tolist(),
                                                 "num_samples": 25, "seed": 8})
        self.assertRegex(out, r"\na2 +%.4g +%.4g\n" % (full["sbc"]["ks_statistic"][2],
                                                      full["sbc"]["ks_pvalue"][2]))
        self.assertRegex(out, r"level +lower +upper +hpd +h +a1 +a2 +a3\n")
        self.assertIn("TARP: ATC %.4g, KS p-value %.4g" % (full["tarp"]["atc"],
                                                          full["tarp"]["ks_pvalue"]), out)
        self.assertIn("warning: only 30 pairs", out)
        p = self.ctl("calibrate", "ik", "--pairs", xs)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"--pairs: rows have 4 values; model 'ik' wants dims.x + dims.y = 4 + 2",
                      p.stderr)
        p = self.ctl("calibrate", "ik", "--x", xs, "--y", ys, "--async")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["operation"], "calibration")

    def test_mmd(self):
        ref, _ = pairs(40, 5)
        want = synchronous("ik", "mmd", {"y": [[1.0, 0.5]], "reference": ref.tolist(),
                                         "num_samples": 60, "seed": 4, "permutations": 30})
        p = self.ctl("mmd", "ik", "--y", "1,0.5", "--reference", json.dumps(ref.tolist()),
                     "-n", "60", "--seed", "4", "--permutations", "30")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("mmd2 %.6g  p-value %.4g (30 permutations)" % (want["mmd2"],
                                                                    want["p_value"]), out)
        self.assertIn("60 posterior samples (seed 4) against 40 reference samples, unbiased "
                      "estimator, imq kernel, scales 0.05, 0.2, 0.9", out)
        p = self.ctl("mmd", "surr", "--reference", "1,2,3")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"HTTP 422 unsupported_operation", p.stderr)


if __name__ == "__main__":
    unittest.main()
