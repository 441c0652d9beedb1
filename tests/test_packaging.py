"""A regular (wheel) install carries the bundled weights, sample, configs and host scripts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_the_package_and_its_data(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"wheel building unavailable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("astroswin-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "astroswin/__init__.py",
        "astroswin/cli.py",
        "astroswin/engine/restore.py",
        "astroswin/engine/weights/small/model.safetensors",
        "astroswin/engine/weights/small/config.json",
        "astroswin/engine/data/sample.fits",
        "astroswin/plugin/siril/AstroSWIN.py",
        "astroswin/plugin/pixinsight/AstroSWIN.js",
        "astroswin/train/configs/stage0.toml",
        "astroswin/train/loop.py",
    ):
        assert required in names, required
    top_level = {n.split("/")[0] for n in names if not n.startswith("astroswin-")}
    assert top_level == {"astroswin"}, top_level  # no generic top-level modules in site-packages


@pytest.mark.skipif(sys.platform.startswith("win") or sys.platform == "darwin", reason="the XDG folder is Linux's")
@pytest.mark.parametrize("xdg", ["", None])
def test_siril_folder_with_xdg_data_home_empty_or_unset(monkeypatch, tmp_path, xdg):
    """An empty XDG_DATA_HOME counts as unset (the XDG spec); it once put the script in
    ./siril-scripts/processing, relative to wherever the command ran."""
    from astroswin.plugin.install import default_folder

    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    assert default_folder("siril") == tmp_path / ".local" / "share" / "siril-scripts" / "processing"
