"""Shared fixtures: tiny random-config models, star fields with a known truth, file writers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model():
    """A 'tiny' AstroSwin2SR with random weights (its residual head starts as the identity)."""
    from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

    torch.manual_seed(0)
    return AstroSwin2SR(AstroSwin2SRConfig.named("tiny")).eval()


@pytest.fixture(scope="session")
def perturbed_model():
    """A tiny model whose head is *not* zero, so its output really depends on the input."""
    from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig

    torch.manual_seed(1)
    model = AstroSwin2SR(AstroSwin2SRConfig.named("tiny")).eval()
    with torch.no_grad():
        model.resample.weight.normal_(0, 0.02)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model) -> Path:
    """The tiny model saved in save_pretrained format (for --model FOLDER)."""
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(folder)
    return folder


def gaussian_stars(shape, positions, fluxes, fwhm):
    """Pixel-integrated Gaussian stars (exact flux) on a zero background."""
    from astroswin.train.scenes import _render_points

    ys, xs = np.asarray(positions, float).T
    return _render_points(shape, ys, xs, np.asarray(fluxes, float)[None, :], fwhm)[0]


@pytest.fixture(scope="session")
def star_field():
    """(truth, observed, info): 128x128 stars, FWHM 1.3 truth, Moffat 3 px blur, noise, sky 100."""
    from astroswin.train import psf
    from astroswin.train.degrade import add_noise, convolve

    rng = np.random.default_rng(5)
    n = 40
    pos = np.stack([rng.uniform(10, 118, n), rng.uniform(10, 118, n)], axis=1)
    flux = 10 ** rng.uniform(3.0, 4.5, n)
    truth = gaussian_stars((128, 128), pos, flux, 1.3)
    observed = add_noise(rng, convolve(truth[None], [psf.moffat(3.0, 3.0)]), 100.0, 2.0, 2.0)[0]
    return truth + 100.0, observed.astype(np.float32), {"positions": pos, "fluxes": flux}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
