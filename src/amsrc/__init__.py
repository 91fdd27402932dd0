"""AMSRC: appearance-motion semantics representation consistency for video anomaly detection.

Importing the package has no side effects and does not import torch; the estimator is loaded
lazily (``from amsrc import AMSRC``).
"""

__version__ = "0.1.0"

__all__ = ["AMSRC", "__version__"]


def __getattr__(name: str):
    if name == "AMSRC":
        from amsrc.detector import AMSRC

        return AMSRC
    raise AttributeError(f"module 'amsrc' has no attribute {name!r}")
