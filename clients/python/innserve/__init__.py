"""innserve: Python client and PyTorch/FrEIA exporter for the innserve daemon.

    from innserve import Client, ApiError         # standard library only (numpy optional)
    from innserve.export import export            # needs torch (FrEIA optional)

`innserve.export` is also reachable as an attribute after a plain `import innserve`; it is
imported (and torch with it) on first use, never at package import time.

See docs/clients.md.
"""

from ._version import __version__
from .client import ApiError, Client, ConnectionFailed, Job, JobFailed, parse_csv, parse_npy

__all__ = ["__version__", "Client", "ApiError", "ConnectionFailed", "Job", "JobFailed",
           "parse_csv", "parse_npy", "ExportError", "export"]


def __getattr__(name):
    # innserve.export and innserve.ExportError without importing torch at package import time
    if name == "export":
        import importlib
        return importlib.import_module(".export", __name__)
    if name == "ExportError":
        from .export import ExportError
        return ExportError
    raise AttributeError("module 'innserve' has no attribute %r" % name)
