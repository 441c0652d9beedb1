"""The model: shapes, identity at initialisation, exact save/load, and every loading path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from astroswin.engine import EngineError, load_model
from astroswin.engine.loading import load_folder
from astroswin.engine.model import NAMED_CONFIGS, AstroSwin2SR, AstroSwin2SRConfig


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 13, 21), (1, 3, 1, 1), (1, 3, 64, 40)])
def test_same_size_output_any_shape(tiny_model, shape):
    x = torch.rand(shape)
    with torch.inference_mode():
        y = tiny_model(x)
    assert y.shape == x.shape


def test_zero_head_is_identity_and_residual_is_added(tiny_model, perturbed_model):
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(tiny_model(x), x)
        assert not torch.allclose(perturbed_model(x), x)


def test_rejects_wrong_channel_count(tiny_model):
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        tiny_model(torch.rand(1, 1, 8, 8))


def test_named_configs_and_unknown_name():
    assert NAMED_CONFIGS["lightweight"]["embed_dim"] == 60
    assert NAMED_CONFIGS["lightweight"]["depths"] == [6, 6, 6, 6]
    cfg = AstroSwin2SRConfig.named("small")
    assert cfg.upscale == 1 and cfg.residual
    with pytest.raises(ValueError, match="unknown model config"):
        AstroSwin2SRConfig.named("huge")


def test_save_pretrained_round_trip_is_exact(tmp_path, perturbed_model):
    perturbed_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_model(str(tmp_path))
    x = torch.rand(1, 3, 24, 24)
    with torch.inference_mode():
        assert torch.equal(loaded(x), perturbed_model(x))
    for (k, a), (_, b) in zip(perturbed_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_loads_original_astroswin_layout(tmp_path):
    """The original checkpoint: a plain Swin2SR config, keys swin2sr.* and resample.*, no residual."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    ref = AstroSwin2SR(AstroSwin2SRConfig(residual=False, **NAMED_CONFIGS["tiny"]))
    with torch.no_grad():
        ref.resample.weight.normal_(0, 0.05)
    config = {k: v for k, v in ref.config.to_dict().items() if k not in ("residual",)}
    config["model_type"] = "swin2sr"
    config["upscale"] = 2
    config["upsampler"] = "pixelshuffledirect"
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    state["upsample.conv.weight"] = torch.zeros(12, 8, 3, 3)  # the discarded x2 head: ignored
    save_file(state, tmp_path / "model.safetensors")
    model = load_folder(tmp_path)
    assert model.config.residual is False
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(model(x), ref(x))


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(EngineError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(EngineError, match="unreadable config.json"):
        load_model(str(tmp_path))
    with pytest.raises(EngineError, match="unknown model 'no such thing'"):
        load_model("no such thing")


def test_hub_id_offline_fails_with_one_clear_line(tmp_path):
    code = "from astroswin.engine import load_model\nload_model('caidas/swin2SR-lightweight-x2-64')"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "caidas/swin2SR-lightweight-x2-64" in last and "unreachable" in last


def test_hub_probe_and_cache_only_load_when_the_endpoint_is_down(monkeypatch):
    """Offline, the hub client retries for a minute or more; one probe of the endpoint decides
    instead, and then only the local cache is tried (a warm cache still loads)."""
    import socket

    import transformers
    from huggingface_hub import constants

    from astroswin.engine import loading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert loading.hub_reachable(timeout=2.0)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # closed port: refused
    assert not loading.hub_reachable(timeout=2.0)
    calls = []

    def from_pretrained(hub_id, **kwargs):
        calls.append(kwargs)
        raise OSError("cannot find the requested files in the local cache")

    monkeypatch.setattr(transformers.Swin2SRModel, "from_pretrained", from_pretrained)
    with pytest.raises(EngineError, match="owner/name.*unreachable"):
        load_model("owner/name")
    assert calls == [{"local_files_only": True}]


def test_bundled_default_model_is_trained():
    """The shipped default must exist and must not be the untrained identity."""
    model = load_model("small")
    assert float(model.resample.weight.detach().abs().sum()) > 0
    x = torch.from_numpy(np.random.default_rng(0).normal(0.1, 0.03, (1, 3, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        assert (model(x) - x).abs().mean() > 1e-4
