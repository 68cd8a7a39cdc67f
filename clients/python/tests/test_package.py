"""The innserve package itself, without a daemon: what `import innserve` imports, and the
attributes it offers (innserve.export as the README uses it).
"""

import os
import subprocess
import sys
import unittest

import util  # noqa: F401 - puts the innserve package on sys.path
import innserve


class TestPackageAttributes(unittest.TestCase):
    def test_export_is_an_attribute_imported_lazily(self):
        # `import innserve; innserve.export.export(...)` (the README's session) in a fresh
        # interpreter: the package import leaves torch and innserve.export unimported, the
        # first attribute access imports them, and export() runs.
        code = ("import sys, os, tempfile\n"
                "import innserve\n"
                "print('torch' in sys.modules, 'innserve.export' in sys.modules)\n"
                "import torch\n"
                "_ = torch.manual_seed(0)\n"
                "net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))\n"
                "path = os.path.join(tempfile.mkdtemp(), 'm.safetensors')\n"
                "r = innserve.export.export(net, path)\n"
                "print(innserve.export is sys.modules['innserve.export'], r.manifest['kind'], os.path.getsize(path) > 0)\n"
                "print(innserve.export.export is __import__('innserve.export', fromlist=['export']).export)\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=os.path.join(util.HERE, ".."))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.splitlines(), ["False False", "True mlp True", "True"])

    def test_unknown_attribute_still_raises(self):
        with self.assertRaisesRegex(AttributeError, "has no attribute 'nope'"):
            innserve.nope


if __name__ == "__main__":
    unittest.main()
