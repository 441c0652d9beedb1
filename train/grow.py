"""Deepen a trained model by whole stages that start as the identity.

A capacity test from scratch costs the whole curriculum again; on a CPU that is days. Growing
the shipped model instead keeps everything it has learnt: the added Swin2SR stages (residual
Swin transformer blocks, each ending in a 3x3 convolution added back to its input) get that
closing convolution zeroed (the last of a ``3conv`` stage's three), so each new stage passes its input through unchanged and the grown
model's output equals the original's to float rounding. Training then moves the convolution
off zero first, and the new blocks' attention and MLP learn through it.

Only stages can be added: a wider embedding or a deeper existing stage would change what the
trained weights compute. Training does change one thing for the trained blocks: Swin2SR spreads
its stochastic depth (``drop_path_rate``, 0.1) linearly over all blocks, so with more blocks the
trained ones are dropped a little less often while training; inference has no drop path.
"""

from __future__ import annotations

import torch
from torch import nn

from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

#: Overrides a grown model may name; any other must equal the trained model's value.
GROWABLE = ("depths", "num_heads")


def add_stages(model: AstroSwin2SR, **overrides) -> AstroSwin2SR:
    """``model`` with more Swin2SR stages after its own, computing the same function.

    Parameters
    ----------
    model : AstroSwin2SR
        The trained model; left unchanged.
    **overrides
        Config values of the grown model: ``depths`` and ``num_heads`` must start with the
        trained model's lists and may go on; every other key must equal the trained value.

    Returns
    -------
    AstroSwin2SR
        ``model`` itself when the overrides describe it already (a resumed run's checkpoint),
        else a new model with the trained stages copied and the new stages' closing
        convolution zeroed.

    Raises
    ------
    ValueError
        When an override would change a trained stage or any other setting.
    """
    config = model.config
    for key, value in overrides.items():
        old = getattr(config, key, None)
        if key in GROWABLE:
            value, old = list(value), list(old)
            if value[: len(old)] != old:
                raise ValueError(f"model_overrides.{key} = {value}: a trained model can only gain stages after its own {old}")
        elif value != old:
            raise ValueError(f"model_overrides.{key} = {value!r}: the init model has {old!r}, and only {' and '.join(GROWABLE)} can grow")
    depths = list(overrides.get("depths", config.depths))
    heads = list(overrides.get("num_heads", config.num_heads))
    if len(depths) != len(heads):
        raise ValueError(f"model_overrides: {len(depths)} depths but {len(heads)} num_heads")
    if depths == list(config.depths):
        return model
    grown = AstroSwin2SR(AstroSwin2SRConfig.from_dict({**config.to_dict(), "depths": depths, "num_heads": heads}))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    new_stages = [f"swin2sr.encoder.stages.{i}." for i in range(len(config.depths), len(depths))]
    if unexpected or any(not key.startswith(tuple(new_stages)) for key in missing):
        raise ValueError(f"cannot grow this model: unmatched weights {sorted(unexpected) or sorted(missing)[:3]}")
    for i in range(len(config.depths), len(depths)):
        # The last convolution only: zeroing a "3conv" stage's first two would leave no
        # gradient for any of them.
        closing = [m for m in grown.swin2sr.encoder.stages[i].conv.modules() if isinstance(m, nn.Conv2d)][-1]
        with torch.no_grad():
            closing.weight.zero_()
            closing.bias.zero_()
    return grown
