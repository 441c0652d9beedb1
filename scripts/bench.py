"""Speed and memory benchmark of ``astroswin restore`` (a benchmark, never a timed unit test).

For each generated linear image (``--sizes`` megapixels x ``--channels``), written as a float32
FITS file:

* **whole process**: ``astroswin restore`` runs as a child process (the real CLI, with timers
  wrapped around its stages); wall time from spawn to exit gives megapixels per second
  (H x W, whatever the channels) and ``wait4`` gives that child's peak RSS;
* **stages**: read (open + the tile reads of the memory-mapped file), normalise (finite /
  stretch / saturation statistics), inference (model forward passes; the first one, which
  includes ``torch.compile``, is reported apart as ``warm-up``), blend (tile weights, overlap
  normalisation, strength and bad-pixel pass), write (the atomic FITS writer), model load;
* **Richardson-Lucy**: scikit-image's ``richardson_lucy`` (30 iterations, a Moffat PSF, per
  channel) on the same image, in a child process with the same thread limit; images above
  ``--rl-max-mp`` are timed on a central crop and extrapolated by pixel count (labelled);
* the model's FLOPs per pixel (``FlopCounterMode`` on one tile: matmuls and convolutions) and
  the fraction of the machine's measured matmul peak (a timed ``torch.mm``) that inference
  reaches.

CPU always; CUDA fp16 and bf16 as well when a GPU is visible (``--device``). Prints a Markdown
table, and merges the runs into ``OUT/results.json`` and ``OUT/results.md`` (a run with the
same image, device, precision and threads replaces the earlier one).

    python scripts/bench.py --sizes 2,9 --channels 1,3 --threads 1 --model small
    python scripts/bench.py --sizes 60 --channels 3 --threads 1 --no-rl      # the memory case
    python scripts/bench.py sweep --mp 1 --threads 1                         # speed options

``sweep`` runs the speed options (tile size / overlap, batch size, torch.compile, bf16,
channels-last, threads) in one process on one image, interleaved over ``--rounds`` so that
a busy machine affects them alike, and reports each one's time and the PSNR of its output
against a reference restoration (fp32, eager, 512 px tiles, 64 px overlap).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "astroswin-bench"
STAGES = ("load", "read", "normalise", "warmup", "inference", "blend", "write")


# -- synthetic linear images -----------------------------------------------------------------------
def image_shape(megapixels: float, channels: int) -> tuple[int, ...]:
    """A 3:2 frame of about ``megapixels`` x 1e6 pixels (H x W), mono or RGB."""
    width = int(round(math.sqrt(megapixels * 1e6 * 1.5)))
    height = int(round(megapixels * 1e6 / width))
    return (height, width) if channels == 1 else (channels, height, width)


def moffat(fwhm: float = 3.0, beta: float = 3.0, size: int = 25) -> np.ndarray:
    """Normalised Moffat PSF ``(1 + r^2/alpha^2)^-beta`` on a ``size`` x ``size`` grid."""
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r = np.arange(size) - size // 2
    kernel = (1.0 + (r[:, None] ** 2 + r[None, :] ** 2) / alpha**2) ** (-beta)
    return (kernel / kernel.sum()).astype(np.float32)


def sky_block(rng: np.random.Generator, y0: int, y1: int, width: int, height: int, stars: np.ndarray, psf: np.ndarray, colour: float) -> np.ndarray:
    """Rows ``y0:y1`` of a linear star field: sky with a gradient, noise, Moffat stars."""
    rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    block = (800.0 + 200.0 * rows / height + 100.0 * np.arange(width, dtype=np.float32)[None, :] / width) * colour
    block = block + rng.standard_normal((y1 - y0, width), dtype=np.float32) * 12.0
    half = psf.shape[0] // 2
    near = stars[(stars[:, 0] >= y0 - half) & (stars[:, 0] < y1 + half)]
    for y, x, flux in near:
        ys, xs = int(y) - half, int(x) - half
        a, b = max(ys, y0), min(ys + psf.shape[0], y1)
        c, d = max(xs, 0), min(xs + psf.shape[1], width)
        if a < b and c < d:
            block[a - y0 : b - y0, c:d] += flux * colour * psf[a - ys : b - ys, c - xs : d - xs]
    np.minimum(block, 65000.0, out=block)  # a few saturated, clipped cores
    return block


def generate(path: Path, shape: tuple[int, ...], seed: int = 1) -> Path:
    """Write a float32 FITS star field of ``shape`` in row blocks (bounded memory), once."""
    from astropy.io import fits

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = shape[0] if len(shape) == 3 else 1
    height, width = shape[-2:]
    rng = np.random.default_rng(seed)
    count = int(height * width / 3000)
    stars = np.column_stack([rng.uniform(0, height, count), rng.uniform(0, width, count), 10 ** rng.uniform(2.5, 6.5, count)])
    stars = stars[np.argsort(stars[:, 0])]
    psf = moffat(3.0, 3.0)
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", len(shape))] + [(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(shape))])
    header["OBJECT"] = "astroswin bench field"
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    stream = fits.StreamingHDU(tmp, header)
    for colour in (1.0, 0.8, 0.6)[:channels]:
        for y0 in range(0, height, 512):
            y1 = min(height, y0 + 512)
            stream.write(sky_block(rng, y0, y1, width, height, stars, psf, colour).astype(">f4"))
    stream.close()
    tmp.rename(path)
    return path


# -- child process: the real CLI with stage timers -------------------------------------------------
def child_main(stage_file: str, cli_args: list[str]) -> None:
    """Run ``astroswin restore`` in this process with timers around its stages."""
    started = time.perf_counter()
    times = {name: 0.0 for name in STAGES}
    counts = {"batches": 0}

    def timed(module, name: str, stage: str, first_stage: str | None = None) -> None:
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = first_stage if first_stage and counts.setdefault(name, 0) == 0 else stage
                counts[name] = counts.get(name, 0) + 1
                times[key] += time.perf_counter() - t

        setattr(module, name, wrapper)

    import astroswin.engine as engine
    from astroswin.engine import io, restore, tiling

    timed(engine, "load_model", "load")
    timed(io, "read_image", "read")
    timed(tiling, "extract", "read")
    timed(restore, "_clean_tile", "read")
    for name in ("finite_extremes", "estimate_stretch", "saturation_level"):
        timed(restore, name, "normalise")
    timed(restore, "_infer", "inference", first_stage="warmup")
    for module, name in ((tiling, "accumulate"), (tiling, "normalise"), (restore, "_finish")):
        timed(module, name, "blend")
    timed(io, "write_image", "write")

    def dump() -> None:
        times["in_process"] = time.perf_counter() - started
        times["batches"] = counts.get("_infer", 0)
        Path(stage_file).write_text(json.dumps(times))

    atexit.register(dump)
    from astroswin.cli import cli

    sys.argv = ["astroswin", *cli_args]
    cli(prog_name="astroswin")


def run_child(args: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """Spawn, wait; (exit status, wall seconds, peak RSS bytes of that child, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr_chunks = []
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all of them)
    import threading

    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    return proc.returncode, wall, usage.ru_maxrss * 1024, "".join(stderr_chunks)


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.update(extra or {})
    return env


# -- Richardson-Lucy baseline ----------------------------------------------------------------------
def rl_main(path: str, max_mp: float, result_file: str) -> None:
    """Time skimage's Richardson-Lucy (30 iterations, per channel) on the image (or a crop)."""
    from astropy.io import fits
    from skimage.restoration import richardson_lucy

    with fits.open(path, memmap=True) as hdul:
        data = hdul[0].data
        planes = data if data.ndim == 3 else data[None]
        h, w = planes.shape[-2:]
        scale = min(1.0, math.sqrt(max_mp * 1e6 / (h * w)))
        ch, cw = max(32, int(h * scale)), max(32, int(w * scale))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        psf = moffat(3.0, 3.0)
        seconds = 0.0
        for plane in planes:
            crop = np.array(plane[y0 : y0 + ch, x0 : x0 + cw], dtype=np.float32)
            lo, hi = float(np.nanmin(crop)), float(np.nanmax(crop))
            crop = np.nan_to_num((crop - lo) / max(hi - lo, 1e-12), nan=0.0)
            t = time.perf_counter()
            richardson_lucy(crop, psf, num_iter=30, clip=False)
            seconds += time.perf_counter() - t
    factor = (h * w) / (ch * cw)
    Path(result_file).write_text(json.dumps({"seconds": seconds * factor, "measured_seconds": seconds, "crop": [ch, cw], "extrapolated": factor > 1.01}))


# -- model cost and machine peak -------------------------------------------------------------------
def model_flops_per_pixel(model_spec: str, tile: int) -> float:
    """Matmul + convolution FLOPs of one forward pass on a ``tile`` x ``tile`` RGB tile, per pixel."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from astroswin.engine import load_model

    model = load_model(model_spec).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, tile, tile))
    return counter.get_total_flops() / (tile * tile)


def matmul_peak(threads: int, device: str = "cpu", dtype: str = "fp32", n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an ``n`` x ``n`` matrix product."""
    import torch

    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    best = math.inf
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def hardware() -> dict:
    import torch

    info = {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__, "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), platform.processor())
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu"] = model
        info["cpu_bf16"] = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        info["cpu"] = platform.processor()
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# -- the benchmark ---------------------------------------------------------------------------------
def native_cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bench(opts) -> None:
    import torch

    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    hw = hardware()
    flops_px = model_flops_per_pixel(opts.model, opts.tile)
    devices = []
    for device in opts.device.split(","):
        if device == "cpu":
            devices += [("cpu", p) for p in opts.cpu_precision.split(",")]
        elif device == "cuda":
            if torch.cuda.is_available():
                devices += [("cuda", "bf16"), ("cuda", "fp16")]
            else:
                print("CUDA not available: GPU rows skipped", file=sys.stderr)
    peaks = {}
    for device, precision in devices:
        key = f"{device}:{precision}"
        if key not in peaks:
            peaks[key] = matmul_peak(opts.threads, device, precision)
    print(f"# {hw.get('cpu')} | torch {hw['torch']} | threads {opts.threads} | model {opts.label or opts.model} ({flops_px / 1e3:.0f} kFLOP/px per tile pixel)", flush=True)
    for key, value in peaks.items():
        print(f"# matmul peak {key}: {value / 1e9:.1f} GFLOP/s", flush=True)

    records = []
    for mp in [float(s) for s in opts.sizes.split(",")]:
        for channels in [int(c) for c in opts.channels.split(",")]:
            shape = image_shape(mp, channels)
            source = generate(work / f"field_{mp:g}mp_{channels}ch.fits", shape)
            h, w = shape[-2:]
            rl = None
            if not opts.no_rl:
                rl_file = work / "rl.json"
                code, rl_wall, rl_rss, err = run_child([sys.executable, __file__, "_rl", str(source), str(opts.rl_max_mp), str(rl_file)], child_env(opts.threads))
                rl = json.loads(rl_file.read_text()) if code == 0 else {"error": err.strip().splitlines()[-1:]}
            for device, precision in devices:
                target = work / "restored.fits"
                target.unlink(missing_ok=True)
                stage_file = work / "stages.json"
                stage_file.unlink(missing_ok=True)
                cli_args = ["restore", str(source), "-o", str(target), "--model", opts.model, "--device", device, "--precision", precision, "--threads", str(opts.threads), "--tile", str(opts.tile), "--overlap", str(opts.overlap), "--batch-size", str(opts.batch_size), "--progress", "none", "--overwrite"]
                extra = {} if opts.compile == "auto" else {"ASTROSWIN_COMPILE": opts.compile}
                code, wall, rss, err = run_child([sys.executable, __file__, "_child", str(stage_file), "--", *cli_args], child_env(opts.threads, extra))
                if code != 0:
                    print(f"restore failed on {source.name} ({device}/{precision}): {err.strip()[-500:]}", file=sys.stderr)
                    continue
                stages = json.loads(stage_file.read_text())
                tiles = _tile_count(h, w, opts.tile, opts.overlap)
                flops_image_px = flops_px * tiles * min(opts.tile, h + 2 * opts.overlap) * min(opts.tile, w + 2 * opts.overlap) / (h * w)
                peak = peaks[f"{device}:{precision}"]
                inference_s = stages["inference"] + stages["warmup"]
                batches = stages["batches"]
                steady = stages["inference"] * batches / (batches - 1) if batches > 1 else stages["warmup"]
                record = {
                    "image": f"{mp:g} MP {'RGB' if channels == 3 else 'mono'}",
                    "megapixels": round(h * w / 1e6, 3),
                    "shape": list(shape),
                    "channels": channels,
                    "device": device,
                    "precision": precision,
                    "threads": opts.threads,
                    "tile": opts.tile,
                    "overlap": opts.overlap,
                    "batch_size": opts.batch_size,
                    "compile": opts.compile,
                    "wall_s": round(wall, 2),
                    "mp_per_s": round(h * w / 1e6 / wall, 4),
                    "peak_rss_gb": round(rss / 1e9, 3),
                    "stages_s": {k: round(stages[k], 2) for k in STAGES},
                    "startup_s": round(wall - stages["in_process"], 2),
                    "flops_per_tile_px": round(flops_px),
                    "flops_per_image_px": round(flops_image_px),
                    "matmul_peak_gflops": round(peak / 1e9, 1),
                    "inference_gflops": round(flops_image_px * h * w / max(steady, 1e-9) / 1e9, 2),
                    "peak_fraction": round(flops_image_px * h * w / max(steady, 1e-9) / peak, 4),
                    "inference_with_warmup_s": round(inference_s, 2),
                    "date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "hardware": hw,
                    "model": opts.label or opts.model,
                }
                if rl is not None and "seconds" in rl:
                    record["rl_s"] = round(rl["seconds"], 2)
                    record["rl_extrapolated"] = rl["extrapolated"]
                    record["rl_mp_per_s"] = round(h * w / 1e6 / rl["seconds"], 4)
                    record["speed_vs_rl"] = round(record["mp_per_s"] / record["rl_mp_per_s"], 3)
                records.append(record)
                print(table([record], header=not records[:-1]), flush=True)
                target.unlink(missing_ok=True)
    merged = merge(out_dir / "results.json", records, hw, flops_px, opts)
    (out_dir / "results.md").write_text(markdown(merged))
    print()
    print(table(merged["runs"]))


def _tile_count(h: int, w: int, tile: int, overlap: int) -> int:
    from astroswin.engine import tiling

    return len(tiling.plan(h, w, tile, overlap))


def merge(path: Path, records: list[dict], hw: dict, flops_px: float, opts) -> dict:
    keep = []
    if path.is_file():
        try:
            keep = json.loads(path.read_text()).get("runs", [])
        except ValueError:
            keep = []
    key = lambda r: (r["image"], r["device"], r["precision"], r["threads"], r["tile"], r["overlap"])  # noqa: E731
    new = {key(r) for r in records}
    runs = [r for r in keep if key(r) not in new] + records
    runs.sort(key=lambda r: (r["device"], r["precision"], r["threads"], r["megapixels"], r["channels"]))
    previous = json.loads(path.read_text()) if path.is_file() else {}
    data = {"hardware": hw, "model": opts.label or opts.model, "flops_per_tile_px": round(flops_px), "runs": runs, "sweep": previous.get("sweep", []), "notes": previous.get("notes", [])}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


def table(runs: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| image | device | prec | thr | tile/overlap | wall s | MP/s | peak RSS GB | RL 30 it s | vs RL | read | normalise | warm-up | inference | blend | write | load | other | % matmul peak |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in runs:
        s = r["stages_s"]
        rl = f"{r['rl_s']:.0f}{' (extrap.)' if r.get('rl_extrapolated') else ''}" if "rl_s" in r else "-"
        vs = f"{r['speed_vs_rl']:.2f}x" if "speed_vs_rl" in r else "-"
        lines.append(
            f"| {r['image']} ({r['shape'][-1]}x{r['shape'][-2]}) | {r['device']} | {r['precision']} | {r['threads']} | {r['tile']}/{r['overlap']} | {r['wall_s']:.1f} | {r['mp_per_s']:.3f} | {r['peak_rss_gb']:.2f} | {rl} | {vs} | "
            f"{s['read']:.1f} | {s['normalise']:.1f} | {s['warmup']:.1f} | {s['inference']:.1f} | {s['blend']:.1f} | {s['write']:.1f} | {s['load']:.1f} | {r['wall_s'] - sum(s.values()):.1f} | {100 * r['peak_fraction']:.1f} |"
        )
    return "\n".join(lines)


def markdown(data: dict) -> str:
    hw = data["hardware"]
    runs = data["runs"]
    lines = [
        "# AstroSWIN speed and memory benchmark",
        "",
        f"Measured with `scripts/bench.py` on: {hw.get('cpu', '?')} ({hw.get('logical_cpus')} logical CPUs, {hw.get('memory_gb', '?')} GB RAM"
        + (f", native bf16: {', '.join(hw['cpu_bf16'])}" if hw.get("cpu_bf16") else "")
        + (f", GPU {hw['gpu']}" if hw.get("gpu") else ", no GPU")
        + f"), torch {hw.get('torch')}, Python {hw.get('python')}. Model `{data['model']}`: {data['flops_per_tile_px'] / 1e3:.0f} kFLOP per tile pixel (matmuls and convolutions).",
        "",
        "Whole process = `astroswin restore` from spawn to exit (Python start-up, imports, model load, read, restore, atomic write); "
        "MP/s counts H x W pixels. Peak RSS is the child's `ru_maxrss`. RL = scikit-image `richardson_lucy`, 30 iterations, Moffat PSF, "
        "per channel, compute only, same thread limit; *extrap.* = timed on a central crop and scaled by pixel count. Stage columns are seconds: "
        "read = opening the file and reading the tiles from its memory map; normalise = finite/stretch/saturation statistics; warm-up = the first forward "
        "pass (eager: it fills the attention-mask cache); inference = all other forward passes, including `torch.compile` (or loading its cached graph) "
        "on the second; blend = tile weights, overlap normalisation, strength and bad-pixel pass; write = the atomic writer; load = the model; other = "
        "Python start-up and imports. % matmul peak = inference FLOP/s (FLOPs per image pixel, overlap included) over a timed 2048x2048 `torch.mm` in "
        "the same precision and thread count.",
        "",
        table(runs),
        "",
    ]
    if data.get("sweep"):
        lines += ["## Speed options (sweep)", "", sweep_table(data["sweep"]), ""]
    if data.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in data["notes"]] + [""]
    return "\n".join(lines)


# -- sweep of speed options ------------------------------------------------------------------------
def rms_in_sigma(out: np.ndarray, ref: np.ndarray, source: np.ndarray) -> float:
    """RMS of ``out - ref`` in the engine's asinh stretch, in units of the input's background
    noise sigma (the stretch's slope there is ``1 / (SOFTENING * RANGE * sigma)``): bright stars
    weigh no more than the sky, and 0.01 means a difference a hundredth of the noise."""
    from astroswin.engine.normalize import RANGE, SOFTENING, estimate_stretch, stretch

    src = source if source.ndim == 3 else source[None]
    params = estimate_stretch(src)
    a = stretch((out if out.ndim == 3 else out[None]).astype(np.float64), params)
    b = stretch((ref if ref.ndim == 3 else ref[None]).astype(np.float64), params)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2)) * SOFTENING * RANGE)


def psnr_stretched(out: np.ndarray, ref: np.ndarray, source: np.ndarray) -> float:
    """PSNR of ``out`` against ``ref`` in the engine's asinh stretch of ``source`` (peak = ref range)."""
    from astroswin.engine.normalize import estimate_stretch, stretch

    src = source if source.ndim == 3 else source[None]
    params = estimate_stretch(src)
    a = stretch((out if out.ndim == 3 else out[None]).astype(np.float64), params)
    b = stretch((ref if ref.ndim == 3 else ref[None]).astype(np.float64), params)
    ok = np.isfinite(a) & np.isfinite(b)
    mse = float(np.mean((a[ok] - b[ok]) ** 2))
    peak = float(b[ok].max() - b[ok].min())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def sweep(opts) -> None:
    import torch

    from astroswin.engine import RestoreSettings, load_model, restore_array

    torch.set_num_threads(opts.threads)
    model = load_model(opts.model).eval()
    shape = image_shape(opts.mp, opts.channels)
    work = Path(opts.workdir)
    source = generate(work / f"field_{opts.mp:g}mp_{opts.channels}ch.fits", shape)
    from astropy.io import fits

    data = np.array(fits.getdata(source), dtype=np.float32)

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner.to(memory_format=torch.channels_last)
            self.config = inner.config

        def forward(self, x):
            return self.inner(x.contiguous(memory_format=torch.channels_last))

    variants = {}
    for spec in opts.variants.split(";"):
        name, _, params = spec.rpartition(":")
        kw = dict(p.split("=") for p in params.split(",") if p)
        variants[name] = kw

    def settings_for(kw: dict) -> RestoreSettings:
        return RestoreSettings(
            tile=int(kw.get("tile", 256)), overlap=int(kw.get("overlap", 32)), batch_size=int(kw.get("bs", 4)), device="cpu",
            precision=kw.get("prec", "fp32"), threads=int(kw.get("threads", opts.threads)), compile=kw.get("compile", "off"),
        )

    import copy

    from astroswin.engine import restore as restore_module

    plain = copy.deepcopy(model)  # for variants without the attention-mask cache (the old code)
    cache_masks = restore_module._cache_attention_masks
    channels_last: dict = {}

    def model_for(kw: dict):
        restore_module._cache_attention_masks = cache_masks if kw.get("masks", "1") == "1" else (lambda m: None)
        restore_module._CPU_ONE_TILE_PER_PASS = kw.get("cpubatch") != "1"  # cpubatch=1: bs tiles per pass
        chosen = plain if kw.get("masks", "1") == "0" else model
        if kw.get("cl") == "1":
            key = id(chosen)
            if key not in channels_last:
                channels_last[key] = ChannelsLast(copy.deepcopy(chosen))
            return channels_last[key]
        return chosen

    print(f"# sweep on {shape} ({data.shape[-1] * data.shape[-2] / 1e6:.2f} MP), threads {opts.threads}", flush=True)
    model_for({"masks": "0"})
    t = time.perf_counter()
    reference = restore_array(data, plain, RestoreSettings(tile=512, overlap=64, batch_size=1, device="cpu", compile="off"))
    print(f"# reference (fp32 eager 512/64): {time.perf_counter() - t:.1f} s", flush=True)
    results = {name: {"variant": name, "settings": kw, "times": []} for name, kw in variants.items()}
    for name, kw in variants.items():  # warm-up: compile each variant's shapes once (timed apart)
        chosen = model_for(kw)
        t = time.perf_counter()
        out = restore_array(data, chosen, settings_for(kw))
        results[name]["first_s"] = round(time.perf_counter() - t, 2)
        results[name]["psnr_vs_reference_db"] = round(psnr_stretched(out, reference, data), 2)
        results[name]["rms_vs_reference_sigma"] = round(rms_in_sigma(out, reference, data), 5)
        print(f"# {name}: first run {results[name]['first_s']} s, PSNR {results[name]['psnr_vs_reference_db']} dB, RMS {results[name]['rms_vs_reference_sigma']} sigma", flush=True)
    for _ in range(opts.rounds):
        for name, kw in variants.items():
            chosen = model_for(kw)
            t = time.perf_counter()
            restore_array(data, chosen, settings_for(kw))
            results[name]["times"].append(round(time.perf_counter() - t, 2))
    torch.set_num_threads(opts.threads)
    megapixels = data.shape[-1] * data.shape[-2] / 1e6
    rows = []
    base = None
    for r in results.values():
        best = min(r["times"])
        base = base or best
        rows.append({**r, "best_s": best, "mp_per_s": round(megapixels / best, 4), "speedup": round(base / best, 3), "megapixels": round(megapixels, 3), "shape": list(shape), "threads": opts.threads, "model": opts.label or opts.model, "date": datetime.datetime.now().isoformat(timespec="seconds")})
    print(sweep_table(rows))
    out = Path(opts.out) / "results.json"
    previous = json.loads(out.read_text()) if out.is_file() else {"hardware": hardware(), "model": opts.model, "flops_per_tile_px": 0, "runs": []}
    previous["sweep"] = rows
    previous.setdefault("hardware", hardware())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(previous, indent=1) + "\n")
    (Path(opts.out) / "results.md").write_text(markdown(previous))


def sweep_table(rows: list[dict]) -> str:
    lines = [
        f"Image {rows[0]['shape']} ({rows[0]['megapixels']} MP), model `{rows[0]['model']}`, CPU threads {rows[0]['threads']} (per variant where set); in-process `restore_array` time, best of the interleaved rounds; the first run (compilation or loading the cached graph) apart. "
        "PSNR: output against a reference restoration (fp32, eager, 512 px tiles, 64 px overlap) in the engine's asinh stretch; RMS: the same difference "
        "in units of the background noise sigma (the stretch's slope at the sky level). masks=0: without the attention-mask cache (the code before this benchmark).",
        "",
        "| variant | settings | first run s | best s | MP/s | speed-up vs first row | PSNR vs reference dB | RMS diff / noise sigma |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        rms = r.get("rms_vs_reference_sigma")
        lines.append(f"| {r['variant']} | {settings} | {r['first_s']:.1f} | {r['best_s']:.1f} | {r['mp_per_s']:.3f} | {r['speedup']:.2f}x | {r['psnr_vs_reference_db']:.1f} | {'-' if rms is None else f'{rms:.4f}'} |")
    return "\n".join(lines)


DEFAULT_VARIANTS = ";".join(
    [
        "before (eager 256/32, 4 tiles per pass, no mask cache):tile=256,overlap=32,bs=4,masks=0,cpubatch=1",
        "eager 256/32:tile=256,overlap=32",
        "compile 256/32, no mask cache:tile=256,overlap=32,compile=on,masks=0",
        "compile 256/32, 4 tiles per pass:tile=256,overlap=32,compile=on,cpubatch=1",
        "compile 256/32:tile=256,overlap=32,compile=on",
        "compile 256/16:tile=256,overlap=16,compile=on",
        "compile 192/16:tile=192,overlap=16,compile=on",
        "compile 128/16:tile=128,overlap=16,compile=on",
        "compile bf16 256/32:tile=256,overlap=32,compile=on,prec=bf16",
        "compile bf16 128/16:tile=128,overlap=16,compile=on,prec=bf16",
    ]
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        sep = argv.index("--")
        return child_main(argv[1], argv[sep + 1 :])
    if argv[:1] == ["_rl"]:
        return rl_main(argv[1], float(argv[2]), argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "sweep"])
    parser.add_argument("--sizes", default="2,9,24,60", help="image sizes in megapixels (H x W)")
    parser.add_argument("--channels", default="1,3", help="1 (mono) and/or 3 (RGB)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every run (default: all)")
    parser.add_argument("--device", default="cpu,cuda", help="cpu and/or cuda (skipped when absent)")
    parser.add_argument("--cpu-precision", default="fp32", help="CPU precisions to run: fp32 and/or bf16 (native bf16 CPUs)")
    parser.add_argument("--model", default="small", help="model name or folder (the default model: small)")
    parser.add_argument("--label", default=None, help="name of the model in the report (default: --model)")
    parser.add_argument("--tile", type=int, default=128, help="tile size (default: the CLI default on the CPU)")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--compile", default="auto", choices=["auto", "0", "1"], help="ASTROSWIN_COMPILE for the runs")
    parser.add_argument("--no-rl", action="store_true", help="skip the Richardson-Lucy baseline")
    parser.add_argument("--rl-max-mp", type=float, default=9.0, help="larger images: RL timed on a crop of this size, extrapolated")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="folder for results.json and results.md")
    parser.add_argument("--workdir", default=str(DEFAULT_WORK), help="folder for the generated images (kept, reused)")
    parser.add_argument("--mp", type=float, default=1.0, help="sweep: image size")
    parser.add_argument("--rounds", type=int, default=2, help="sweep: timed rounds per variant")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="sweep: 'name:key=value,...;...' (tile, overlap, bs, compile, prec, threads, cl=1 channels-last, masks=0 no mask cache, cpubatch=1 bs tiles per CPU pass)")
    opts = parser.parse_args(argv)
    if opts.mode == "sweep":
        opts.channels = int(opts.channels.split(",")[-1])
        return sweep(opts)
    return bench(opts)


if __name__ == "__main__":
    main()
