import importlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.engine import BASE_PRESETS, BaseModelLoadError, load_pipeline
from trainer.engine.hub_errors import explain_load_failure
from trainer.engine.tiny import build_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_base_without_a_preset_gets_the_defaults_of_its_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Schnell named by its hub id, or any base whose transformer has no guidance embedding (a
    local folder, or a hub id in the cache), samples like schnell (4 steps, no guidance, 256 T5
    tokens); other bases get dev's defaults."""
    import json

    from trainer.engine.presets import preset_for

    schnell, dev = BASE_PRESETS["flux-schnell"], BASE_PRESETS["flux-dev"]
    by_id = preset_for("black-forest-labs/FLUX.1-schnell")
    assert (by_id.sample_steps, by_id.sample_guidance, by_id.max_sequence_length) == (4, 0.0, 256)
    assert by_id.name == "black-forest-labs/FLUX.1-schnell"
    folder = tmp_path / "my-schnell"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": False}))
    assert preset_for(str(folder)).sample_steps == schnell.sample_steps
    (folder / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": True}))
    assert preset_for(str(folder)).sample_steps == dev.sample_steps
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--fast-flux" / "snapshots" / ("0" * 40) / "transformer"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"guidance_embeds": False}))
    (cache / "models--someone--fast-flux" / "refs").mkdir()
    (cache / "models--someone--fast-flux" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert preset_for("someone/fast-flux").sample_steps == schnell.sample_steps
    assert preset_for("someone/not-cached").sample_steps == dev.sample_steps


def test_local_folder_and_name_checks_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BaseModelLoadError, match="not a preset"):
        load_pipeline("no-such-model")
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(BaseModelLoadError, match="missing transformer"):
        load_pipeline(str(tmp_path))


def test_a_hub_id_with_no_network_says_so_in_a_clean_process(tmp_path: Path) -> None:
    """Really through diffusers' loading code, offline, with an empty cache and no token.

    A child process, so HF_HUB_OFFLINE and HF_HOME apply from the first import of
    huggingface_hub (it reads them once) and no token on this machine can reach the network.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    code = (
        "from trainer.engine import BaseModelLoadError, load_pipeline\n"
        "try:\n    load_pipeline('black-forest-labs/FLUX.1-dev')\n"
        "except BaseModelLoadError as error:\n    print('MESSAGE', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    message = next((line for line in done.stdout.splitlines() if line.startswith("MESSAGE")), done.stdout + done.stderr)
    assert "black-forest-labs/FLUX.1-dev is not in the local cache and the hub cannot be reached" in message
    assert "HF_HUB_OFFLINE=1" in message


# --- the explainer, fed the errors the hub raises, wrapped the way diffusers wraps them ----------

SOURCE = "black-forest-labs/FLUX.1-dev"


def _hub_error(kind: type[Exception], status: int, message: str = "hub said no") -> Exception:
    """A huggingface_hub HTTP error with a real response object, as `model_info` raises it."""
    from huggingface_hub.errors import Response

    http = importlib.import_module(Response.__module__.split(".")[0])  # the HTTP library the hub uses
    url = f"https://huggingface.co/api/models/{SOURCE}"
    return kind(message, response=http.Response(status, request=http.Request("GET", url)))


def _as_diffusers_raises(cause: BaseException) -> OSError:
    """diffusers catches model_info's error, retries the cache, then raises this `from` the cause."""
    try:
        try:
            raise cause
        except Exception as first:
            try:
                raise FileNotFoundError("Cannot find an appropriate cached snapshot folder")
            except FileNotFoundError as missing:
                raise OSError(f"Cannot load model {SOURCE}: the model is not fully cached locally ({missing})") from first
    except OSError as wrapped:
        return wrapped


def test_gated_model_without_a_token_asks_for_one() -> None:
    from huggingface_hub.errors import GatedRepoError

    error = _as_diffusers_raises(_hub_error(GatedRepoError, 401, "Access to model is restricted"))
    message = explain_load_failure(SOURCE, error, has_token=False)
    assert message.startswith(f"{SOURCE} is a gated model: accept its license on https://huggingface.co/{SOURCE}")
    assert "set HF_TOKEN" in message and "cannot be reached" not in message
    with_token = explain_load_failure(SOURCE, error, has_token=True)
    assert "token has no access" in with_token and "set HF_TOKEN" not in with_token


def test_a_typo_in_the_id_says_not_found() -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    error = _as_diffusers_raises(_hub_error(RepositoryNotFoundError, 401, "Repository Not Found"))
    message = explain_load_failure("black-forest-labs/FLUX.1-dvv", error, has_token=True)
    assert message == ("black-forest-labs/FLUX.1-dvv was not found on the Hugging Face hub: check the spelling of the "
                       "id, or give a local folder.")  # fmt: skip


def test_no_network_says_so() -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    for cause in (OfflineModeIsEnabled("offline mode is enabled"), socket.gaierror(-2, "Name or service not known")):
        message = explain_load_failure(SOURCE, _as_diffusers_raises(cause), has_token=False)
        assert "not in the local cache and the hub cannot be reached" in message, cause


def test_hub_status_errors_say_what_went_wrong() -> None:
    from huggingface_hub.errors import HfHubHTTPError

    busy = explain_load_failure(SOURCE, _as_diffusers_raises(_hub_error(HfHubHTTPError, 503)), has_token=True)
    assert "busy or failing (HTTP 503)" in busy
    refused = explain_load_failure(SOURCE, _hub_error(HfHubHTTPError, 401), has_token=True)
    assert "refused access" in refused and "HF_TOKEN is valid" in refused


def test_a_local_folder_missing_weights_says_it_is_incomplete(tiny_base: Path, tmp_path: Path) -> None:
    """Every part folder is there, but the transformer's weights are not: diffusers' own error, named."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BaseModelLoadError) as caught:
        load_pipeline(str(broken))
    message = str(caught.value)
    assert message.startswith(f"{broken} is incomplete: ") and "diffusion_pytorch_model" in message
    assert "Copy the whole diffusers folder again" in message
