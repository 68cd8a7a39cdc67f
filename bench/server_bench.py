#!/usr/bin/python3
"""bench/server_bench.py — `make bench-server`: the daemon under wrk, the engine alone, and a
bare libmicrohttpd server, in one run (docs/performance.md, section "Server").

For each endpoint — POST /v1/models/{m}/sample (1 observation x 100 samples, and 1 x 8,
JSON) and POST /v1/models/{m}/forward (batch 1) — and each connection count (1, 16, 64) it
runs wrk (bench/post.lua) against build/innserve serving the model (with its defaults,
dynamic batching on; again with --batch-delay-us 0, batching off, in the same rounds),
then a bare libmicrohttpd server
(build/bench_server_bare) answering a body of the same size with the same threading, then
build/bench_server_engine doing the same engine work with no HTTP (one thread for latency,
as many threads as the server has workers for throughput).  Prints a Markdown table; with
--write it replaces the generated part of docs/performance.md between the server-bench
markers.

HTTP+JSON overhead is reported two ways:
  latency:    (server p50 at 1 connection - engine p50) / engine p50
  throughput: engine calls/s with W threads / server requests/s at 64 connections - 1
(wrk runs on the same machine, so the throughput figures include its CPU use.)
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BEGIN = "<!-- BEGIN server-bench -->"
END = "<!-- END server-bench -->"


def start(cmd, env=None):
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    p = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL, env=env)
    port = None
    for _ in range(2000):
        with open(log.name) as f:
            m = re.search(r'"event":"listening".*?"port":(\d+)', f.read())
        if m:
            port = int(m.group(1))
            break
        if p.poll() is not None:
            break
        time.sleep(0.005)
    if not port:
        p.kill()
        sys.exit("could not start %s; log:\n%s" % (cmd, open(log.name).read()))
    return p, port, log.name


def wait_ready(port):
    for _ in range(2000):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.005)
    sys.exit("server not ready")


def post(port, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (clock ticks)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_counts(port):
    """(requests, batches) computed by dynamic batching so far, from /metrics; None when the
    server has no such metrics (the bare libmicrohttpd server)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port) as r:
        text = r.read().decode(errors="replace")
    m = [re.search(r"^%s (\S+)$" % n, text, re.M)
         for n in ("innserve_batch_requests_sum", "innserve_batch_requests_count")]
    return (float(m[0].group(1)), float(m[1].group(1))) if m[0] and m[1] else None


def wrk(port, path, body, conns, seconds, pid=None):
    env = dict(os.environ, BENCH_BODY=body)
    b0 = batch_counts(port) if pid else None
    c0 = cpu_seconds(pid) if pid else 0.0
    threads = 1 if conns == 1 else 2
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", "%gs" % seconds,
                          "--timeout", "10s", "-s", os.path.join(HERE, "post.lua"),
                          "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, env=env, check=True).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        sys.exit("wrk printed no RESULT:\n" + out)
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    if pid:
        r["cpu_us_per_req"] = (cpu_seconds(pid) - c0) * 1e6 / max(r["requests"], 1)
        b1 = batch_counts(port)
        r["per_batch"] = ((b1[0] - b0[0]) / (b1[1] - b0[1])
                          if b0 and b1 and b1[1] > b0[1] else 0.0)
    return r


def stop(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(HERE, "ref_cinn.safetensors"))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--small-samples", type=int, default=8,
                    help="samples per request of the small sample endpoint")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=2,
                    help="repeat everything, keep the best of each (noisy machines)")
    ap.add_argument("--inline-rows", type=int, default=16,
                    help="also run forward with innserve --inline-rows N (0: skip)")
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    conns = [int(c) for c in a.conns.split(",")]
    info = json.loads(subprocess.run([os.path.join(a.build, "innserve"), "--check", a.model],
                                     capture_output=True, text=True, check=True).stdout)
    dims = info["model"]["dims"]
    kind = info["model"]["kind"]
    cpus = len(os.sched_getaffinity(0))
    y = ",".join("%.3f" % (0.1 * (i % 5) - 0.2) for i in range(dims["y"]))
    x = ",".join("%.3f" % (0.05 * i - 0.3) for i in range(dims["x"]))
    ycond = ',"y":[[%s]]' % y if kind == "cinn" else ""
    yobs = ('"y":[[%s]],' % y) if kind != "flow" else ""
    bodies = {
        "sample": '{%s"num_samples":%d,"seed":1}' % (yobs, a.samples),
        "sample_small": '{%s"num_samples":%d,"seed":1}' % (yobs, a.small_samples),
        "forward": '{"x":[[%s]]%s}' % (x, ycond),
    }
    paths = {"sample": "sample", "sample_small": "sample", "forward": "forward"}
    labels = {"sample": "sample (1 x %d)" % a.samples,
              "sample_small": "sample (1 x %d)" % a.small_samples,
              "forward": "forward (batch 1)"}
    tmp = tempfile.mkdtemp(prefix="innserve-bench-")
    os.makedirs(os.path.join(tmp, "models"))
    shutil.copy(a.model, os.path.join(tmp, "models", "bench.safetensors"))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    results, sizes, eng = {}, {}, {}
    workers = http_threads = 0

    def better(key, r):
        old = results.get(key)
        if old is None or r["rps"] > old["rps"]:
            results[key] = r

    variants = [("innserve", [], list(bodies)),
                ("nobatch", ["--batch-delay-us", "0"], list(bodies))]
    if a.inline_rows > 0:
        variants.append(("inline", ["--inline-rows", str(a.inline_rows)], ["forward"]))
    for rnd in range(a.rounds):
        for name, extra, eps in variants:
            srv, port, log = start([os.path.join(a.build, "innserve"), "--models",
                                    os.path.join(tmp, "models"), "--port", "0"] + extra, env)
            wait_ready(port)
            with open(log) as f:
                m = re.search(r'"workers":(\d+),"http_threads":(\d+)', f.read())
            workers, http_threads = int(m.group(1)), int(m.group(2))
            try:
                for ep in eps:
                    body = bodies[ep]
                    path = "/v1/models/bench/%s" % paths[ep]
                    sizes[ep] = len(post(port, path, body))
                    for _ in range(200):
                        post(port, path, body)   # warm up workspaces and connections
                    for c in conns:
                        better((name, ep, c), wrk(port, path, body, c, a.seconds, srv.pid))
            finally:
                stop(srv)
        for ep, body in bodies.items():
            bare, bport, _ = start([os.path.join(a.build, "bench_server_bare"), str(sizes[ep]),
                                    str(http_threads)])
            try:
                for c in conns:
                    better(("bare", ep, c), wrk(bport, "/", body, c, a.seconds, bare.pid))
            finally:
                stop(bare)
        out = subprocess.run([os.path.join(a.build, "bench_server_engine"), a.model,
                              str(a.samples), str(workers), str(a.seconds)],
                             capture_output=True, text=True, check=True, env=env).stdout
        for line in out.splitlines():
            j = json.loads(line)
            old = eng.get(j["op"])
            if old is None:
                eng[j["op"]] = j
            else:
                old["p50_us"] = min(old["p50_us"], j["p50_us"])
                old["p99_us"] = min(old["p99_us"], j["p99_us"])
                old["calls_per_s"] = max(old["calls_per_s"], j["calls_per_s"])
                old["cpu_us_per_call"] = min(old["cpu_us_per_call"], j["cpu_us_per_call"])
    shutil.rmtree(tmp, ignore_errors=True)

    lines = []
    lines.append("Run: %s, %d CPUs (%s), model `%s` (%s, x %d, y %d, %s parameters), "
                 "%d workers, %d HTTP threads, %g s per wrk run, best of %d rounds; wrk on the "
                 "same machine." % (time.strftime("%Y-%m-%d"), cpus, platform.machine(),
                                    os.path.basename(a.model), kind, dims["x"], dims["y"],
                                    info["model"]["parameters"], workers, http_threads,
                                    a.seconds, a.rounds))
    lines.append("")
    lines.append("| endpoint | conns | innserve req/s | p50 ms | p99 ms | p99/p50 | errors "
                 "| CPU us/req | requests/batch | bare MHD req/s | bare p50 ms | bare CPU us/req "
                 "| response bytes |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(name, ep) for ep in bodies for name in ("innserve", "nobatch")]
    if a.inline_rows > 0:
        rows.append(("inline", "forward"))
    for name, ep in rows:
        for c in conns:
            r = results[(name, ep, c)]
            b = results[("bare", ep, c)]
            label = labels[ep]
            if name == "inline":
                label += ", --inline-rows %d" % a.inline_rows
            elif name == "nobatch":
                label += ", --batch-delay-us 0"
            lines.append("| %s | %d | %.0f | %.3f | %.3f | %.1f | %d | %.0f | %s | %.0f | %.3f | %.0f | %d |"
                         % (label, c, r["rps"], r["p50_ms"], r["p99_ms"],
                            r["p99_ms"] / max(r["p50_ms"], 1e-9), r["errors"],
                            r["cpu_us_per_req"],
                            "%.1f" % r["per_batch"] if r["per_batch"] else "–",
                            b["rps"], b["p50_ms"], b["cpu_us_per_req"], sizes[ep]))
    lines.append("")
    lines.append("| engine alone | p50 us (1 thread) | p99 us | calls/s (%d threads) | CPU us/call "
                 "| latency overhead at 1 conn | CPU overhead at 64 conns "
                 "| throughput overhead at 64 conns |" % workers)
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for ep in (ep for ep in bodies if ep in eng):
        e = eng[ep]
        r1 = results[("innserve", ep, conns[0])]
        rN = results[("innserve", ep, conns[-1])]
        lat = (r1["p50_ms"] * 1000 - e["p50_us"]) / e["p50_us"]
        thr = e["calls_per_s"] / rN["rps"] - 1
        cpu = rN["cpu_us_per_req"] / e["cpu_us_per_call"] - 1
        label = ("eng_sample (1 x %d)" % a.samples) if ep == "sample" else "eng_forward (batch 1)"
        lines.append("| %s | %.1f | %.1f | %.0f | %.1f | %+.0f%% | %+.0f%% | %+.0f%% |"
                     % (label, e["p50_us"], e["p99_us"], e["calls_per_s"], e["cpu_us_per_call"],
                        100 * lat, 100 * cpu, 100 * thr))
    lines.append("")
    for ep in bodies:
        for c in conns:
            on, off = results[("innserve", ep, c)], results[("nobatch", ep, c)]
            lines.append("Dynamic batching, %s at %d connection%s: %.2fx the requests/s of "
                         "--batch-delay-us 0 (%.0f vs %.0f), p99 %.3f vs %.3f ms, %.0f vs %.0f "
                         "us of daemon CPU per request, %.1f requests per batch."
                         % (labels[ep], c, "s" if c > 1 else "", on["rps"] / off["rps"],
                            on["rps"], off["rps"], on["p99_ms"], off["p99_ms"],
                            on["cpu_us_per_req"], off["cpu_us_per_req"], on["per_batch"]))
            lines.append("")
    table = "\n".join(lines).rstrip("\n")
    print(table)
    if a.write:
        path = os.path.join(ROOT, "docs", "performance.md")
        doc = open(path).read() if os.path.exists(path) else "# Performance\n"
        if BEGIN in doc and END in doc:
            pre, rest = doc.split(BEGIN, 1)
            _, post_ = rest.split(END, 1)
            doc = pre + BEGIN + "\n" + table + "\n" + END + post_
        else:
            doc = doc.rstrip("\n") + "\n\n## Server\n\n" + BEGIN + "\n" + table + "\n" + END + "\n"
        with open(path, "w") as f:
            f.write(doc)
        print("updated", path)


if __name__ == "__main__":
    main()
