"""
AstroSWIN for Siril
===================

Name:    AstroSWIN
Version: 0.1.0
SPDX-License-Identifier: MIT
Author:  the AstroSWIN contributors

Learned deconvolution and denoising of the linear image loaded in Siril (a Swin2SR network,
run tile by tile). The image is replaced in place, keeping its bit depth and layout (mono or
RGB, 16-bit or 32-bit float), as one undoable step in the GUI.

Usage
-----
* GUI: Scripts menu > AstroSWIN; a small dialog asks for strength, model, device and tile
  size, and remembers them for the next run.
* Headless / Siril command line::

      pyscript AstroSWIN.py -strength=0.8 -model=small -device=cpu -tile=256

  No argument means the defaults (strength 1.0, model small, device auto, tile auto);
  ``-help`` lists every option. The exit status is 0 on success and non-zero on failure.

Requirements: Siril >= 1.4.0 (sirilpy >= 1.0.8). On the first run the ``astroswin`` package
is installed into Siril's Python environment (PyTorch through sirilpy's TorchHelper); the
environment variable ASTROSWIN_PIP_SPEC overrides what is installed (a version such as
``astroswin>=0.1``, a wheel, a folder or a git URL).

This file is only a shim: the logic lives in the tested module ``astroswin.plugin.siril``.
"""

import importlib
import importlib.util
import os
import re
import subprocess
import sys

import sirilpy as s

if not s.check_module_version(">=1.0.8"):
    print("AstroSWIN: this script needs sirilpy >= 1.0.8 (Siril >= 1.4.0); please update Siril.")
    sys.exit(1)

#: What pip installs when astroswin is missing.
PIP_SPEC = os.environ.get("ASTROSWIN_PIP_SPEC", "").strip() or "astroswin"
_PLAIN_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!~]=?|===)\s*[^;@\s][^;@]*)?\s*$")


def _report(message):
    """Print (Siril shows a script's output in its log) and, if possible, log it in red."""
    print(message)
    try:
        siril = s.SirilInterface()
        siril.connect()
        siril.log(message[:1000], s.LogColor.RED)
        if not siril.is_cli():
            siril.error_messagebox(message[:1000])
    except Exception:  # noqa: BLE001 - printing it is enough
        pass


def _install(spec):
    """Install ``spec`` into this (Siril's) Python; raises on failure."""
    if importlib.util.find_spec("torch") is None and hasattr(s, "TorchHelper"):
        # a PyTorch build that suits this machine (CUDA/ROCm/MPS/CPU), before pip pulls a generic one
        s.TorchHelper().install_torch()
    match = _PLAIN_REQUIREMENT.match(spec)
    if match:
        name, constraint = match.group(1), (match.group(2) or "").replace(" ", "") or None
        if constraint:
            s.ensure_installed(name, version_constraints=constraint)
        else:
            s.ensure_installed(name)
    else:  # a wheel, a folder or a URL: ensure_installed takes names only
        subprocess.run([sys.executable, "-m", "pip", "install", spec], check=True)


def _load_plugin():
    try:
        return importlib.import_module("astroswin.plugin.siril")
    except ImportError as first:
        print(f"AstroSWIN: the astroswin package is missing ({first}); installing '{PIP_SPEC}'...")
        try:
            _install(PIP_SPEC)
            importlib.invalidate_caches()
            return importlib.import_module("astroswin.plugin.siril")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - explain how to do it by hand
            _report(f"AstroSWIN: could not install or import astroswin ({type(exc).__name__}: {exc}). "
                    f"Install it into Siril's Python by hand: \"{sys.executable}\" -m pip install \"{PIP_SPEC}\" "
                    "then run this script again (ASTROSWIN_PIP_SPEC chooses what is installed).")
            return None


plugin = _load_plugin()
if plugin is None:
    sys.exit(1)
sys.exit(plugin.main(sys.argv[1:]))
