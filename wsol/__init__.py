"""wsol: attributional robustness and weakly supervised localization toolkit."""
from wsol.errors import WsolError

__version__ = "0.1.0"

__all__ = ["WsolError", "__version__"]
