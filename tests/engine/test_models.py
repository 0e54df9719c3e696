from pathlib import Path

import pytest
import torch

from trainer.engine import BASE_PRESETS, BaseModelLoadError, load_pipeline
from trainer.engine.tiny import build_tiny_pipeline


def test_tiny_is_deterministic_and_in_eval_mode() -> None:
    first, second = build_tiny_pipeline(), build_tiny_pipeline()
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(first, name), getattr(second, name)
        assert not a.training
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_presets_carry_their_defaults() -> None:
    assert BASE_PRESETS["flux-dev"].source == "black-forest-labs/FLUX.1-dev"
    assert BASE_PRESETS["flux-schnell"].sample_steps == 4
    assert BASE_PRESETS["tiny"].resolution == 64


def test_load_failures_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BaseModelLoadError, match="not a preset"):
        load_pipeline("no-such-model")
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(BaseModelLoadError, match="missing transformer"):
        load_pipeline(str(tmp_path))
    # A hub id with no network (and nothing cached) explains that instead of a stack trace.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BaseModelLoadError, match="cannot be reached|gated|not found"):
        load_pipeline("black-forest-labs/FLUX.1-dev")
