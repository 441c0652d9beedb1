"""Average model folders tensor by tensor: ``sum_i w_i * model_i``, the weights summing to 1.

Why: a fine-tune on a batch of 8 moves every weight a little away from what a larger run
learned, and each fine-tune of one checkpoint trades one benchmark row against another.
Averaging fine-tunes of the same checkpoint keeps most of what each gains and little of what
each loses (`MODEL_CARD.md`, *What ships*: the bundled weights are such an average). Every
folder must hold the same architecture (``config.json`` alike, every tensor the same shape);
the result is written with ``save_pretrained``, so the engine loads it like any model folder.

    python scripts/average_weights.py --part FOLDER_A 0.7 --part FOLDER_B 0.3 --out DIR

The bundled weights' recipe is in the README (*Training*) and in ``RECIPES`` of
``tests/test_average_weights.py``, which rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from astroswin.engine.errors import EngineError
from astroswin.engine.loading import load_folder


def average(models: list[torch.nn.Module], weights: list[float]) -> torch.nn.Module:
    """The first model with each floating-point tensor replaced by ``sum_i weights[i] * models[i]``
    (in float64, cast back); other tensors (integer buffers) must be equal in all and are kept."""
    first = models[0]
    where_from = {"_name_or_path": ""}  # where each was loaded from is no difference
    if any(m.config.to_diff_dict() | where_from != first.config.to_diff_dict() | where_from for m in models[1:]):
        raise click.ClickException("the models have different configs; only one architecture can be averaged")
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() or any(s[k].shape != states[0][k].shape for k in s) for s in states[1:]):
        raise click.ClickException("the models' tensors differ in names or shapes")
    mixed = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            mixed[name] = sum(w * s[name].double() for w, s in zip(weights, states)).to(tensor.dtype)
        elif all(torch.equal(tensor, s[name]) for s in states[1:]):
            mixed[name] = tensor
        else:
            raise click.ClickException(f"non-float tensor {name} differs between the models")
    first.load_state_dict(mixed)
    return first


@click.command()
@click.option(
    "--part",
    "parts",
    type=(click.Path(exists=True, file_okay=False, path_type=Path), click.FloatRange(0.0, 1.0, min_open=True)),
    multiple=True,
    required=True,
    help="A model folder and its share of the average (repeat; at least two, shares summing to 1).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="New folder for model.safetensors + config.json.")
def main(parts: tuple[tuple[Path, float], ...], out: Path) -> None:
    if len(parts) < 2:
        raise click.ClickException("give at least two --part FOLDER SHARE")
    weights = [share for _, share in parts]
    if abs(sum(weights) - 1.0) > 1e-9:
        raise click.ClickException(f"the shares sum to {sum(weights):g}, not 1")
    if (out / "model.safetensors").exists():
        raise click.ClickException(f"{out} already holds a model; choose a new folder")
    try:
        models = [load_folder(folder) for folder, _ in parts]
    except EngineError as exc:  # one line, as the CLI says it, not a traceback
        raise click.ClickException(str(exc)) from None
    model = average(models, weights)
    model.save_pretrained(out, safe_serialization=True)
    click.echo(f"weights: {out} (" + " + ".join(f"{share:g} x {folder}" for folder, share in parts) + ")")


if __name__ == "__main__":
    main()
