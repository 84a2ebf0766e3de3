"""wsol: attributional robustness and weakly supervised localization toolkit."""
import os

# albumentations asks PyPI for a newer release each time it is imported; wsol never goes to the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from wsol.errors import WsolError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["WsolError", "__version__"]
