"""dp_screen: high-throughput screening of AA'BB'X6 double perovskites.

Pipeline: enumerate compositions -> build starting structures -> fine-tune MACE -> relax -> validate with DFT ->
analyse. Science lives in ``chemistry``, ``structures``, ``mlip`` and ``analysis`` (no workflow imports); jobflow
Makers live in ``jobs`` and ``flows``; store documents in ``schemas``; database access in ``stores``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dp_screen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
