"""Average two model folders tensor by tensor: ``(1 - f) * A + f * B``.

Why: a fine-tune on a batch of 8 moves every weight a little away from what a larger run
learned. Averaging the two keeps part of each (`docs/star-emission-split.md`: 0.3 of
`emission.toml`'s run with 0.7 of the shipped weights meets the flux target on every
benchmark row at no more than 0.04 dB). Both folders must hold the same architecture
(``config.json`` alike, every tensor the same shape); the result is written with
``save_pretrained``, so the engine loads it like any model folder.

    python scripts/average_weights.py engine/weights/small runs/emission-model --fraction 0.3 --out DIR
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from astroswin.engine.loading import load_folder


def average(a: torch.nn.Module, b: torch.nn.Module, fraction: float) -> torch.nn.Module:
    """``a`` with each floating-point tensor replaced by ``(1 - fraction) a + fraction b``
    (in float64, cast back); other tensors (integer buffers) must be equal and are kept."""
    if a.config.to_diff_dict() | {"_name_or_path": ""} != b.config.to_diff_dict() | {"_name_or_path": ""}:  # where each came from is no difference
        raise click.ClickException("the two models have different configs; only one architecture can be averaged")
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise click.ClickException("the two models' tensors differ in names or shapes")
    mixed = {}
    for name, ta in sa.items():
        tb = sb[name]
        if ta.is_floating_point():
            mixed[name] = ((1 - fraction) * ta.double() + fraction * tb.double()).to(ta.dtype)
        elif torch.equal(ta, tb):
            mixed[name] = ta
        else:
            raise click.ClickException(f"non-float tensor {name} differs between the models")
    a.load_state_dict(mixed)
    return a


@click.command()
@click.argument("first", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fraction", type=click.FloatRange(0.0, 1.0), required=True, help="Share of SECOND in the average (0: FIRST as it is).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="New folder for model.safetensors + config.json.")
def main(first: Path, second: Path, fraction: float, out: Path) -> None:
    if (out / "model.safetensors").exists():
        raise click.ClickException(f"{out} already holds a model; choose a new folder")
    model = average(load_folder(first), load_folder(second), fraction)
    model.save_pretrained(out, safe_serialization=True)
    click.echo(f"weights: {out} ({1 - fraction:g} x {first} + {fraction:g} x {second})")


if __name__ == "__main__":
    main()
