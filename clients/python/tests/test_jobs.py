"""Jobs through both clients against the real daemon: innserve.Client.sample(async_=True),
wait() (the same bytes as the synchronous request, in every format), cancel(), jobs(),
job(); innctl sample --async, job ID [--wait] [--cancel], jobs.  The progress display
itself is tested against a scripted server in test_jobs_clients.py."""

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


if __name__ == "__main__":
    unittest.main()
