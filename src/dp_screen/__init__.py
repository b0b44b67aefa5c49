"""dp_screen: high-throughput screening of AA'BB'X6 double perovskites.

Pipeline: enumerate compositions -> build starting structures -> fine-tune MACE -> relax -> validate with DFT ->
analyse. From Python: ``import dp_screen as dps; dps.screen(["Cs2AgBiCl6"])`` (:mod:`dp_screen.api`). Science lives in ``chemistry``, ``structures``, ``mlip`` and ``analysis`` (no workflow imports); jobflow
Makers live in ``jobs`` and ``flows``; store documents in ``schemas``; database access in ``stores``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dp_screen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

#: the public API (dp_screen.api), imported on first use so that ``import dp_screen`` stays light
_API = (
    "PerovskiteCell",
    "Relaxation",
    "build",
    "compositions",
    "ground_states",
    "load",
    "load_map",
    "maps",
    "rank",
    "relax",
    "screen",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from dp_screen import api

        return getattr(api, name)
    raise AttributeError(f"module 'dp_screen' has no attribute {name!r}")
