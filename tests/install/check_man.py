#!/usr/bin/python3
"""tests/install/check_man.py — the man pages say what the binaries' --help says.

Reads the man pages innserve.1 and innctl.1 (as installed) and compares:
  innserve  every option of `innserve --help` (flag, value name, default, variable) is in
            the man page's OPTIONS with the same value name, "Default: X" and
            "variable: INNSERVE_Y", and the man page has no option --help lacks;
  innctl    the global options of `innctl --help` and the man page's GLOBAL OPTIONS are
            the same set; every command of `innctl --help` has a subsection in COMMANDS
            (and no other), and each command's options in `innctl COMMAND --help` are the
            options that subsection describes.
            The part of innctl.1 between its BEGIN and END lines must be exactly what
            `innctl help --roff` prints today (both are made from innctl's option table).
groff must render both pages without a warning.

Usage: check_man.py INNSERVE INNCTL MAN1_DIR
       check_man.py --update-innctl INNCTL PAGE   (rewrite PAGE's generated part: make man)
"""
import os
import re
import subprocess
import sys

FAILS = []


def check(ok, what):
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok:
        FAILS.append(what)


def render(path):
    r = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-ww", "-rLL=200n", path],
                       capture_output=True, text=True)
    check(r.returncode == 0 and not r.stderr.strip(),
          "%s renders without warnings%s" % (path, (": " + r.stderr.strip()) if r.stderr.strip() else ""))
    return r.stdout


def unroff(s):
    """One line of roff source -> its text: font escapes and quotes dropped, \\- -> -."""
    s = re.sub(r"\\f[BIRP]", "", s).replace("\\-", "-").replace("\\e", "\\")
    s = re.sub(r"^\.(B|BI|BR|IR|RB|I)\s+", "", s)
    return s.replace('"', "")


def parse(path):
    """man page source -> {section: [(kind, text)]}: kind "ss" (a subsection title), "tag"
    (the line after .TP) or "text"; section names as written after .SH."""
    secs, cur, after_tp = {}, None, False
    for raw in open(path, encoding="ascii"):
        line = raw.rstrip("\n")
        if line.startswith('.\\"'):
            continue
        if line.startswith(".SH "):
            cur = unroff(line[4:]).strip()
            secs[cur] = []
            continue
        if cur is None:
            continue
        if line.startswith(".SS "):
            secs[cur].append(("ss", unroff(line[4:]).strip()))
        elif line == ".TP":
            after_tp = True
            continue
        elif after_tp:
            secs[cur].append(("tag", unroff(line).strip()))
        elif not line.startswith(".") or re.match(r"^\.(B|BI|BR|IR|RB|I) ", line):
            secs[cur].append(("text", unroff(line).strip()))
        after_tp = False
    return secs


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def innserve(binary, page):
    help_text = run(binary, "--help")
    entries = re.findall(r"^  (--[a-z][a-z0-9-]*)(?: (\S+))?\s+(.*?)\n((?:\s{29}(?!  env).*\n)*)"
                         r"(?:\s{31}env (\S+)\n)?", help_text, re.M)
    want = {}
    for flag, arg, first, cont, env in entries:
        desc = " ".join([first] + [ln.strip() for ln in cont.splitlines()])
        m = re.search(r" \[([^\]]*)\]$", desc)
        want[flag] = (arg, m.group(1) if m else None, env or None)
    check(len(want) > 25, "innserve --help lists %d options" % len(want))
    got, flag, body = {}, None, []

    def close():
        if flag:
            text = " ".join(body)
            d = re.search(r"Default: (\S+?);", text)
            v = re.search(r"variable: (INNSERVE_[A-Z0-9_]+)\.", text)
            got[flag[0]] = (flag[1], d.group(1) if d else None, v.group(1) if v else None)
    for kind, text in page.get("OPTIONS", []):
        if kind == "tag":
            close()
            m = re.match(r"(--[a-z][a-z0-9-]*)\s*(\S*)$", text)
            flag, body = (m.group(1), m.group(2)) if m else None, []
        else:
            body.append(text)
    close()
    check(set(got) == set(want), "innserve.1 OPTIONS has the options of --help (only in the "
          "page: %s; only in --help: %s)" % (sorted(set(got) - set(want)),
                                              sorted(set(want) - set(got))))
    for f in sorted(set(got) & set(want)):
        check(got[f] == want[f], "innserve.1 %s: value name, default and variable %s (--help: "
              "%s)" % (f, got[f], want[f]))


def option_tokens(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[hno])\b", text))


def innctl(binary, page):
    help_text = run(binary, "--help")
    glob = help_text.split("Global options:")[1].split("\n\n")[0]
    want_global = set()
    for ln in glob.splitlines():
        if re.match(r"^  -", ln):
            want_global |= option_tokens(ln[:18])   # the option column, not its description
    got_global = set()
    for kind, text in page.get("GLOBAL OPTIONS", []):
        if kind == "tag":
            got_global |= option_tokens(text)
    check(got_global == want_global, "innctl.1 GLOBAL OPTIONS %s = innctl --help's %s"
          % (sorted(got_global), sorted(want_global)))
    cmds = re.findall(r"^  ([a-z][a-z-]*)\s", help_text.split("Commands:")[1].split("\n\n")[0],
                      re.M)
    check(len(cmds) >= 10, "innctl --help lists %d commands" % len(cmds))
    man = {}
    cur = None
    for kind, text in page.get("COMMANDS", []):
        if kind == "ss":
            cur = text.split()[0]
            man[cur] = {"title": option_tokens(text), "tags": set()}
        elif kind == "tag" and cur:
            man[cur]["tags"] |= option_tokens(text)
    check(set(man) == set(cmds), "innctl.1 COMMANDS has the commands of --help (only in the "
          "page: %s; only in --help: %s)" % (sorted(set(man) - set(cmds)),
                                              sorted(set(cmds) - set(man))))
    for c in cmds:
        h = run(binary, c, "--help")
        h = "\n".join(ln for ln in h.splitlines() if not ln.startswith("Global options:"))
        want = option_tokens(h)
        m = man.get(c, {"title": set(), "tags": set()})
        check(m["tags"] == want and m["title"] == want,
              "innctl.1 %s: options described %s, in the title %s; innctl %s --help: %s"
              % (c, sorted(m["tags"]), sorted(m["title"]), c, sorted(want)))


BEGIN = '.\\" BEGIN innctl help --roff\n'
END = '.\\" END innctl help --roff\n'


def generated_part(path):
    """(text before BEGIN, the generated text, text from END) of an innctl.1."""
    s = open(path, encoding="ascii").read()
    if BEGIN not in s or END not in s:
        return None
    a = s.index(BEGIN) + len(BEGIN)
    b = s.index(END)
    return s[:a], s[a:b], s[b:]


def innctl_roff(binary):
    return run(binary, "help", "--roff")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--update-innctl":
        parts = generated_part(sys.argv[3])
        if parts is None:
            sys.exit("%s has no BEGIN/END lines" % sys.argv[3])
        with open(sys.argv[3], "w", encoding="ascii") as f:
            f.write(parts[0] + innctl_roff(sys.argv[2]) + parts[2])
        return
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    serve, ctl, man1 = sys.argv[1:]
    for page in ("innserve.1", "innctl.1"):
        render(os.path.join(man1, page))
    innserve(serve, parse(os.path.join(man1, "innserve.1")))
    innctl(ctl, parse(os.path.join(man1, "innctl.1")))
    parts = generated_part(os.path.join(man1, "innctl.1"))
    check(parts is not None and parts[1] == innctl_roff(ctl),
          "innctl.1 between its BEGIN and END lines is `innctl help --roff` (else: make man)")
    print("check_man: %d failure(s)" % len(FAILS))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
