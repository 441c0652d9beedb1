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


#: The recipe of the average bundled from 2026-11-28 evening (MODEL_CARD.md, *What ships*;
#: README, *Training*): committed training states under train/resume, each exported as its EMA
#: weights, and their shares. The average is kept as ``train/resume/average``, the start of
#: later fine-tunes.
AVERAGE_RECIPE = (("emission.pt", 0.4), ("galaxy.pt", 0.4), ("colour.pt", 0.2))
AVERAGE = ROOT / "train" / "resume" / "average"


def test_the_kept_average_is_the_recorded_average_of_committed_runs(tmp_path):
    """Rebuilt from the committed states, so neither the weights nor the recipe can change
    without the other."""
    from astroswin.train.loop import export_pretrained

    resume = ROOT / "train" / "resume"
    parts = [(export_pretrained(resume / state, tmp_path / state), share) for state, share in AVERAGE_RECIPE]
    result = CliRunner().invoke(average_weights.main, [*_parts(*parts), "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    rebuilt = load_folder(tmp_path / "avg").state_dict()
    kept = load_folder(AVERAGE).state_dict()
    assert rebuilt.keys() == kept.keys()
    assert all(torch.equal(rebuilt[k], kept[k]) for k in kept)


#: The recipe of the weights bundled since 2026-11-29 evening (MODEL_CARD.md, *What ships*):
#: the kept average and the run that fine-tuned it with ``star_shape`` (train/configs/shape.toml).
SHIPPED_RECIPE = ((AVERAGE, 0.5), ("shape.pt", 0.5))


def test_shipped_weights_are_the_recorded_average_of_the_kept_average_and_a_committed_run(tmp_path):
    from astroswin.train.loop import export_pretrained

    resume = ROOT / "train" / "resume"
    parts = [(part if isinstance(part, Path) else export_pretrained(resume / part, tmp_path / part), share) for part, share in SHIPPED_RECIPE]
    result = CliRunner().invoke(average_weights.main, [*_parts(*parts), "--out", str(tmp_path / "shipped")])
    assert result.exit_code == 0, result.output
    rebuilt = load_folder(tmp_path / "shipped").state_dict()
    shipped = load_folder(ROOT / "engine" / "weights" / "small").state_dict()
    assert rebuilt.keys() == shipped.keys()
    assert all(torch.equal(rebuilt[k], shipped[k]) for k in shipped)
    kept = load_folder(AVERAGE).state_dict()
    assert sum(not torch.equal(shipped[k], kept[k]) for k in kept) >= 10  # the run really moved them
