"""The training loop: AdamW, warm-up + cosine, accumulation, EMA, exact resume, DDP.

Plain PyTorch. One checkpoint file, ``OUT/last.pt``, is overwritten atomically every
``log.checkpoint_every`` steps and on SIGTERM/SIGINT; ``--resume`` continues from it exactly
(model, EMA, optimiser, step, RNG; the data stream is a pure function of the step). Under
``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) it runs DistributedDataParallel on
gloo (CPU) or NCCL (CUDA); rank 0 writes everything.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

from .config import TrainConfig
from .data import FolderPatches, make_batch, validation_set
from .grow import add_stages
from .losses import to_sigma_units, weighted_loss


def build_model(cfg: TrainConfig) -> AstroSwin2SR:
    """A fresh model from the named config, or initialised from ``cfg.init``.

    With ``init``, ``model_overrides`` may only add stages (:func:`.grow.add_stages`): the
    trained weights are kept and the new stages start as the identity.
    """
    if not cfg.init:
        return AstroSwin2SR(AstroSwin2SRConfig.named(cfg.model, **cfg.model_overrides))
    if cfg.init.endswith(".pt"):
        model = model_from_checkpoint(cfg.init)
    else:
        from astroswin.engine.loading import load_model

        model = load_model(cfg.init)
    return add_stages(model, **cfg.model_overrides)


def trainable_parameters(model: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Parameter]:
    """The parameters to train: all, or those whose names start with one of ``prefixes``; the
    others are frozen (``requires_grad`` off), so they keep their initial values exactly, weight
    decay included. A prefix that names no parameter raises ValueError (a typo would otherwise
    train nothing, or everything)."""
    named = dict(model.named_parameters())
    if not prefixes:
        return list(named.values())
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in named):
            raise ValueError(f"optim.trainable: no parameter of this model starts with {prefix!r} (e.g. {next(iter(named))!r})")
    for name, parameter in named.items():
        parameter.requires_grad_(name.startswith(tuple(prefixes)))
    return [p for p in named.values() if p.requires_grad]


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_fraction`` at ``steps``."""
    o = cfg.optim
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = min(1.0, (step - o.warmup) / max(1, o.steps - o.warmup))
    return o.lr * (o.min_lr_fraction + (1 - o.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast_context(precision: str, device: torch.device):
    """Autocast for bf16/fp16 (``auto`` = bf16 on CUDA when supported, fp32 on CPU)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return nullcontext(), precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype), precision


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a torn file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Holds the run's state; :meth:`run` trains to ``cfg.optim.steps``."""

    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False):
        self.cfg = cfg
        self.out = Path(out)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL's collectives and barrier use the current device
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.optim.threads:
            torch.set_num_threads(cfg.optim.threads)
        torch.manual_seed(cfg.seed)
        checkpoint = self.out / "last.pt"
        if not resume and checkpoint.is_file():
            raise FileExistsError(f"{checkpoint} exists: continue that run with --resume, or choose another --out (a fresh run would overwrite it and mix its logs)")
        resuming = resume and checkpoint.is_file()
        # A resumed run rebuilds the model from its own checkpoint: `init` may not exist here.
        self.model = (build_model(replace(cfg, init=str(checkpoint))) if resuming else build_model(cfg)).to(self.device)
        if cfg.optim.gradient_checkpointing:
            # transformers 5 renamed it (the old name warns); 4.x has only the old one.
            (getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable)()
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if cfg.optim.ema > 0 else None
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model, cfg.optim.trainable), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        # fp16 needs loss scaling: without it half the gradients of the tiny model underflowed
        # to zero (measured on CPU autocast); bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if autocast_context(cfg.optim.precision, self.device)[1] == "fp16" else None
        self.step = 0
        self.folder = FolderPatches(cfg.data.folder) if cfg.data.folder else None
        self.stop_requested = False
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if resuming:
            self.load(checkpoint)
            if self.is_main:
                for log in ("train.csv", "val.csv"):
                    drop_rows_after(self.out / log, self.step)
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def save(self) -> None:
        if self.is_main:
            atomic_save(self.state(), self.out / "last.pt")

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    # -- one step ------------------------------------------------------------------------------
    def seeds(self, micro: int, step: int | None = None) -> list[int]:
        """Data seeds of one micro-batch: a pure function of (seed, step, rank, micro)."""
        b, a = self.cfg.data.batch_size, self.cfg.optim.accumulation
        step = self.step if step is None else step
        first = ((step * a + micro) * self.world + self.rank) * b
        return [self.cfg.seed * 10**8 + first + i for i in range(b)]

    def batches(self):
        """Micro-batches in step order from ``data.workers`` processes (0: in this process).

        Each worker makes every ``workers``-th micro-batch and the DataLoader interleaves them
        round-robin, so the stream is the same whatever the worker count.
        """
        seeds = [self.seeds(m, s) for s in range(self.step, self.cfg.optim.steps) for m in range(self.cfg.optim.accumulation)]
        dataset = MicroBatches(seeds, self.cfg, self.folder)
        workers = self.cfg.data.workers
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None))

    def train_step(self) -> dict:
        cfg = self.cfg
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        context, _ = autocast_context(cfg.optim.precision, self.device)
        totals: dict[str, float] = {}
        for _ in range(cfg.optim.accumulation):
            x, y = next(self.stream)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with context:
                pred = self.net(x)
            loss, terms = weighted_loss(pred.float(), y, cfg.loss.weights, cfg.loss.params)
            share = loss / cfg.optim.accumulation
            (share if self.scaler is None else self.scaler.scale(share)).backward()
            for k, v in {"loss": float(loss.detach()), **terms}.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.optim.accumulation
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when a gradient overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.model.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].mul_(cfg.optim.ema).add_(v.detach(), alpha=1 - cfg.optim.ema)
                    else:
                        self.ema[k].copy_(v)
        self.step += 1
        if self.world > 1:  # log the whole batch's terms, not rank 0's share of it
            names = sorted(totals)
            values = torch.tensor([totals[k] for k in names], dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            totals = dict(zip(names, (values / self.world).tolist()))
        return {"step": self.step, "lr": lr, **totals}

    # -- validation ----------------------------------------------------------------------------
    def ema_model(self) -> AstroSwin2SR:
        model = AstroSwin2SR(self.model.config).to(self.device)
        model.load_state_dict(self.ema if self.ema is not None else self.model.state_dict())
        return model.eval()

    @torch.inference_mode()
    def validate(self, val: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """PSNR (stretched space) of model and identity, and the bright-source flux ratio."""
        x, y = (t.to(self.device) for t in val)
        model = self.ema_model()
        pred = torch.cat([model(x[i : i + 4]) for i in range(0, len(x), 4)]).float()
        mse = ((pred - y) ** 2).mean(dim=(1, 2, 3))
        mse_in = ((x - y) ** 2).mean(dim=(1, 2, 3))
        psnr = (-10 * torch.log10(mse.clamp_min(1e-12))).mean().item()
        psnr_in = (-10 * torch.log10(mse_in.clamp_min(1e-12))).mean().item()
        ratio = flux_ratio(pred, y)
        self.write_grid(x, pred, y)
        return {"step": self.step, "val_psnr": psnr, "val_psnr_input": psnr_in, "val_flux_ratio": ratio}

    def write_grid(self, x, pred, y, n: int = 6) -> None:
        """PNG grid: rows input / restored / truth, in the stretched space (display only)."""
        from PIL import Image

        rows = [torch.cat(list(t[:n, :3].clamp(0, 1).cpu()), dim=-1) for t in (x, pred, y)]
        grid = (torch.cat(rows, dim=-2).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(grid).save(self.out / "val_grid.png")

    # -- the run -------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Whether any rank was asked to stop. A signal reaches the ranks at different moments;
        they must all leave at the same step, or the others wait for ever in the next step's
        gradient all-reduce (measured: a SIGTERM to one of two gloo ranks hung the job)."""
        if self.world > 1:
            flag = torch.tensor([float(self.stop_requested)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.stop_requested = bool(flag.item())
        return self.stop_requested

    def run(self) -> None:
        """Train to ``optim.steps``, or until SIGTERM or Ctrl-C, which finish the step under way
        and checkpoint it (a signal mid-step once saved an optimiser one step ahead of the
        model's step count: the resumed run was no longer the same run). A second Ctrl-C stops
        at once and keeps the last periodic checkpoint."""
        cfg = self.cfg
        stops = (signal.SIGTERM, signal.SIGINT)
        handlers = {signum: signal.getsignal(signum) for signum in stops}

        def request_stop(signum, frame):
            if self.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_requested = True
            if self.is_main:
                print("stopping after this step (Ctrl-C again: at once, keeping the last checkpoint)", flush=True)

        val = validation_set(cfg.log.val_scenes, cfg.log.val_size, cfg.degrade, [k for k, w in cfg.data.kinds.items() if w > 0], cfg.data.target, cfg.data.emission_scale) if self.is_main else None
        self.stream = self.batches()
        for signum in stops:  # only now: an error above must leave the caller's handlers in place
            signal.signal(signum, request_stop)
        start = time.time()
        try:
            while self.step < cfg.optim.steps and not self.should_stop():
                row = self.train_step()
                row["seconds"] = round(time.time() - start, 1)
                if self.is_main and (self.step % cfg.log.every == 0 or self.step == 1):
                    append_csv(self.out / "train.csv", row)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
                if self.step % cfg.log.checkpoint_every == 0:
                    self.save()
                if self.is_main and (self.step % cfg.log.val_every == 0 or self.step == cfg.optim.steps):
                    metrics = self.validate(val)
                    append_csv(self.out / "val.csv", metrics)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), flush=True)
            self.save()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            if self.world > 1 and dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


class MicroBatches(torch.utils.data.IterableDataset):
    """The training stream as a dataset: one ``(input, target)`` micro-batch per seed list."""

    def __init__(self, seeds: list[list[int]], cfg: TrainConfig, folder):
        self.seeds, self.cfg, self.folder = seeds, cfg, folder

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        share = self.seeds if info is None else self.seeds[info.id :: info.num_workers]
        for seeds in share:
            yield make_batch(seeds, self.cfg.data, self.cfg.degrade, self.folder)


def flux_ratio(pred: torch.Tensor, target: torch.Tensor, threshold: float = 100.0, aperture: int = 9) -> float:
    """Median ratio of predicted to true aperture flux around bright target peaks.

    Both are mapped to linear sigma units; peaks are local maxima of the target above
    ``threshold`` sigma; apertures are ``aperture x aperture`` boxes. 1.0 is perfect.
    """
    lp, lt = to_sigma_units(pred), to_sigma_units(target)
    pool = torch.nn.functional.max_pool2d(lt, 9, stride=1, padding=4)
    peaks = (lt == pool) & (lt > threshold)
    sp = torch.nn.functional.avg_pool2d(lp, aperture, stride=1, padding=aperture // 2)
    st = torch.nn.functional.avg_pool2d(lt, aperture, stride=1, padding=aperture // 2)
    ratios = (sp[peaks] / st[peaks]).float()
    return float(ratios.median()) if ratios.numel() else float("nan")


def drop_rows_after(path: Path, step: int) -> None:
    """Remove the rows of a metrics CSV logged after ``step``: a run killed between two
    checkpoints had logged steps that the resumed run logs again (each step once in the file)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2 or "step" not in rows[0]:
        return
    column = rows[0].index("step")
    # A row cut short by the kill (fewer fields than the header) goes too.
    kept = [rows[0]] + [row for row in rows[1:] if len(row) == len(rows[0]) and row[column].isdigit() and int(row[column]) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        csv.writer(fh).writerows(kept)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    """Append a row; write the header when the file is new (columns fixed by the first row)."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def model_from_checkpoint(checkpoint: str | Path, use_ema: bool = True) -> AstroSwin2SR:
    """The model of a training checkpoint, with its EMA weights where it has them.

    The checkpoint is unpickled with ``weights_only=True`` (tensors and plain data only): it may
    come from anyone (an export, a config's ``init``), and a full unpickle runs whatever code the
    file names. Anything that is not a checkpoint of this package raises ValueError with one
    line saying so.
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = AstroSwin2SRConfig.from_dict(state["model_config"])
    except KeyError as exc:
        raise ValueError(f"{checkpoint}: not an AstroSWIN training checkpoint (no {exc} entry)") from None
    except Exception:  # pickle, zip and type errors alike (torch's own text suggests the unsafe load)
        raise ValueError(f"{checkpoint}: not an AstroSWIN training checkpoint (not a torch file of tensors and plain data)") from None
    model = AstroSwin2SR(config)
    model.load_state_dict(state["ema"] if use_ema and state.get("ema") else state["model"])
    return model


def export_pretrained(checkpoint: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Write a checkpoint's (EMA) weights as ``save_pretrained`` safetensors + ``config.json``
    (:func:`model_from_checkpoint` reads it)."""
    model = model_from_checkpoint(checkpoint, use_ema)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    return out
