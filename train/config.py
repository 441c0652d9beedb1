"""One config object per training stage, read from a TOML file in ``train/configs/``.

A stage is reproduced by one command (``astroswin train train/configs/stage0.toml``): the file
holds the seed, model, data, degradations, loss weights, optimiser and schedule. Unknown keys
are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .degrade import DegradeConfig
from .scenes import NEBULA_LEVEL_LOG10

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


#: The kinds of target a stage can train towards (:attr:`DataConfig.target`).
TARGETS = ("restored", "starless")
#: :attr:`OptimConfig.precision` values (autocast; ``auto`` = bf16 on CUDA if supported).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Seeds are 0..9: training seeds are ``seed * 10**8 + n``, below the validation scenes' 10**9
#: (:data:`astroswin.train.data.VALIDATION_SEED_BASE`).
MAX_SEED = 10


@dataclass
class DataConfig:
    """Synthetic (or folder) training data. Sizes are pixels."""

    crop: int = 64
    margin: int = 32
    batch_size: int = 8
    workers: int = 0
    mono_fraction: float = 0.3
    brightness_log10: tuple[float, float] = (0.0, 1.5)  # scene flux multiplier, log-uniform
    nebula_level_log10: tuple[float, float] = NEBULA_LEVEL_LOG10  # how bright nebulae are under their stars
    kinds: dict = field(default_factory=lambda: {"stars": 1.0, "galaxy": 1.0, "nebula": 1.0})
    folder: str = ""  # a make_patches.py output folder; "" = synthetic scenes only
    folder_fraction: float = 0.0
    #: What the network learns to output: ``restored`` (the scene through the narrow target
    #: PSF) or ``starless`` (the blurred scene without its stars: a star remover; synthetic
    #: scenes only, folder patches have no star layer).
    target: str = "restored"
    #: Window (px) of the engine's running median taken out of input and target before the
    #: stretch (:func:`astroswin.train.data.without_emission`); 0 = the image as it is.
    emission_scale: int = 0
    #: Random downsampling of the user's big images (folder patches), so the network sees their
    #: structure at several scales: with this probability a patch is binned by an integer
    #: factor from 2 to ``downsample_max`` (block means: flux per area kept; never below the
    #: crop) before it is degraded. Synthetic scenes are drawn at every scale already.
    downsample_probability: float = 0.0
    downsample_max: int = 2
    #: Shuffle the colour channels of input and target alike, so the network learns no
    #: channel's own behaviour: a white star must come back white (the shipped weights return
    #: one 5-15% off between channels, tests of 2026-11-27). Off: the stream as before.
    channel_permutation: bool = False
    #: Probability that a scene gets a satellite trail (:func:`astroswin.train.scenes.satellite_trail`)
    #: in input and target alike, so the network keeps a trail's light rather than taking it
    #: out like a cosmic ray. 0 draws nothing (earlier configs' examples stay as they were).
    trail_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"data.target: {self.target!r} is not one of {TARGETS}")
        if self.target == "starless" and self.folder_fraction > 0:
            raise ValueError("data.target 'starless' needs each scene's star layer, which only synthetic scenes have: set data.folder_fraction to 0")
        if not 0 <= self.downsample_probability <= 1 or self.downsample_max < 2:
            raise ValueError(f"data.downsample_probability must be in [0, 1] and data.downsample_max >= 2, got {self.downsample_probability} and {self.downsample_max}")
        if not 0 <= self.trail_probability <= 1:
            raise ValueError(f"data.trail_probability must be in [0, 1], got {self.trail_probability}")
        if self.downsample_probability > 0 and self.folder_fraction == 0:
            raise ValueError("data.downsample_probability applies to folder patches (the user's big images); with data.folder_fraction 0 it would do nothing")


@dataclass
class LossConfig:
    """Weights of the terms of :mod:`astroswin.train.losses`, and keyword params per term."""

    weights: dict = field(default_factory=lambda: {"l1": 1.0, "mse": 1.0, "flux": 0.5})
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every term and keyword must exist: a misspelt one would silently train with the
        default (checked here, before the model and validation set are built)."""
        from .losses import LOSSES

        for table in ("weights", "params"):
            unknown = set(getattr(self, table)) - set(LOSSES)
            if unknown:
                raise ValueError(f"loss.{table}: unknown loss(es) {sorted(unknown)}; known: {sorted(LOSSES)}")
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"loss.weights.{name}: expected a number, got {weight!r}")
        for name, keywords in self.params.items():
            if not isinstance(keywords, dict):
                raise ValueError(f"loss.params.{name}: expected a table of keywords, got {keywords!r}")
            accepted = list(inspect.signature(LOSSES[name]).parameters)[2:]  # after (p, t)
            unknown = set(keywords) - set(accepted)
            if unknown:
                raise ValueError(f"loss.params.{name}: unknown keyword(s) {sorted(unknown)}; {name} takes {accepted}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay; ``ema`` is the weight-EMA decay (0 = off)."""

    lr: float = 2e-4
    min_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    warmup: int = 100
    steps: int = 2000
    accumulation: int = 1
    grad_clip: float = 1.0
    ema: float = 0.999
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast; auto = bf16 on CUDA if supported)
    gradient_checkpointing: bool = False
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    trainable: list = field(default_factory=list)  # parameter-name prefixes to train; empty = all, else the rest stay as initialised

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"optim.precision: {self.precision!r} is not one of {PRECISIONS}")


@dataclass
class LogConfig:
    """How often to log, validate and checkpoint (in optimiser steps)."""

    every: int = 25
    val_every: int = 250
    checkpoint_every: int = 100
    val_scenes: int = 12
    val_size: int = 96


@dataclass
class TrainConfig:
    """A whole stage.

    ``model`` names an engine config (``small``, ``lightweight``, ``tiny``) used when ``init`` is
    empty; ``init`` starts from a previous stage's ``last.pt``, a ``save_pretrained`` folder or
    a hub id (body only). ``model_overrides`` change the named config, or, with ``init``, add
    stages that start as the identity (``depths`` and ``num_heads`` longer than the init's).
    """

    name: str = "stage"
    seed: int = 0
    model: str = "small"
    model_overrides: dict = field(default_factory=dict)
    init: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed: {self.seed} is outside 0..{MAX_SEED - 1} (training data seeds are seed x 1e8 + n, and validation scenes start at 1e9)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else fields[key].default
        if (dataclasses.is_dataclass(default) or isinstance(default, dict)) and not isinstance(value, dict):
            raise ValueError(f"{where}.{key}: expected a table, got {value!r}")
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        else:
            kwargs[key] = _typed(value, default, f"{where}.{key}")
    return cls(**kwargs)


def _typed(value: Any, default: Any, where: str) -> Any:
    """``value`` checked against its default's type: ``steps = 1e3`` (a float) or
    ``lr = "2e-4"`` (a string) is an error here, not a failure at the first step."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ValueError(f"{where}: expected {len(default)} values like {list(default)}, got {value!r}")
        return tuple(_typed(v, d, f"{where}[{i}]") for i, (v, d) in enumerate(zip(value, default)))
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from nested dicts (unknown keys raise ``ValueError``)."""
    return _build(TrainConfig, values, where)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML stage file, then apply ``overrides`` (CLI flags).

    ``overrides`` maps dotted keys to values: ``"loss.weights.flux": 1.0`` sets that one weight
    and keeps the others; ``"loss.weights": {"l1": 1.0}`` names the table, so it replaces it.
    """
    path = Path(path)
    with path.open("rb") as fh:
        values = tomllib.load(fh)
    defaults = TrainConfig().to_dict()
    for key, value in (overrides or {}).items():
        _assign(values, defaults, key, value)
    return from_dict(values, where=path.name)


def _assign(values: dict, defaults: dict, dotted: str, value: Any) -> None:
    """Set ``values[a][b][c] = value`` for ``dotted = "a.b.c"``.

    A table the file leaves out starts as a copy of its default, so ``data.kinds.stars=2``
    changes one weight of the default mix instead of making a mix of stars alone.
    """
    *parents, leaf = dotted.split(".")
    for part in parents:
        defaults = defaults.get(part) if isinstance(defaults, dict) else None
        if part not in values:
            values[part] = copy.deepcopy(defaults) if isinstance(defaults, dict) else {}
        values = values[part]
        if not isinstance(values, dict):
            raise ValueError(f"{dotted}: {part!r} is a value, not a table")
    values[leaf] = value
