"""``astroswin train`` and ``astroswin export``: one click function per command."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder (checkpoint last.pt, train.csv, val.csv, val_grid.png). Default: runs/<config name>.")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/last.pt (model, EMA, optimiser, step, RNG).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the config's optim.steps.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--init", default=None, help="Override the config's init (checkpoint .pt, model folder or hub id).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override one config value (TOML syntax), e.g. --set data.batch_size=64 or --set loss.weights.flux=1.0; naming a table replaces it whole: --set 'data.kinds={stars=1.0}'.")
def train_command(config: Path, out: Path | None, resume: bool, steps: int | None, threads: int | None, init: str | None, settings: tuple[str, ...]) -> None:
    """Train one curriculum stage from a TOML CONFIG (see train/configs/).

    Checkpoints OUT/last.pt every few steps and on SIGTERM/Ctrl-C; run again with --resume to
    continue. Under torchrun / accelerate launch it trains with DDP.
    """
    from .config import load_config, tomllib
    from .loop import Trainer

    overrides: dict = {}
    for item in settings:
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = value  # a bare string
    # The dedicated flags win over --set, even over a --set that replaces their whole table.
    if steps:
        overrides["optim.steps"] = steps
    if threads:
        overrides["optim.threads"] = threads
    if init is not None:
        overrides["init"] = init
    try:
        cfg = load_config(config, overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out = out or Path("runs") / cfg.name
    try:  # what the config asks of its init model (stages to add, weights to train) is checked here
        trainer = Trainer(cfg, out, resume=resume)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        trainer.run()
    except KeyboardInterrupt:  # a second Ctrl-C: the last periodic checkpoint stands
        click.echo(f"stopped; {out / 'last.pt'} holds the last checkpointed step", err=True)
        raise SystemExit(130) from None
    click.echo(f"checkpoint: {out / 'last.pt'}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for model.safetensors + config.json. Default: the package's bundled weights folder for --name (what the engine loads by default).")
@click.option("--name", default="small", show_default=True, help="Bundled weights name when --out is not given.")
@click.option("--overwrite", is_flag=True, help="Replace weights already in the folder (the bundled ones included); without it an existing model.safetensors is an error.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also export ONNX (opset 17, dynamic H and W of at least 8 px) here, checked against PyTorch.")
def export_command(checkpoint: Path, out: Path | None, name: str, overwrite: bool, onnx_path: Path | None) -> None:
    """Export a training CHECKPOINT's EMA weights as safetensors (+ optional ONNX)."""
    from astroswin.engine.loading import bundled_dir

    from .loop import export_pretrained

    out = out or bundled_dir(name)
    if (out / "model.safetensors").exists() and not overwrite:
        raise click.ClickException(f"{out} already holds weights: pass --overwrite to replace them, or choose --out")
    try:
        export_pretrained(checkpoint, out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"weights: {out}")
    if onnx_path:
        from .export import CHECK_SIZES, export_onnx

        diff = export_onnx(out, onnx_path)
        sizes = " and ".join(f"{h}x{w}" for h, w in CHECK_SIZES)
        click.echo(f"onnx: {onnx_path} (max |onnx - torch| on {sizes} tiles: {diff:.2e})")
