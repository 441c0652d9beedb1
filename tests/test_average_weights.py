"""Tests of scripts/average_weights.py: the average is exact, what cannot be averaged is refused,
and the bundled weights are the recorded average of committed runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
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


def _parts(*pairs) -> list[str]:
    return [arg for folder, share in pairs for arg in ("--part", str(folder), str(share))]


def test_average_is_the_weighted_mean_of_every_tensor_and_loads_in_the_engine(tmp_path):
    a, b, c = (_saved(tmp_path / name, seed) for seed, name in enumerate("abc"))
    result = CliRunner().invoke(average_weights.main, [*_parts((a, 0.5), (b, 0.3), (c, 0.2)), "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    sa, sb, sc = (load_folder(folder).state_dict() for folder in (a, b, c))
    mixed = load_folder(tmp_path / "avg").state_dict()
    assert sum(not torch.equal(sa[k], sb[k]) for k in sa) >= 10  # they really differ (not the zero-initialised head)
    for name, value in mixed.items():
        expected = (0.5 * sa[name].double() + 0.3 * sb[name].double() + 0.2 * sc[name].double()).to(value.dtype) if value.is_floating_point() else sa[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)


def test_refuses_other_architectures_and_an_existing_model(tmp_path):
    a = _saved(tmp_path / "a", 0)
    other = _saved(tmp_path / "other", 0, embed_dim=24)
    runner = CliRunner()
    result = runner.invoke(average_weights.main, [*_parts((a, 0.5), (other, 0.5)), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "different configs" in result.output
    assert not (tmp_path / "x" / "model.safetensors").exists()
    before = (a / "model.safetensors").read_bytes()
    result = runner.invoke(average_weights.main, [*_parts((a, 0.5), (a, 0.5)), "--out", str(a)])
    assert result.exit_code != 0 and "already holds a model" in result.output
    assert (a / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(("shares", "message"), [((0.5, 0.4), "sum to 0.9"), ((1.0,), "at least two")])
def test_refuses_shares_that_do_not_make_an_average(tmp_path, shares, message):
    """Shares summing to other than 1 would scale every weight, the output with them."""
    folders = [_saved(tmp_path / f"m{k}", k) for k in range(len(shares))]
    result = CliRunner().invoke(average_weights.main, [*_parts(*zip(folders, shares)), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_not_a_model_is_one_line_not_a_traceback(tmp_path):
    a = _saved(tmp_path / "a", 0)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(average_weights.main, [*_parts((a, 0.5), (tmp_path / "empty", 0.5)), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # not an escaped EngineError
    assert result.output.strip().splitlines()[-1] == f"Error: model folder {tmp_path / 'empty'} has no config.json"
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


#: Every recorded average (MODEL_CARD.md, *What ships* and *Resume*): the folder that holds it and
#: its parts, each a committed training state under train/resume (exported as its EMA weights) or
#: an earlier average, with its share. Each average was bundled in its turn, and is kept as the
#: start of the fine-tunes run from it.
RESUME = ROOT / "train" / "resume"
AVERAGE = RESUME / "average"  # bundled from 2026-11-28 evening
AVERAGE_SHAPE = RESUME / "average_shape"  # bundled from 2026-11-29 evening, + star_shape (shape.toml)
SHIPPED = ROOT / "engine" / "weights" / "small"  # bundled from 2026-11-30, + false_peaks and sky_level (weight 10)
RECIPES = {
    AVERAGE: (("emission.pt", 0.4), ("galaxy.pt", 0.4), ("colour.pt", 0.2)),
    AVERAGE_SHAPE: ((AVERAGE, 0.5), ("shape.pt", 0.5)),
    SHIPPED: ((AVERAGE_SHAPE, 0.5), ("shape_peaks_sky10.pt", 0.5)),
}


@pytest.mark.parametrize("kept", list(RECIPES), ids=lambda folder: folder.name)
def test_every_kept_average_is_its_recorded_recipe_of_committed_runs(tmp_path, kept):
    """Rebuilt from the committed states, so neither the weights nor the recipe can change
    without the other."""
    from astroswin.train.loop import export_pretrained

    parts = [(part if isinstance(part, Path) else export_pretrained(RESUME / part, tmp_path / part), share) for part, share in RECIPES[kept]]
    result = CliRunner().invoke(average_weights.main, [*_parts(*parts), "--out", str(tmp_path / "rebuilt")])
    assert result.exit_code == 0, result.output
    rebuilt = load_folder(tmp_path / "rebuilt").state_dict()
    weights = load_folder(kept).state_dict()
    assert rebuilt.keys() == weights.keys()
    assert all(torch.equal(rebuilt[k], weights[k]) for k in weights)
    first = load_folder(parts[0][0]).state_dict()
    assert sum(not torch.equal(weights[k], first[k]) for k in first) >= 10  # the other parts really moved them
