#!/usr/bin/env python3
"""Quality of the image demo models (8 x 8 digits), measured THROUGH THE SERVED API
(docs/models.md).

    /usr/bin/python3 models/evaluate_images.py                 # starts build/innserve on models/
    /usr/bin/python3 models/evaluate_images.py --url http://127.0.0.1:8080
    /usr/bin/python3 models/evaluate_images.py --update-docs   # rewrite the block in docs/models.md
                                                               # and the sample grids in docs/img/

digits_cinn (class-conditional multi-scale cINN) and digits_iresnet (convolutional i-ResNet
flow), both trained on the same split of scikit-learn's digits (models/train/
train_digits_*.py: permutation of the 1797 images by numpy's default_rng(1), the first 297
held out).  For each model:
  * bits per dimension of the held-out images: POST .../log_prob with the images dequantized
    as in training, x = (v + u) / 17 with u ~ U(0, 1) drawn here (--seed), and y the one-hot
    class for the cINN; the daemon's bits_per_dim (docs/api.md: -(log p(x) + 64 log(1/17)) /
    (64 ln 2)); the mean over the images, and for the cINN also with the wrong class (the
    class the model is most sure is wrong is not searched: the next class, (k + 1) mod 10),
    which says how much the condition matters;
  * sample grids made by curl (format=png): one row per class for the cINN (10 samples each,
    temperature 0.8), one row of 12 samples for the flow (a flow has no
    observation; temperature 0.8); the curl command
    lines are printed and written into the docs block.
"""

import argparse
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, HERE)
from evaluate import start_daemon, update_docs  # noqa: E402
from innserve import Client  # noqa: E402

LEVELS = 17
BEGIN, END = "<!-- BEGIN model-quality digits -->", "<!-- END model-quality digits -->"


def held_out():
    from sklearn.datasets import load_digits
    d = load_digits()
    perm = np.random.default_rng(1).permutation(len(d.images))
    te = perm[:297]
    return d.images[te].astype(np.float64), d.target[te].astype(np.int64)


def bits(c, model, x, y=None):
    """Mean bits/dim over the rows, in chunks of 100 requests' worth."""
    out = []
    for i in range(0, len(x), 100):
        body = {"x": x[i:i + 100].tolist()}
        if y is not None:
            body["y"] = y[i:i + 100].tolist()
        r = c.request("POST", "/v1/models/%s/log_prob" % model, body)
        out.extend(r["bits_per_dim"])
    return float(np.mean(out)), float(np.std(out))


def curl_png(url, model, body, out, scale=4):
    cmd = ["curl", "-s", "-H", "Content-Type: application/json",
           "%s/v1/models/%s/sample?format=png&scale=%d" % (url, model, scale),
           "-d", body, "-o", out]
    subprocess.run(cmd, check=True)
    with open(out, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            raise SystemExit("%s: the answer is not a PNG: %s" % (out, open(out, "rb").read(300)))
    shown = list(cmd)
    shown[4] = "localhost:8080/v1/models/%s/sample?format=png&scale=%d" % (model, scale)
    shown[-1] = os.path.relpath(out, os.path.join(ROOT, "docs")) if out.startswith(ROOT) else out
    return " ".join(shlex.quote(s) for s in shown)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running daemon serving the image models")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "innserve"))
    p.add_argument("--models", default=HERE)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--update-docs", action="store_true")
    a = p.parse_args()
    proc = None
    if a.url:
        c, url = Client(a.url, timeout=300), a.url
    else:
        proc, c = start_daemon(a.bin, a.models)
        url = c.url if hasattr(c, "url") else c.base_url
    img_dir = os.path.join(ROOT, "docs", "img") if a.update_docs else "/tmp"
    try:
        v, labels = held_out()
        rng = np.random.default_rng(a.seed)
        x = ((v + rng.random(v.shape)) / LEVELS)[:, None]          # (297, 1, 8, 8)
        onehot = np.eye(10)[labels]
        wrong = np.eye(10)[(labels + 1) % 10]
        R = {}
        t0 = time.time()
        R["cinn"] = bits(c, "digits_cinn", x, onehot)
        R["cinn_wrong"] = bits(c, "digits_cinn", x, wrong)
        R["iresnet"] = bits(c, "digits_iresnet", x)
        R["ms"] = (time.time() - t0) * 1000
        ys = np.eye(10).astype(int).tolist()
        R["curl_cinn"] = curl_png(url, "digits_cinn",
                                  '{"y": %s, "num_samples": 10, "seed": 1, "temperature": 0.8}'
                                  % ys, os.path.join(img_dir, "digits_cinn_samples.png"))
        R["curl_iresnet"] = curl_png(url, "digits_iresnet",
                                     '{"num_samples": 12, "seed": 1, "temperature": 0.8}',
                                     os.path.join(img_dir, "digits_iresnet_samples.png"))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    L = []
    L.append("Measured %s through the served API (models/evaluate_images.py, seed %d): the "
             "297 held-out images, dequantized once." % (time.strftime("%Y-%m-%d"), a.seed))
    L.append("")
    L.append("| model | held-out bits/dim (mean ± std over images) |")
    L.append("|---|---:|")
    L.append("| digits_cinn, true class | %.3f ± %.3f |" % R["cinn"])
    L.append("| digits_cinn, wrong class ((k + 1) mod 10) | %.3f ± %.3f |" % R["cinn_wrong"])
    L.append("| digits_iresnet | %.3f ± %.3f |" % R["iresnet"])
    L.append("| uniform over the 17 levels (reference) | %.3f |" % math.log2(LEVELS))
    L.append("")
    L.append("The sample grids below are the daemon's PNG answers, written by exactly these "
             "commands (against a daemon on port 8080):")
    L.append("")
    L.append("<!-- doc-test: not run: writes docs/img/; models/evaluate_images.py runs exactly "
             "these commands -->")
    L.append("```sh")
    L.append(R["curl_cinn"])
    L.append(R["curl_iresnet"])
    L.append("```")
    L.append("")
    L.append("![digits_cinn: one row per class 0-9, 10 samples each, temperature 0.8]"
             "(img/digits_cinn_samples.png)")
    L.append("![digits_iresnet: 12 samples, temperature 0.8](img/digits_iresnet_samples.png)")
    md = "\n".join(L) + "\n"
    print(md)
    if a.update_docs:
        update_docs(md, BEGIN, END)


if __name__ == "__main__":
    main()
