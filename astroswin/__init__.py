"""AstroSWIN: learned deconvolution and denoising of linear astronomical images.

Sub-packages: :mod:`astroswin.engine` (I/O, normalisation, tiling, inference, model loading),
:mod:`astroswin.train` (synthetic data, degradations, losses, curriculum, export) and
:mod:`astroswin.plugin` (Siril and PixInsight bridges).
"""

__version__ = "0.1.0"
