"""Model loading, all offline-safe: bundled weights, a local folder, or a Hugging Face hub id.

``load_model(spec)`` resolves, in order:

1. a bundled name (``small``; the folders under ``engine/weights/``), the default;
2. a local folder in ``save_pretrained`` format -- this project's (``model_type``
   ``astroswin2sr``) or the original AstroSWIN checkpoint layout (a Swin2SR config with
   ``swin2sr.*`` and ``resample.*`` weights, loaded with ``residual=False``);
3. a hub id such as ``caidas/swin2SR-lightweight-x2-64``, whose Swin2SR body initialises a
   model with a fresh (identity) head -- a starting point for training, not a restorer.

Every failure is an :class:`~astroswin.engine.errors.EngineError` with one line naming the spec.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import torch

from .errors import EngineError
from .model import AstroSwin2SR, AstroSwin2SRConfig

DEFAULT_MODEL = "small"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def bundled_dir(name: str) -> Path:
    """Folder of the bundled weights called ``name`` (it may not exist yet)."""
    return WEIGHTS_DIR / name


def bundled_models() -> list[str]:
    """Names of the bundled weight sets that are actually present."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise EngineError(f"model folder {folder} has no model.safetensors or pytorch_model.bin")


def load_original_layout(folder: Path, config: dict) -> AstroSwin2SR:
    """Load the original AstroSWIN checkpoint (a Swin2SR config, ``swin2sr.*`` / ``resample.*``)."""
    keys = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version", "upscale", "upsampler")}
    model = AstroSwin2SR(AstroSwin2SRConfig(residual=False, **keys))
    state = _read_state_dict(folder)
    state = {k: v for k, v in state.items() if k.startswith(("swin2sr.", "resample."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(".mean")]
    if missing:
        raise EngineError(f"model folder {folder} lacks {len(missing)} weights of the AstroSWIN layout (e.g. {missing[0]})")
    return model


def load_folder(folder: Path) -> AstroSwin2SR:
    """Load a ``save_pretrained`` folder (this project's layout or the original AstroSWIN's)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EngineError(f"model folder {folder} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"model folder {folder}: unreadable config.json ({exc})") from None
    try:
        if config.get("model_type") == AstroSwin2SRConfig.model_type:
            return AstroSwin2SR.from_pretrained(folder)
        if config.get("model_type") == "swin2sr":
            return load_original_layout(folder, config)
    except EngineError:
        raise
    except Exception as exc:  # corrupt weights, shape mismatch: one line, not a traceback
        raise EngineError(f"model folder {folder} could not be loaded: {str(exc).splitlines()[0]}") from None
    raise EngineError(f"model folder {folder}: unknown model_type {config.get('model_type')!r}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's endpoint (``HF_ENDPOINT``) accepts a TCP connection within ``timeout`` s.

    Offline, the hub client retries each request with back-off (a minute and a half measured on
    a machine without DNS) before it fails; one short probe makes that a few seconds.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub_body(hub_id: str) -> AstroSwin2SR:
    """Initialise the body from a hub Swin2SR checkpoint (needs network or a warm HF cache)."""
    from transformers import Swin2SRModel

    offline = not hub_reachable()  # then only the local cache is tried
    try:
        body = Swin2SRModel.from_pretrained(hub_id, local_files_only=offline)
    except OSError as exc:
        text = str(exc)
        if offline or "connect" in text.lower() or "offline" in text.lower() or "resolve" in text.lower() or "internet" in text.lower():
            raise EngineError(f"cannot load model '{hub_id}': the Hugging Face hub is unreachable (offline?); use a bundled model ({', '.join(bundled_models()) or 'none installed'}) or a local folder") from None
        raise EngineError(f"cannot load model '{hub_id}' from the Hugging Face hub: {text.splitlines()[0]}") from None
    config = AstroSwin2SRConfig(**{k: v for k, v in body.config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version", "upscale", "upsampler")})
    model = AstroSwin2SR(config)
    model.swin2sr.load_state_dict(body.state_dict())
    return model


def load_model(spec: str | Path = DEFAULT_MODEL) -> AstroSwin2SR:
    """Load a model for inference (eval mode, CPU).

    Parameters
    ----------
    spec : str or Path
        A bundled name, a local folder, or a hub id (see the module docstring).

    Raises
    ------
    EngineError
        Unknown name, unreadable folder, or an unreachable hub -- one line naming ``spec``.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in host logs
    hf_logging.set_verbosity_error()
    text = str(spec)
    if text in bundled_models():
        return load_folder(bundled_dir(text)).eval()
    path = Path(text).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # e.g. a name too long for the file system
        is_dir = exists = False
    if is_dir:
        return load_folder(path).eval()
    if exists:
        raise EngineError(f"model '{text}' is a file; give the folder that holds config.json and model.safetensors")
    if text == DEFAULT_MODEL or bundled_dir(text).exists():
        raise EngineError(f"the bundled model '{text}' is missing from this installation; reinstall astroswin")
    if _HUB_ID.match(text):
        return load_hub_body(text).eval()
    raise EngineError(f"unknown model '{text}': not a bundled name ({', '.join(bundled_models()) or 'none installed'}), a folder, or a hub id (owner/name)")
