"""ONNX export of a ``save_pretrained`` model folder (opset 17, dynamic height and width).

The exported graph takes and returns ``(B, 3, H, W)`` float32 in the engine's stretched space,
exactly like :class:`astroswin.engine.model.AstroSwin2SR`; normalisation and tiling stay in the
caller. The export is checked against PyTorch on two tiles (one size off the window's multiple) and
the max difference is returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: Traced with a size that is not a multiple of the window, so the graph holds the padding to
#: it (reflect, the engine's mode for tiles); checked on these ``(H, W)``: one multiple of 8
#: and one not, both unlike the traced size.
TRACE_SIZE = (67, 61)
CHECK_SIZES = ((80, 64), (70, 50))


def export_onnx(model_dir: str | Path, onnx_path: str | Path) -> float:
    """Export and verify; returns ``max |onnx - torch|`` over random tiles of
    :data:`CHECK_SIZES`.

    The graph takes any height and width of at least the window size (8 px; its reflect
    padding needs the pad smaller than the image). Needs the ``onnx`` extra
    (``pip install "astroswin[onnx]"``: onnx, onnxscript, onnxruntime).
    """
    from astroswin.engine.model import AstroSwin2SR

    model = AstroSwin2SR.from_pretrained(model_dir).eval()
    example = torch.rand(1, 3, *TRACE_SIZE)
    onnx_path = Path(onnx_path)
    # The TorchScript exporter writes opset 17 directly (the dynamo exporter emits 18 and cannot
    # down-convert its Pad nodes).
    torch.onnx.export(
        model,
        (example,),
        str(onnx_path),
        input_names=["pixel_values"],
        output_names=["restored"],
        opset_version=17,
        dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "restored": {0: "batch", 2: "height", 3: "width"}},
        dynamo=False,
    )
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in CHECK_SIZES:
        check = torch.rand(1, 3, *size)
        with torch.inference_mode():
            expected = model(check).numpy()
        got = session.run(None, {"pixel_values": check.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
