"""The ``astroswin`` command line: one click function per command.

``restore`` is the batch tool; ``demo`` restores the bundled sample; ``train`` / ``export`` come
from :mod:`astroswin.train`, ``plugins`` from :mod:`astroswin.plugin`. Every expected failure is
one line on stderr (``astroswin: error: FILE: problem``) and a non-zero exit; bad usage too
(exit 2, :class:`OneLineUsageGroup`); ``--debug`` shows tracebacks of unexpected ones.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from astroswin import __version__

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
KNOWN_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".xisf", ".tif", ".tiff")  # .fz: fpack-compressed FITS
CANONICAL_SUFFIX = {"fits": ".fits", "xisf": ".xisf", "tiff": ".tif"}


def error(message: str) -> None:
    """One line on stderr, the only way the CLI reports a problem."""
    click.echo(f"astroswin: error: {message}", err=True)


def warning(message: str) -> None:
    """One line on stderr for a problem that does not stop the run."""
    click.echo(f"astroswin: warning: {message}", err=True)


class OneLineUsageError(click.UsageError):
    """A usage error shown as the CLI's one ``astroswin: error:`` line.

    click's own is four lines (Usage, Try, a blank line, Error); host plugins show the one line
    that starts ``astroswin: error:`` (PixInsight's script looks for it), and a user reads it first.
    """

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(line.strip() for line in self.format_message().splitlines() if line.strip()).rstrip(".")
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"astroswin: error: {message}{hint}", file=file, err=file is None)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    """Turn a click usage error raised inside into :class:`OneLineUsageError` (same message,
    context and exit status 2). Bare ``astroswin`` still prints the help: that "error" is one."""
    try:
        yield
    except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):
        raise
    except click.UsageError as exc:
        raise OneLineUsageError(exc.format_message(), exc.ctx) from exc


class OneLineUsageGroup(click.Group):
    """The ``astroswin`` group: usage errors of any subcommand (parsing its options, or raised
    by its code) are one line. Parsing happens in :meth:`make_context` (the group's own
    options) and :meth:`invoke` (the subcommand's, and its body); ``--help`` is untouched."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


def _is_candidate(path: Path, suffix: str) -> bool:
    """An image file a folder or a pattern stands for: a known extension, and not an earlier
    output (its stem ends with ``suffix``; with an empty suffix nothing is taken for one).
    Re-running ``restore "dir/*"`` once restored its own outputs again (``a_astroswin_astroswin``)."""
    name = _image_name(path)
    return path.is_file() and name.suffix.lower() in KNOWN_SUFFIXES and not (suffix and name.stem.endswith(suffix))


def _image_name(path: Path) -> Path:
    """The name without a gzip extension (``m31.fits.gz`` -> ``m31.fits``); ``.fz`` stays, an
    fpack'd FITS extension of its own."""
    return path.with_suffix("") if path.suffix.lower() == ".gz" else path


def expand_inputs(inputs: tuple[str, ...], suffix: str) -> tuple[list[Path], list[str]]:
    """Files as given; folders -> their image files (not earlier outputs); globs expanded.

    Returns the files and one message per input that yielded none.
    """
    files: list[Path] = []
    problems = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_candidate(p, suffix))
        elif not path.exists() and any(ch in item for ch in "*?["):
            found = sorted(p for p in map(Path, glob.glob(_literal_folder(item))) if _is_candidate(p, suffix))
        else:
            found = [path]
        if not found:
            problems.append(f"{item}: {'folder holds' if path.is_dir() else 'pattern matches'} no FITS, XISF or TIFF file")
        files.extend(found)
    return list(dict.fromkeys(files)), problems


def _literal_folder(pattern: str) -> str:
    """``pattern`` with its folder escaped when that folder exists as written: in
    ``"M42 [Ha]/*.fits"`` the brackets name a folder, not a character class."""
    folder, name = os.path.split(pattern)
    return os.path.join(glob.escape(folder), name) if folder and os.path.isdir(folder) else pattern


def output_path(source: Path, fmt: str, output: Path | None, output_dir: Path | None, suffix: str) -> Path:
    """``-o`` as given, else ``[DIR/]stem+suffix`` with the input's extension (if it matches its
    content) or the format's canonical one."""
    if output is not None:
        return output
    from astroswin.engine.io import FORMATS

    name = source.with_suffix("") if source.suffix.lower() in (".fz", ".gz") else source  # m31.fits.fz -> m31.fits (written uncompressed)
    ext = name.suffix if name.suffix.lower() in FORMATS[fmt] else CANONICAL_SUFFIX[fmt]
    return (output_dir or source.parent) / f"{name.stem}{suffix}{ext}"


class Progress:
    """Reports per-file progress as a tqdm bar (stderr, terminals only), JSON lines or nothing."""

    def __init__(self, mode: str):
        self.mode = mode if not (mode == "bar" and not sys.stderr.isatty()) else "none"
        self.bar = None

    def emit(self, **event) -> None:
        if self.mode == "json":
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    def start(self, source: Path, target: Path, shape: tuple[int, ...], tiles: int) -> None:
        h, w = shape[-2:]
        channels = shape[0] if len(shape) == 3 else 1
        self.emit(event="start", file=str(source), output=str(target), width=w, height=h, channels=channels, tiles=tiles)
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=tiles, desc=source.name, unit="tile", file=sys.stderr, leave=False)

    def update(self, source: Path, done: int, total: int) -> None:
        self.emit(event="progress", file=str(source), done=done, total=total, fraction=round(done / total, 4))
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def restore_file(source: Path, target: Path, model, model_name: str, settings, progress: Progress, overwrite: bool, dtype: str, warned: set[str]) -> float:
    """Read, restore and atomically write one file; returns the seconds it took.

    ``warned`` holds the run-wide warnings already shown (one line per run, not per file).
    """

    from astroswin.engine import count_tiles, restore_array
    from astroswin.engine.cfa import check_not_mosaic
    from astroswin.engine.device import resolve_device, resolve_precision
    from astroswin.engine.io import (
        check_output,
        clip_ceiling,
        clip_floor,
        output_format,
        read_image,
        unkept_keywords,
        write_image,
    )

    start = time.perf_counter()
    if target.resolve() == source.resolve():
        raise _FileError("output would replace the input; choose another name")
    check_output(target, overwrite=overwrite)  # folder, special file, unwritable, exists: before any work
    image = read_image(source)
    note = check_not_mosaic(image.data, *image.cfa) if image.cfa else None  # raises on a raw mosaic
    if note:
        warning(f"{source}: {note}")
    if image.alpha is not None and output_format(target, image)[0] != "tiff":
        warning(f"{source}: its {image.alpha.shape[0]} extra (alpha) channel(s) cannot go into {target}: only a TIFF output keeps them")
    if image.other_images:
        warning(f"{source}: holds {image.other_images + 1} images; only the first is restored, and {target} holds only it")
    progress.start(source, target, image.data.shape, count_tiles(*image.data.shape[-2:], settings))
    try:
        restored = restore_array(image.data, model, settings, progress=lambda d, t: progress.update(source, d, t))
    finally:
        progress.close()
    device = resolve_device(settings.device)
    history = [f"AstroSWIN {__version__}: model={model_name} strength={settings.strength:.2f} emission_scale={settings.emission_scale}", "AstroSWIN tile={} overlap={} precision={}".format(*settings.tiling(device), resolve_precision(settings.precision, device))]
    fmt, store = output_format(target, image, dtype=None if dtype == "auto" else dtype)
    write_image(target, restored, image, fmt=fmt, dtype=store, history=history, overwrite=overwrite)
    ceiling, floor = clip_ceiling(fmt, store, image), clip_floor(fmt, store, image)
    clipped = 0 if ceiling is None else _pixels_where(restored > ceiling)
    # below the floor: reported where the input itself went below it (a pedestal, a sky near
    # 0), not for the few restored values a [0, 1] image's darkest pixels dip to
    below = 0 if floor is None or not image.low < floor else _pixels_where(restored < floor)
    parts = ([f"{clipped} restored pixels above {ceiling:g}"] if clipped else []) + ([f"{below} restored pixels below {floor:g} (the input's lowest value is {image.low:.6g})"] if below else [])
    if parts:
        warning(f"{target}: {' and '.join(parts)} were clipped to fit {fmt.upper()} {store}; a float32 FITS or TIFF keeps them")
    lost = unkept_keywords(fmt, image)
    if lost and "keywords" not in warned:
        warned.add("keywords")
        warning(_lost_keywords(fmt, source, lost))
    return time.perf_counter() - start


def _pixels_where(mask):
    """How many pixels (any channel) a ``(H, W)`` or ``(C, H, W)`` mask marks."""
    import numpy as np

    return int(np.count_nonzero(mask.reshape(-1, *mask.shape[-2:]).any(axis=0)))


def _lost_keywords(fmt: str, source: Path, names: list[str], shown: int = 8) -> str:
    """The warning for FITS keywords an output format cannot store: which ones (the first
    ``shown``), whether a WCS is among them, and the formats that keep them."""
    from astroswin.engine.io import is_wcs_keyword

    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    wcs = " (its WCS among them)" if any(map(is_wcs_keyword, names)) else ""
    return f"{fmt.upper()} cannot store FITS keywords: {source.name}'s {listed}{wcs} are not kept; write .fits or .xisf to keep them"


class _FileError(Exception):
    pass


def _make_folder(path: Path) -> None:
    """Create ``path`` and its parents; :class:`_FileError` naming the path and the problem.
    The raw ``[Errno 20] Not a directory: 'notes.txt/sub'`` said neither clearly."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        problem = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise _FileError(f"{path}: cannot create the folder: {problem}") from None


def _os_problem(exc: OSError) -> str:
    """An OSError as ``PATH: problem``, without Python's ``[Errno N]``."""
    problem = exc.strerror or str(exc)
    return f"{exc.filename}: {problem}" if exc.filename else problem


def _plain_suffix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a suffix with a path separator: it is added to file names, and ``/../x`` would
    put outputs in another folder (``--output-dir`` is for that)."""
    if any(sep in value for sep in {"/", os.sep, os.altsep} - {None}):
        raise click.BadParameter(f"{value!r} holds a path separator; it is added to file names (use --output-dir for another folder)", param=param)
    return value


def _check_tiling(tile: int | None, overlap: int | None, device: str) -> None:
    """An overlap too large for the tile is bad usage (exit 2), like -o with several inputs,
    not a failed restoration. Without --tile the device's default tile counts."""
    from astroswin.engine import EngineError
    from astroswin.engine.device import resolve_device
    from astroswin.engine.restore import default_tiling

    if overlap is None:
        return  # tile // 8 always fits
    if tile is None:
        try:
            resolved = resolve_device(device)
        except EngineError:
            return  # an unavailable device: settings.check() says so (exit 1)
        tile = default_tiling(resolved)[0]
        named = f"the default tile of {tile} px on {resolved.type}"
    else:
        named = f"--tile {tile}"
    if 2 * overlap >= tile:
        raise click.UsageError(f"--overlap {overlap} is too large for {named}: the overlap must be less than half the tile (at most {(tile - 1) // 2})")


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse ``nan``, which click's FloatRange lets through: every comparison with it is false,
    so it fails no bound check."""
    if value != value:
        raise click.BadParameter("nan is not a number within the range", param=param)
    return value


@click.group(cls=OneLineUsageGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="astroswin")
def cli() -> None:
    """AstroSWIN: deconvolve and denoise linear astronomical images (FITS, XISF, TIFF).

    Run `astroswin demo` to restore the bundled sample, or `astroswin restore --help`.
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Output file (only with a single INPUT). Its extension (.fits/.fit/.fts, .xisf, .tif/.tiff) picks the format.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for outputs (default: next to each input).")
@click.option("--suffix", default="_astroswin", show_default=True, callback=_plain_suffix, help="Added to each input's name to form its output's name.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never modified).")
@click.option("--model", "model_name", default="small", show_default=True, help="Bundled model name, a save_pretrained folder, or a Hugging Face hub id.")
@click.option("--strength", type=click.FloatRange(0.0, 1.0), callback=_not_nan, default=1.0, show_default=True, help="Blend of restored and input image, in linear space (0 = input, 1 = fully restored).")
@click.option("--emission-scale", type=click.IntRange(min=0), default=None, help="Window (px) of the running median that takes smooth nebulosity out before the network and puts it back after, so stars on bright emission are sharpened as on dark sky. 0 turns it off (the bundled weights are partly trained with it: off, stars on the benchmark's nebulae keep 83-91% of their flux; bench/emission_off.md). Default: 25.")
@click.option("--tile", type=click.IntRange(min=16), default=None, help="Tile size in pixels (bounded memory on any image size). Default: 128 on the CPU, 512 on GPUs with 12 GB or more, else 256 (measured fastest, same quality).")
@click.option("--overlap", type=click.IntRange(min=0), default=None, help="Tile overlap in pixels, blended smoothly (no seams). Default: 16 on the CPU, 32 on a GPU; tile/8 with --tile.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Tiles per forward pass on a GPU (the CPU runs one at a time: measured faster).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where to run; auto picks CUDA, then Apple MPS, then CPU.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True, help="auto = fp32: on an H200 fp16 and bf16 were no faster for the shipped model. Of the two, fp16 stays 8x closer to fp32.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "uint16", "uint8"]), default="auto", show_default=True, help="Output sample type. auto: float32 for FITS, the input's type for XISF and TIFF (float64 becomes float32, and in XISF signed integers too; float16 TIFF stays float16, restored values above its 65504 clipped with a warning). An integer type from a [0, 1] float input is scaled to its full range.")
@click.option("--progress", "progress_mode", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True, help="bar: a progress bar on terminals; json: one JSON object per line on stdout (for host plugins); none.")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
def restore(inputs, output, output_dir, suffix, overwrite, model_name, strength, emission_scale, tile, overlap, batch_size, device, precision, threads, dtype, progress_mode, debug) -> None:
    """Restore (deconvolve + denoise) linear images.

    INPUT may be files, folders (their FITS/XISF/TIFF files) or glob patterns. Each output is
    written next to its input as NAME_astroswin.EXT unless -o/--output-dir say otherwise, in the
    input's format, with its header/keywords (WCS included) and a HISTORY line (a TIFF -o
    cannot hold keywords: a warning names those lost). Outputs are written atomically;
    existing files are never replaced without --overwrite.

    \b
    Examples:
      astroswin restore m31.fits
      astroswin restore stacks/ --output-dir restored --strength 0.8
      astroswin restore "night 1/*.xisf" --device cuda

    Exit status: 0 if every file was restored, 1 if any failed, 2 on bad usage, 130 if
    interrupted (Ctrl-C or SIGTERM).
    """
    try:
        from astroswin.engine import EngineError, RestoreSettings, load_model  # torch: seconds
    except KeyboardInterrupt:
        error("interrupted; no output written")
        sys.exit(EXIT_INTERRUPTED)
    files, problems = expand_inputs(inputs, suffix)
    if output is not None and len(files) > 1:
        raise click.UsageError("-o/--output needs exactly one input file; use --output-dir for several")
    from astroswin.engine.io import format_for_suffix

    if output is not None and format_for_suffix(Path(output)) is None:
        raise click.UsageError(f"-o/--output {output}: the name must end in .fits, .fit, .fts, .xisf, .tif or .tiff (it picks the format)")
    _check_tiling(tile, overlap, device)
    if output_dir is not None and not output_dir.is_dir():
        error(f"{output_dir}: output folder does not exist")
        sys.exit(EXIT_FAILED)
    progress = Progress(progress_mode)
    for message in problems:
        error(message)
        progress.emit(event="error", file="", message=message)
    failed = len(problems)
    chosen = {} if emission_scale is None else {"emission_scale": emission_scale}
    settings = RestoreSettings(strength=strength, tile=tile, overlap=overlap, batch_size=batch_size, device=device, precision=precision, threads=threads, **chosen)
    try:
        settings.check()
        model = load_model(model_name)
    except EngineError as exc:
        error(str(exc))
        progress.emit(event="error", file="", message=str(exc))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        error("interrupted; no output written")
        sys.exit(EXIT_INTERRUPTED)
    ok = 0
    written: dict[Path, Path] = {}  # output -> the input it came from, this run
    warned: set[str] = set()  # run-wide warnings already shown
    for source in files:
        message = None
        try:
            from astroswin.engine.io import sniff_format

            target = output_path(source, sniff_format(source), output, output_dir, suffix)
            if target.resolve() in written:  # two inputs, one output name: never replace this run's own output
                raise _FileError(f"its output {target} was written from {written[target.resolve()]} in this run; give the inputs distinct names or output folders")
            seconds = restore_file(source, target, model, model_name, settings, progress, overwrite, dtype, warned)
            written[target.resolve()] = source
        except (EngineError, _FileError) as exc:
            message = str(exc)
        except KeyboardInterrupt:
            progress.close()
            error(f"{source}: interrupted; no output written")
            sys.exit(EXIT_INTERRUPTED)
        except MemoryError:
            message = "out of memory (try a smaller --tile or --batch-size)"
        except Exception as exc:  # a bug: one line unless --debug
            if debug:
                raise
            message = f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (run with --debug for details)"
        if message is None:
            ok += 1
            progress.emit(event="done", file=str(source), output=str(target), seconds=round(seconds, 2))
            if progress.mode != "json":
                click.echo(f"{source} -> {target} ({seconds:.1f} s)")
        else:
            failed += 1
            error(f"{source}: {message}")
            progress.emit(event="error", file=str(source), message=message)
    progress.emit(event="summary", ok=ok, failed=failed)
    if len(files) > 1 and progress.mode != "json":
        click.echo(f"{ok} restored, {failed} failed")
    if failed:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("astroswin-demo"), show_default=True, help="Folder for the demo's files.")
@click.option("--model", "model_name", default="small", show_default=True, help="Model to demonstrate.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where the network runs (auto: a GPU if there is one).")
def demo(out_dir: Path, model_name: str, device: str) -> None:
    """Restore the bundled sample (a synthetic, blurred and noisy star field with a galaxy).

    Writes sample_input.fits, sample_restored.fits and sample_before_after.png into --out,
    replacing the demo's own files from an earlier run, and prints the measured median star
    FWHM before and after.
    """
    from importlib.resources import files

    import numpy as np

    from astroswin.engine import EngineError, RestoreSettings, load_model, restore_array
    from astroswin.engine.io import read_image, write_image
    from astroswin.engine.measure import median_fwhm
    from astroswin.engine.preview import side_by_side

    sample = Path(str(files("astroswin.engine") / "data" / "sample.fits"))
    try:
        _make_folder(out_dir)
        image = read_image(sample)
        start = time.perf_counter()
        restored = restore_array(image.data, load_model(model_name), RestoreSettings(device=device))
        seconds = time.perf_counter() - start
        paths = {}
        for name, data in (("input", np.asarray(image.data, dtype=np.float32)), ("restored", restored)):
            paths[name] = write_image(out_dir / f"sample_{name}.fits", data, image, history=[f"AstroSWIN {__version__} demo: {name}"], overwrite=True)
        png = side_by_side([image.data, restored], out_dir / "sample_before_after.png", reference=image.data)
    except (EngineError, _FileError) as exc:
        error(str(exc))
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        error(_os_problem(exc))
        sys.exit(EXIT_FAILED)
    before, n_before = median_fwhm(np.asarray(image.data, dtype=np.float64))
    after, n_after = median_fwhm(restored)
    truth = image.header.get("TRUEFWHM") if image.header is not None else None
    click.echo(f"input:    {paths['input']}")
    click.echo(f"restored: {paths['restored']}  ({seconds:.1f} s, model {model_name})")
    click.echo(f"preview:  {png}")
    click.echo(f"median star FWHM: {before:.2f} px before ({n_before} stars) -> {after:.2f} px after ({n_after} stars)" + (f"; truth {truth:.2f} px" if truth else ""))


def _register_subcommands() -> None:
    from astroswin.plugin.install import plugins_command
    from astroswin.train.cli import export_command, train_command

    cli.add_command(train_command)
    cli.add_command(export_command)
    cli.add_command(plugins_command)


_register_subcommands()


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point. SIGTERM (``kill``, a job scheduler, a host application
    stopping the engine) is handled like Ctrl-C: the file being written is abandoned, its
    temporary file removed, and the run exits 130 with one line, instead of dying on the spot
    and leaving a hidden temporary file next to the output."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    cli(prog_name="astroswin")


if __name__ == "__main__":
    main()
