"""GPU checks for a lent accelerator: fp16/bf16 inference against fp32, and throughput.

    python scripts/gpu_checks.py --model FOLDER_OR_NAME --out OUT/gpu_checks.json

For each precision: the max and mean absolute difference of the restored image from fp32 (in
the image's units and relative to its noise), and the PSNR of the difference; then megapixels
per second of restore_array on a 4096x4096 RGB image for several tile / batch sizes, and the
same call with an identity network, with and without the emission step: what the pipeline
around the network costs (on 2026-11-28 a 2048 px image ran at 2 MP/s, from 5 MP/s the day
before the emission step and the flux anchor came in).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from astroswin.engine import RestoreSettings, load_model, restore_array
from astroswin.engine.normalize import estimate_stretch


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(500.0, 10.0, (3, size, size)).astype(np.float32)
    ys, xs = rng.integers(8, size - 8, (2, size * size // 2000))
    img[:, ys, xs] += rng.uniform(100, 5e4, ys.size).astype(np.float32)
    return img


class Identity(torch.nn.Module):
    """The network's place in the pipeline, doing nothing: times everything around it."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@click.command()
@click.option("--model", "model_name", default="small")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--size", default=4096, show_default=True)
@click.option("--compile/--no-compile", "with_compile", default=True, show_default=True, help="Also time one torch.compile run (its first compilation takes a minute).")
def main(model_name: str, out: Path, size: int, with_compile: bool) -> None:
    if not torch.cuda.is_available():
        raise click.ClickException("no CUDA device")
    model = load_model(model_name)
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "precision": {}, "throughput": [], "without_network": []}
    check = synthetic_image(1024)
    noise = estimate_stretch(check).noise
    ref = restore_array(check, model, RestoreSettings(device="cuda", precision="fp32", compile="off"))
    crop = check[:, :384, :384]  # the CUDA path (image kept on the GPU) against the CPU path
    same = dict(tile=128, overlap=16, compile="off")  # the same tiling on both devices
    cpu = restore_array(crop, model, RestoreSettings(device="cpu", **same))
    cuda = restore_array(crop, model, RestoreSettings(device="cuda", precision="fp32", **same))
    report["cuda_fp32_vs_cpu_max_abs_over_noise"] = float(np.abs(cuda - cpu).max() / noise)
    for precision in ("bf16", "fp16"):
        got = restore_array(check, model, RestoreSettings(device="cuda", precision=precision, compile="off"))
        diff = np.abs(got - ref)
        span = float(ref.max() - ref.min())
        report["precision"][precision] = {
            "max_abs": float(diff.max()),
            "mean_abs": float(diff.mean()),
            "mean_abs_over_noise": float(diff.mean() / noise),
            "psnr_vs_fp32_db": float(10 * np.log10(span**2 / max(float((diff**2).mean()), 1e-20))),
        }
    out.write_text(json.dumps(report, indent=1))
    image = synthetic_image(size)
    # Eager first (every precision and tiling), then one compiled run: each compilation costs
    # a minute of a lent GPU's short budget. The report is rewritten after every measurement,
    # so a run stopped at its time limit still brings back what it measured.
    sweep = [(p, t, b, "off") for p in ("fp32", "bf16", "fp16") for t, b in ((256, 16), (512, 8), (512, 16))]
    for precision, tile, batch, compile_ in sweep + [("fp16", 512, 16, "on")] * with_compile:
        settings = RestoreSettings(device="cuda", precision=precision, tile=tile, overlap=32, batch_size=batch, compile=compile_)
        restore_array(image, model, settings)  # warm-up (and compilation) with the timed shapes
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        restore_array(image, model, settings)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        report["throughput"].append({"precision": precision, "tile": tile, "batch": batch, "compile": compile_, "mp_per_s": size * size / seconds / 1e6, "seconds": seconds, "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9})
        click.echo(json.dumps(report["throughput"][-1]))
        out.write_text(json.dumps(report, indent=1))
    for emission_scale in (RestoreSettings.emission_scale, 0):
        settings = RestoreSettings(device="cuda", precision="fp32", tile=512, overlap=32, batch_size=16, compile="off", emission_scale=emission_scale)
        start = time.perf_counter()
        restore_array(image, Identity(model.config), settings)
        torch.cuda.synchronize()
        report["without_network"].append({"emission_scale": emission_scale, "seconds": time.perf_counter() - start})
        click.echo(json.dumps(report["without_network"][-1]))
        out.write_text(json.dumps(report, indent=1))
    click.echo(json.dumps(report["precision"], indent=1))


if __name__ == "__main__":
    main()
