"""innserve: Python client and PyTorch/FrEIA exporter for the innserve daemon.

    from innserve import Client, ApiError         # standard library only (numpy optional)
    from innserve.export import export            # needs torch (FrEIA optional)

See docs/clients.md.
"""

from ._version import __version__
from .client import ApiError, Client, ConnectionFailed, parse_csv, parse_npy

__all__ = ["__version__", "Client", "ApiError", "ConnectionFailed", "parse_csv", "parse_npy",
           "ExportError"]


def __getattr__(name):
    # innserve.ExportError without importing torch at package import time
    if name == "ExportError":
        from .export import ExportError
        return ExportError
    raise AttributeError("module 'innserve' has no attribute %r" % name)
