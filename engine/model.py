"""The AstroSwin2SR model: a Swin2SR body with a same-size head and a global residual.

One file defines the model, in the style of ``transformers``' model files: a config object
carries every hyperparameter, and ``from_pretrained`` / ``save_pretrained`` round-trip exactly.

The body is ``transformers.Swin2SRModel``. The original AstroSWIN discarded Swin2SR's x2
upsampler and put a 3x3 convolution (``resample``) on the last hidden state; this keeps that
layout (so the original checkpoint's ``swin2sr.*`` / ``resample.*`` keys load unchanged) and
adds a global residual: the head predicts a *correction* that is added to the input. A
zero-initialised head therefore starts as the identity, which trains faster and keeps flux.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel, Swin2SRConfig, Swin2SRModel

#: Named body configurations. ``lightweight`` is the original AstroSWIN body
#: (``caidas/swin2SR-lightweight-x2-64``); ``small`` is the CPU default (see the README's
#: speed table for its measured throughput).
NAMED_CONFIGS: dict[str, dict] = {
    "lightweight": dict(embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=8, mlp_ratio=2.0),
    "small": dict(embed_dim=32, depths=[2, 2, 2], num_heads=[4, 4, 4], window_size=8, mlp_ratio=2.0),
    "tiny": dict(embed_dim=8, depths=[1], num_heads=[2], window_size=8, mlp_ratio=1.0),
}


class AstroSwin2SRConfig(Swin2SRConfig):
    """Configuration of :class:`AstroSwin2SR`.

    Every Swin2SR hyperparameter is accepted; the ones below are added or fixed.

    Parameters
    ----------
    residual : bool
        Add the input to the head's output (output = input + correction). The original
        AstroSWIN had no residual; its checkpoints load with ``residual=False``.
    **kwargs
        Passed to :class:`transformers.Swin2SRConfig` (``embed_dim``, ``depths``, ...).
        ``upscale`` is forced to 1 and ``upsampler`` to ``""``: the output has the input's size.
    """

    model_type = "astroswin2sr"

    def __init__(self, residual: bool = True, **kwargs):
        kwargs.setdefault("img_range", 1.0)
        kwargs.setdefault("resi_connection", "1conv")
        kwargs["upscale"] = 1
        kwargs["upsampler"] = ""
        super().__init__(**kwargs)
        self.residual = residual

    @classmethod
    def named(cls, name: str, **overrides) -> AstroSwin2SRConfig:
        """Build one of :data:`NAMED_CONFIGS` (``lightweight``, ``small``, ``tiny``)."""
        if name not in NAMED_CONFIGS:
            raise ValueError(f"unknown model config {name!r}; choose one of {sorted(NAMED_CONFIGS)}")
        return cls(**{**NAMED_CONFIGS[name], **overrides})


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` on the bottom/right up to a multiple of ``multiple``.

    Reflect padding where the image is large enough, replicate otherwise (reflect needs the pad
    to be smaller than the size), so a 1x1 or 7x3 input works too. A zero pad is still a pad
    (no early return): a traced graph (ONNX export) then pads whatever size it is given.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return nn.functional.pad(x, (0, pw, 0, ph), mode=mode)


class AstroSwin2SR(PreTrainedModel):
    """Same-size restoration network: ``(B, C, H, W) -> (B, C, H, W)``.

    Input and output are in the engine's stretched space (see
    :mod:`astroswin.engine.normalize`); any H and W work (padding to the window size is
    internal and cropped away).
    """

    config_class = AstroSwin2SRConfig
    base_model_prefix = "swin2sr"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: AstroSwin2SRConfig):
        super().__init__(config)
        self.swin2sr = Swin2SRModel(config)
        self.resample = nn.Conv2d(config.embed_dim, config.num_channels_out, 3, 1, 1)
        self.post_init()
        if config.residual:
            # Identity at initialisation: the network starts from "do no harm".
            nn.init.zeros_(self.resample.weight)
            nn.init.zeros_(self.resample.bias)

    def _init_weights(self, module):  # transformers hook; keep Swin2SR's own scheme
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Restore a batch.

        Parameters
        ----------
        pixel_values : torch.Tensor
            ``(B, num_channels, H, W)`` stretched images.

        Returns
        -------
        torch.Tensor
            ``(B, num_channels_out, H, W)``, same dtype.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"expected (B, {self.config.num_channels}, H, W) input, got {tuple(pixel_values.shape)}"
            )
        h, w = pixel_values.shape[-2:]
        padded = pad_to_multiple(pixel_values, self.config.window_size)
        hidden = self.swin2sr(padded, return_dict=False)[0]
        correction = self.resample(hidden)[..., :h, :w]
        if self.config.residual:
            return pixel_values + correction
        return correction
