#!/usr/bin/python3
"""tests/docs/run_docs.py — the documentation's examples, run against the real daemon.

Every example of the repository's Markdown files (README.md, docs/, deploy/README.md,
clients/python/README.md, tests/fixtures/README.md...; or only the files given) is executed
and its output compared with what the document shows, exactly.  A document whose
example no longer holds fails `make test-docs` (part of `make check` and `make test`).

What runs
  ```console   lines starting with "$ " are shell commands (bash; a trailing backslash
               continues a command on the next line; a here-document continues it up to its
               terminator); the lines after a command, up to the next command or the fence,
               are its output (stdout and stderr together).  A command must exit 0 unless its
               output ends with the line "[exit N]", which then must be its exit status.
  ```pycon     Python sessions: ">>> " and "... " lines are statements, the lines after them
               their output, as the interactive interpreter prints it (expression values
               with repr, tracebacks in full).
Within one document all blocks share one working directory and one Python interpreter, in
document order; the next document starts afresh.  The working directory is a new temporary
directory holding a copy of the repository's models/ (the directory the daemon serves, so a
recipe may add a checkpoint there and send SIGHUP) and a symbolic link to every other
top-level entry of the repository (`build/innctl`, `clients/`, `docs/` resolve); files a
command writes stay there, and the directory is removed afterwards.  The environment has
build/ first on PATH (`innctl` and `innserve` are the built ones, as after `make install`),
INNSERVE_URL set to the daemon, and the Python package importable (`import innserve`).
The Python sessions run in a child interpreter of their own (the Python running this
script, /usr/bin/python3 under make: Debian's python3-torch and python3-numpy), one per
document, so no document sees another's imports or variables.  "127.0.0.1:8080" and
"localhost:8080" in commands are rewritten to the test daemon's address (it listens on a
free port), and back in what they print.

How output compares
  Line by line, exactly, after removing trailing whitespace and the final empty lines.  A line
  that is exactly "..." in the document matches any number of lines (also none), and "..."
  within a line matches any text there: use them, and say so in the text, only where an output
  may legitimately differ (a timing such as load_ms, a temporary path) or to shorten a long
  answer.  Nothing else is tolerated: the daemon's answers are the same bytes on every machine.

Links
  Every relative Markdown link must name a file or directory of the repository (and its
  #anchor a heading of that document, as GitHub makes anchors of headings), every
  document named in the text (`name.md`) must exist in it, and no document may point outside
  it (an absolute path such as /work/..., or ../shared).

What may not hide
  A fenced block of commands or code that is not console/pycon (```sh, ```bash, ```shell,
  ```python, or any other block that calls curl, innctl or innserve) fails the check unless the line
  before its fence is `<!-- doc-test: not run: REASON -->` (say why: it needs podman or a
  cluster, root, the network, a trained model that is not shipped, minutes of CPU...).

The daemon is `--bin` serving the document's copy of models/ (exactly what `make run`
serves), started afresh for each document (so counters such as /metrics start from zero).

A failure names the document and the line of the command, the command, and the difference
between the document's output and the real one (a unified diff).

Usage: run_docs.py --bin build/innserve [--update] [--only FILE.md]... [FILE.md ...]
  --only FILE  run this document only (repeatable; the same as naming it as an argument)
  --update     rewrite each failing example's output in the document with what it printed
               (then read the diff before you commit it: an update must only record a real
               change of behaviour)
"""
import argparse
import difflib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def markdown_files():
    """Every Markdown file of the repository (README.md first, then by path), build outputs
    and hidden directories left out."""
    out = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "build")) and x != "node_modules"
                         and x != "__pycache__")
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in files if f.endswith(".md")]
    return sorted(out, key=lambda p: (p != "README.md", p))


DEFAULT_FILES = markdown_files()
FENCE = re.compile(r"^(\s*)```([A-Za-z0-9_+-]*)\s*$")
SKIP = re.compile(r"<!--\s*doc-test:\s*not run:\s*(\S.*?)\s*-->")
CALLS = re.compile(r"(^\s*|^\$\s+|[;&|(]\s*)(sudo\s+)?(\S*/)?(curl|innctl|innserve)\b")
ADDR = re.compile(r"(127\.0\.0\.1|localhost):8080")
STEP_TIMEOUT = 300     # seconds one command or statement may take
CODE = ("python", "sh", "bash", "shell", "zsh")
EXIT = re.compile(r"^\[exit (\d+)\]$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"(?<![\w.])(/work/|\.\./shared\b|/home/|/root/)")
MDNAME = re.compile(r"(?<![\w./:-])([\w][\w./-]*\.md)\b")


def anchors(path):
    """The anchors GitHub gives the headings of a Markdown file (duplicates get -1, -2...)."""
    out, seen, fence = set(), {}, False
    for line in open(path, encoding="utf-8").read().split("\n"):
        if FENCE.match(line) or line.strip() == "```":
            fence = not fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fence or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else "%s-%d" % (slug, n))
    return out


def link_problems(rel, text):
    """Relative links that do not resolve inside the repository, and paths outside it."""
    out = []
    base = os.path.dirname(os.path.join(ROOT, rel))
    for n, line in enumerate(text.split("\n"), 1):
        for m in LINK.finditer(line):
            target, _, anchor = m.group(1).partition("#")
            if re.match(r"^[a-z]+:", target):
                continue
            full = os.path.normpath(os.path.join(base, target)) if target else os.path.join(ROOT, rel)
            if not full.startswith(ROOT + os.sep) or not os.path.exists(full):
                out.append("%s:%d: the link %s does not name a file of the repository"
                           % (rel, n, m.group(1)))
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                out.append("%s:%d: the link %s names no heading of %s"
                           % (rel, n, m.group(1), os.path.relpath(full, ROOT)))
        m = OUTSIDE.search(line)
        if m:
            out.append("%s:%d: %s points outside the repository" % (rel, n, m.group(1)))
        for m in MDNAME.finditer(LINK.sub("", line)):
            name = m.group(1)
            if not any(os.path.exists(os.path.join(d, name)) for d in (base, ROOT, os.path.join(ROOT, "docs"))):
                out.append("%s:%d: %s names a document that is not in the repository"
                           % (rel, n, name))
    return out


class Block:
    def __init__(self, path, lang, start, lines, skip):
        self.path, self.lang, self.start, self.lines, self.skip = path, lang, start, lines, skip


def blocks_of(path, text):
    """Fenced blocks of a Markdown text: (lang, first content line number, lines, skip reason)."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, j = m.group(1), m.group(2), i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = lines[i - 1] if i > 0 else ""
        sk = SKIP.search(prev)
        body = [l[len(indent):] if l.startswith(indent) else l for l in lines[i + 1:j]]
        out.append(Block(path, lang, i + 1, body, sk.group(1) if sk else None))
        i = j + 1
    return out


# ---- parsing the examples -------------------------------------------------------------------

def console_steps(lines):
    """[(command, [expected lines], index of first output line, index after output)]"""
    steps, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if steps:
                raise ValueError("line %d: output before any command" % (i + 1))
            raise ValueError("line %d: a console block starts with \"$ \"" % (i + 1))
        cmd = [lines[i][2:]]
        i += 1
        heredoc = re.search(r"<<-?\s*'?\"?([A-Za-z_]+)'?\"?", cmd[0])
        while cmd[-1].endswith("\\") and i < len(lines):
            cmd.append(lines[i])
            i += 1
        if heredoc:
            end = heredoc.group(1)
            while i < len(lines) and lines[i] != end:
                cmd.append(lines[i])
                i += 1
            if i < len(lines):
                cmd.append(lines[i])
                i += 1
        o0 = i
        while i < len(lines) and not lines[i].startswith("$ "):
            i += 1
        steps.append(("\n".join(cmd), lines[o0:i], o0, i))
    return steps


def pycon_steps(lines):
    steps, i = [], 0
    while i < len(lines):
        if not lines[i].startswith(">>> "):
            raise ValueError("line %d: expected a \">>> \" statement" % (i + 1))
        src = [lines[i][4:]]
        i += 1
        while i < len(lines) and (lines[i].startswith("... ") or lines[i] == "..."
                                  and src[-1].endswith(":")):
            src.append(lines[i][4:])
            i += 1
        o0 = i
        while i < len(lines) and not lines[i].startswith(">>> "):
            i += 1
        steps.append(("\n".join(src), lines[o0:i], o0, i))
    return steps


# ---- comparing ------------------------------------------------------------------------------

def trim(lines):
    lines = [l.rstrip() for l in lines]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def line_matches(w, g):
    """Equal, or w holds "..." that stand for any text within the line (as doctest's ELLIPSIS)."""
    if w == g:
        return True
    if "..." not in w:
        return False
    return re.fullmatch(".*?".join(re.escape(p) for p in w.split("...")), g, re.S) is not None


def matches(want, got):
    """want may hold "..." lines (any number of lines) and "..." within a line (any text)."""
    want, got = trim(want), trim(got)

    def rec(i, j):
        if i == len(want):
            return j == len(got)
        if want[i] == "...":
            return any(rec(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and line_matches(want[i], got[j]) and rec(i + 1, j + 1)
    return rec(0, 0)


def first_difference(want, got):
    want, got = trim(want), trim(got)
    for k in range(max(len(want), len(got))):
        w = want[k] if k < len(want) else "<end>"
        g = got[k] if k < len(got) else "<end>"
        if not line_matches(w, g):
            return "line %d:\n      document: %.300s\n      real:     %.300s" % (k + 1, w, g)
    return "(differs only around a \"...\" line)"


# ---- running --------------------------------------------------------------------------------

# The child interpreter of a document's Python sessions.  It reads one JSON line per
# statement on stdin and answers one JSON line {"out": text} on the descriptor it was given;
# the statement's output (print, expression values, tracebacks, and what subprocesses write
# to descriptors 1 and 2) is collected in between.
PY_CHILD = r"""
import builtins, io, json, os, sys, tempfile, traceback
answer = os.fdopen(int(sys.argv[1]), "w")
cap = tempfile.TemporaryFile()
os.dup2(cap.fileno(), 1)
os.dup2(cap.fileno(), 2)
ns = {"__name__": "__main__", "__builtins__": builtins}
for line in sys.stdin:
    src = json.loads(line)["src"]
    buf = io.StringIO()
    sys.stdout = sys.stderr = buf
    try:
        exec(compile(src + "\n", "<doc>", "single"), ns)
    except SystemExit as e:
        print("SystemExit: %s" % (e.code,))
    except BaseException:
        et, ev, tb = sys.exc_info()
        print("Traceback (most recent call last):")
        print("".join(traceback.format_exception_only(et, ev)).rstrip())
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    sys.__stdout__.flush()
    cap.seek(0)
    raw = cap.read().decode("utf-8", "replace")
    cap.seek(0)
    cap.truncate()
    answer.write(json.dumps({"out": raw + buf.getvalue()}) + "\n")
    answer.flush()
"""


class Session:
    """One document's working directory, environment and Python interpreter."""

    def __init__(self, build):
        self.dir = tempfile.mkdtemp(prefix="innserve-docs-")
        for e in os.listdir(ROOT):
            if e.startswith(".git"):
                continue
            if e == "models":
                shutil.copytree(os.path.join(ROOT, e), os.path.join(self.dir, e), symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                os.symlink(os.path.join(ROOT, e), os.path.join(self.dir, e))
        self.models = os.path.join(self.dir, "models")
        self.port = None
        self.env = dict(os.environ)
        self.env["PATH"] = build + os.pathsep + self.env.get("PATH", "")
        self.env["PYTHONPATH"] = os.path.join(ROOT, "clients", "python")
        self.env["PYTHONHASHSEED"] = "0"
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.py = None

    def set_port(self, port):
        self.port = port
        self.env["INNSERVE_URL"] = "http://127.0.0.1:%d" % port

    def end_python(self, kill=False):
        """Ends the document's interpreter (a later statement starts a new one)."""
        if self.py:
            if kill:
                self.py.kill()
            try:
                self.py.stdin.close()
            except OSError:
                pass
            try:
                self.py.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.py.kill()
                self.py.wait()
            self.answers.close()
            self.py = None

    def close(self):
        self.end_python()
        shutil.rmtree(self.dir, ignore_errors=True)

    def addr(self, s):
        return ADDR.sub("127.0.0.1:%d" % self.port, s)

    def unaddr(self, s):
        return s.replace("127.0.0.1:%d" % self.port, "127.0.0.1:8080")

    def shell(self, cmd):
        r = subprocess.run(["bash", "-c", "exec 2>&1\n" + self.addr(cmd)], cwd=self.dir,
                           env=self.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           timeout=STEP_TIMEOUT)
        return self.unaddr(r.stdout.decode("utf-8", "replace")).split("\n"), r.returncode

    def python(self, src):
        if self.py is None:
            rfd, wfd = os.pipe()
            self.py = subprocess.Popen([sys.executable, "-c", PY_CHILD, str(wfd)], cwd=self.dir,
                                       env=self.env, stdin=subprocess.PIPE, pass_fds=(wfd,),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       text=True)
            os.close(wfd)
            self.answers = os.fdopen(rfd, "r")
        self.py.stdin.write(json.dumps({"src": self.addr(src)}) + "\n")
        self.py.stdin.flush()
        if not select.select([self.answers], [], [], STEP_TIMEOUT)[0]:
            self.end_python(kill=True)
            raise RuntimeError("a Python statement ran longer than %d s" % STEP_TIMEOUT)
        line = self.answers.readline()
        if not line:
            self.end_python()
            raise RuntimeError("the Python interpreter of the document exited")
        return self.unaddr(json.loads(line)["out"]).split("\n")


def run_block(s, b):
    """[(command, expected, got, o0, o1, problem, command's line index)] for the block's steps."""
    res = []
    steps = console_steps(b.lines) if b.lang == "console" else pycon_steps(b.lines)
    for cmd, want, o0, o1 in steps:
        c0 = o0 - len(cmd.split("\n"))
        if b.lang == "console":
            got, rc = s.shell(cmd)
            got = trim(got)
            want_rc = 0
            if want and EXIT.match(want[-1].strip()):
                want_rc = int(EXIT.match(want[-1].strip()).group(1))
            if rc != 0 or want_rc != 0:
                got = got + ["[exit %d]" % rc]
        else:
            got = trim(s.python(cmd))
        ok = matches(want, got)
        res.append((cmd, want, got, o0, o1, None if ok else first_difference(want, got), c0))
    return res


def report(where, cmd, want, got, problem):
    """The failure of one example: where, the command, the first difference, a unified diff."""
    out = ["FAIL %s: the output differs from the document's" % where]
    out += ["    command:  " + l for l in cmd.split("\n")[:6]]
    out.append("    first difference at output " + problem.replace("\n", "\n  "))
    diff = list(difflib.unified_diff(trim(want), got, "document", "real", lineterm="", n=1))
    if len(diff) > 60:
        diff = diff[:60] + ["... (%d more diff lines)" % (len(diff) - 60)]
    out += ["    " + l[:300] for l in diff]
    return "\n".join(out)


def start_daemon(binary, models):
    log = tempfile.NamedTemporaryFile(prefix="innserve-docs-log-", delete=False)
    p = subprocess.Popen([binary, "--models", models, "--host", "127.0.0.1", "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(300):
        if p.poll() is not None:
            sys.exit("run_docs: %s exited before it was ready:\n%s" % (binary, open(log.name).read()))
        m = re.search(r'"event":"listening".*?"port":(\d+)', open(log.name).read())
        if m:
            port = int(m.group(1))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2) as r:
                    if r.status == 200:
                        return p, port, log.name
            except Exception:
                pass
        time.sleep(0.1)
    p.kill()
    sys.exit("run_docs: %s did not become ready in 30 s" % binary)


def run_document(rel, binary, update):
    """Runs one document's examples; returns (examples, failures)."""
    failures = examples = 0
    path = os.path.join(ROOT, rel)
    text = open(path, encoding="utf-8").read()
    for problem in link_problems(rel, text):
        print("FAIL " + problem)
        failures += 1
    s = Session(os.path.dirname(binary))
    daemon = None
    edits = []
    try:
        daemon, port, logname = start_daemon(binary, s.models)
        s.set_port(port)
        for b in blocks_of(rel, text):
            where = "%s:%d" % (rel, b.start)
            if b.lang not in ("console", "pycon"):
                hides = b.lang in CODE or (b.lang != "json" and any(
                    CALLS.search(l.split(" #")[0]) for l in b.lines))
                if hides and not b.skip:
                    print("FAIL %s: a ```%s block with %s is not executed: write it as "
                          "```console / ```pycon with its real output, or mark it "
                          "<!-- doc-test: not run: REASON -->"
                          % (where, b.lang or "", "Python" if b.lang == "python"
                             else "commands" if b.lang in CODE else "curl/innctl/innserve calls"))
                    failures += 1
                continue
            if b.skip:
                continue
            try:
                results = run_block(s, b)
            except (ValueError, RuntimeError, subprocess.TimeoutExpired) as e:
                print("FAIL %s: %s" % (where, e))
                failures += 1
                continue
            for cmd, want, got, o0, o1, problem, c0 in results:
                examples += 1
                where = "%s:%d" % (rel, b.start + 1 + c0)
                if problem:
                    failures += 1
                    print(report(where, cmd, want, got, problem))
                    blank = len(want) - len(trim(want))
                    edits.append((b.start + o0, b.start + o1, got + [""] * blank))
                else:
                    print("ok   %s: %s" % (where, cmd.split("\n")[0][:100]))
    finally:
        s.close()
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                rc = daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
                rc = "killed"
            if rc != 0:
                print("FAIL %s: the daemon exited %s after SIGTERM:\n%s"
                      % (rel, rc, open(logname).read()[-3000:]))
                failures += 1
            os.unlink(logname)
    if update and edits:
        lines = text.split("\n")
        for l0, l1, got in sorted(edits, reverse=True):
            lines[l0:l1] = got
        open(path, "w", encoding="utf-8").write("\n".join(lines))
        print("updated %s (%d examples)" % (rel, len(edits)))
    return examples, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the daemon to run the examples against")
    ap.add_argument("--update", action="store_true", help="write real outputs into the documents")
    ap.add_argument("--only", action="append", default=[], metavar="FILE",
                    help="run this document only (repeatable)")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    files = a.only + a.files or DEFAULT_FILES
    binary = os.path.abspath(a.bin)
    failures = examples = 0
    failed = []
    for f in files:
        full = os.path.abspath(f) if os.path.exists(f) else os.path.join(ROOT, f)
        if not os.path.isfile(full):
            sys.exit("run_docs: %s: no such document" % f)
        # a document outside the repository (tests/docs/test_run_docs.py) keeps its path
        rel = os.path.relpath(full, ROOT) if full.startswith(ROOT + os.sep) else full
        e, n = run_document(rel, binary, a.update)
        examples += e
        failures += n
        if n:
            failed.append("%s (%d)" % (rel, n))
    print("run_docs: %d examples, %d failures%s"
          % (examples, failures, (": " + ", ".join(failed)) if failed else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
