"""``astroswin plugins``: where the host scripts are, and copying them into a host's folder."""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from pathlib import Path

import click

SCRIPTS = {"siril": Path("siril") / "AstroSWIN.py", "pixinsight": Path("pixinsight") / "AstroSWIN.js"}


def script_path(host: str) -> Path:
    """The packaged script of ``host`` (``siril`` or ``pixinsight``)."""
    return Path(__file__).resolve().parent / SCRIPTS[host]


def default_folder(host: str) -> Path | None:
    """The host's user script folder, where one is standard.

    Siril 1.4 reads user scripts from its configured script folders (by default
    ``~/.local/share/siril-scripts`` on Linux, ``%APPDATA%/siril-scripts`` on Windows,
    ``~/Library/Application Support/org.siril.Siril/siril-scripts`` on macOS); PixInsight has no
    standard folder (add any folder to Script > Feature Scripts), so ``--dir`` is required.
    """
    if host != "siril":
        return None
    if sys.platform.startswith("win"):
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "siril-scripts" / "processing"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "org.siril.Siril" / "siril-scripts" / "processing"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "siril-scripts" / "processing"  # empty counts as unset (XDG spec)


@click.command("plugins")
@click.option("--install", "host", type=click.Choice(sorted(SCRIPTS)), default=None, help="Copy this host's script into its script folder.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None, help="Target folder (required for PixInsight: a folder you add to Feature Scripts).")
@click.option("--overwrite", is_flag=True, help="Replace a different file of the same name.")
def plugins_command(host: str | None, folder: Path | None, overwrite: bool) -> None:
    """Show where the Siril and PixInsight scripts are, or install one (--install HOST)."""
    if host is None:
        for name in sorted(SCRIPTS):
            click.echo(f"{name}: {script_path(name)}")
        return
    source = script_path(host)
    folder = folder or default_folder(host)
    if folder is None:
        click.echo(f"astroswin: error: {host}: give --dir (a folder you add to PixInsight's Script > Feature Scripts)", err=True)
        sys.exit(1)
    target = folder / source.name
    if target.exists() and not overwrite and not filecmp.cmp(source, target, shallow=False):
        click.echo(f"astroswin: error: {target} exists and differs (use --overwrite to replace it)", err=True)
        sys.exit(1)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    except OSError as exc:
        click.echo(f"astroswin: error: cannot copy to {target} ({exc.strerror or exc})", err=True)
        sys.exit(1)
    click.echo(f"installed {host} script: {target}")
