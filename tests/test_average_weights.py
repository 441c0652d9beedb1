"""Tests of scripts/average_weights.py: the average is exact, and what cannot be averaged is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import average_weights  # noqa: E402

from astroswin.engine.loading import load_folder  # noqa: E402
from astroswin.engine.model import AstroSwin2SR, AstroSwin2SRConfig  # noqa: E402


def _saved(folder: Path, seed: int, **config) -> Path:
    torch.manual_seed(seed)
    AstroSwin2SR(AstroSwin2SRConfig.named("tiny", **config)).save_pretrained(folder)
    return folder


def test_average_is_the_weighted_mean_of_every_tensor_and_loads_in_the_engine(tmp_path):
    a, b = _saved(tmp_path / "a", 0), _saved(tmp_path / "b", 1)
    result = CliRunner().invoke(average_weights.main, [str(a), str(b), "--fraction", "0.3", "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    sa, sb = load_folder(a).state_dict(), load_folder(b).state_dict()
    mixed = load_folder(tmp_path / "avg").state_dict()
    assert sum(not torch.equal(sa[k], sb[k]) for k in sa) >= 10  # the two really differ (not the zero-initialised head)
    for name, value in mixed.items():
        expected = (0.7 * sa[name].double() + 0.3 * sb[name].double()).to(value.dtype) if value.is_floating_point() else sa[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)


def test_refuses_other_architectures_and_an_existing_model(tmp_path):
    a = _saved(tmp_path / "a", 0)
    other = _saved(tmp_path / "other", 0, embed_dim=24)
    runner = CliRunner()
    result = runner.invoke(average_weights.main, [str(a), str(other), "--fraction", "0.5", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "different configs" in result.output
    assert not (tmp_path / "x" / "model.safetensors").exists()
    before = (a / "model.safetensors").read_bytes()
    result = runner.invoke(average_weights.main, [str(a), str(a), "--fraction", "0.5", "--out", str(a)])
    assert result.exit_code != 0 and "already holds a model" in result.output
    assert (a / "model.safetensors").read_bytes() == before


def test_shipped_weights_are_the_recorded_average_of_two_committed_runs(tmp_path):
    """What ships (MODEL_CARD.md, *What ships*): 0.7 of ``sharpen_linear``'s run
    (``train/resume/last.pt``) and 0.3 of ``emission.toml``'s (``train/resume/emission.pt``),
    each exported as its EMA weights. Rebuilt here so neither the weights nor the recipe can
    change without the other."""
    from astroswin.train.loop import export_pretrained

    resume = ROOT / "train" / "resume"
    first = export_pretrained(resume / "last.pt", tmp_path / "sharpen_linear")
    second = export_pretrained(resume / "emission.pt", tmp_path / "emission")
    result = CliRunner().invoke(average_weights.main, [str(first), str(second), "--fraction", "0.3", "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    rebuilt = load_folder(tmp_path / "avg").state_dict()
    shipped = load_folder(ROOT / "engine" / "weights" / "small").state_dict()
    assert rebuilt.keys() == shipped.keys()
    assert all(torch.equal(rebuilt[k], shipped[k]) for k in shipped)
