#!/usr/bin/python3
"""tests/docs/test_run_docs.py — the documentation runner fails when a document is wrong.

run_docs.py is run on small documents written to a temporary directory (outside the
repository), against the built daemon: a true example passes; a wrong output, a wrong exit
status, an unmarked shell block, a link outside the repository and a Python name defined by
another document each fail with the document's line; --update writes the real output;
commands write into the document's own working directory, never into the repository.

Usage: test_run_docs.py --bin build/innserve   (make test-docs runs it first)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = None


def run(docs, *args):
    """Writes docs {name: text} to a temporary directory, runs run_docs.py on them in order;
    returns (exit status, output, {name: text afterwards})."""
    d = tempfile.mkdtemp(prefix="innserve-test-run-docs-")
    try:
        paths = []
        for name, text in docs.items():
            paths.append(os.path.join(d, name))
            with open(paths[-1], "w", encoding="utf-8") as f:
                f.write(text)
        r = subprocess.run([sys.executable, os.path.join(HERE, "run_docs.py"), "--bin", BIN]
                           + list(args) + paths, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        after = {}
        for n in docs:
            with open(os.path.join(d, n), encoding="utf-8") as f:
                after[n] = f.read()
        return r.returncode, r.stdout.decode(), after
    finally:
        shutil.rmtree(d)


OK_DOC = """# ok

```console
$ curl -s localhost:8080/healthz
{"status":"ok"}
$ innctl info nope; echo "exit $?"
innctl: HTTP 404 model_not_found: model 'nope' is not in the repository (GET /v1/models lists the models)
exit 2
$ false
[exit 1]
$ printf 'a\\nb\\nc\\nd\\n'
a
...
d
$ echo "load took 12 ms"
load took ... ms
$ cat <<EOF
one
EOF
one
```

```pycon
>>> x = 6 * 7
>>> x
42
>>> import innserve
>>> "ik_cinn" in [m["name"] for m in innserve.Client("http://127.0.0.1:8080").models()]
True
```

<!-- doc-test: not run: needs podman -->
```sh
podman run innserve
```
"""


class RunDocs(unittest.TestCase):
    def test_a_true_document_passes(self):
        rc, out, _ = run({"ok.md": OK_DOC})
        self.assertEqual(rc, 0, out)
        self.assertIn("run_docs: 10 examples, 0 failures", out)

    def test_a_wrong_output_fails_with_a_diff_and_update_writes_the_real_one(self):
        doc = "# wrong\n\n```console\n$ echo real\nshown\n```\n"
        rc, out, after = run({"wrong.md": doc})
        self.assertEqual(rc, 1, out)
        self.assertIn("wrong.md:4: the output differs from the document's", out)
        self.assertIn("command:  echo real", out)
        self.assertIn("-shown", out)
        self.assertIn("+real", out)
        self.assertEqual(after["wrong.md"], doc)
        rc, out, after = run({"wrong.md": doc}, "--update")
        self.assertEqual(after["wrong.md"], "# wrong\n\n```console\n$ echo real\nreal\n```\n")

    def test_a_wrong_exit_status_fails(self):
        rc, out, _ = run({"exit.md": "```console\n$ true\n[exit 1]\n$ exit 3\n```\n"})
        self.assertEqual(rc, 1, out)
        self.assertIn("exit.md:2:", out)
        self.assertIn("exit.md:4:", out)
        self.assertIn("+[exit 3]", out)

    def test_blocks_that_are_not_run_must_say_why(self):
        rc, out, _ = run({"hidden.md": "```sh\nmake run\n```\n\n```\ncurl -s localhost:8080/healthz\n```\n"
                                       "\n```python\nimport innserve\n```\n"})
        self.assertEqual(rc, 1, out)
        self.assertIn("hidden.md:1: a ```sh block with commands is not executed", out)
        self.assertIn("hidden.md:5: a ``` block with curl/innctl/innserve calls", out)
        self.assertIn("hidden.md:9: a ```python block with Python", out)

    def test_links_and_paths_outside_the_repository_fail(self):
        rc, out, _ = run({"links.md": "See [x](nothere.md), ../shared/notes and iresnet_notes.md.\n"})
        self.assertEqual(rc, 1, out)
        self.assertIn("the link nothere.md does not name a file of the repository", out)
        self.assertIn("../shared points outside the repository", out)
        self.assertIn("iresnet_notes.md names a document that is not in the repository", out)

    def test_each_document_has_its_own_python_and_working_directory(self):
        first = ("```pycon\n>>> secret = 1\n>>> open('written.txt', 'w').write('x')\n1\n```\n"
                 "```console\n$ ls written.txt models/ik_cinn.safetensors && touch models/new.safetensors\n"
                 "models/ik_cinn.safetensors\nwritten.txt\n```\n")
        second = ("```pycon\n>>> secret\nTraceback (most recent call last):\n"
                  "NameError: name 'secret' is not defined\n```\n"
                  "```console\n$ ls written.txt models/new.safetensors; echo $?\n...\n2\n```\n")
        rc, out, _ = run({"first.md": first, "second.md": second})
        self.assertEqual(rc, 0, out)
        self.assertFalse(os.path.exists(os.path.join(ROOT, "written.txt")))
        self.assertFalse(os.path.exists(os.path.join(ROOT, "models", "new.safetensors")))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    a, rest = ap.parse_known_args()
    BIN = os.path.abspath(a.bin)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
