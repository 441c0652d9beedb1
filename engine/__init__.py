"""The restoration engine: pure array functions, with file I/O and model loading at its edge.

>>> from astroswin.engine import RestoreSettings, load_model, restore_array
>>> restored = restore_array(data, load_model("small"), RestoreSettings(strength=0.8))
"""

from .errors import EngineError
from .loading import DEFAULT_MODEL, bundled_models, load_model
from .model import AstroSwin2SR, AstroSwin2SRConfig
from .restore import RestoreSettings, count_tiles, restore_array

__all__ = [
    "DEFAULT_MODEL",
    "AstroSwin2SR",
    "AstroSwin2SRConfig",
    "EngineError",
    "RestoreSettings",
    "bundled_models",
    "count_tiles",
    "load_model",
    "restore_array",
]
