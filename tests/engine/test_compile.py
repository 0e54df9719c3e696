"""`compile: true` trains the same adapter as eager mode, and a compiled run resumes exactly.

`cuda_graphs: true` is asked for too: off CUDA it is left off with a log line, nothing else.

Slow: compiling the two block kinds of the tiny base takes about a minute on two cores with a cold
Inductor cache (CI's case); the figures it buys are in bench/README-train.md.
"""

import shutil
from pathlib import Path

import pytest

from trainer.engine import TrainResult, train

from .conftest import RecordingHooks, train_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(trained: tuple[TrainResult, RecordingHooks], tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, RecordingHooks, int]:
    import torch._dynamo.utils

    full, _ = trained
    compiled_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    hooks = RecordingHooks()
    config = train_config(_setting(full, "base"), _setting(full, "images_dir"), tmp_path_factory.mktemp("compiled"),
                          compile=True, cuda_graphs=True, steps=6, checkpoint_every=3, val_every=3, sample_every=0)  # fmt: skip
    result = train(config, hooks)
    return result, hooks, torch._dynamo.utils.counters["stats"]["unique_graphs"] - compiled_before


def test_compiled_training_computes_what_eager_training_does(
    trained: tuple[TrainResult, RecordingHooks], compiled: tuple[TrainResult, RecordingHooks, int]
) -> None:
    full, _ = trained
    result, hooks, graphs = compiled
    assert graphs >= 2 and any("compiling the transformer blocks" in line for line in hooks.logs)
    assert any("no CUDA graphs on cpu" in line for line in hooks.logs)  # cuda_graphs is CUDA's alone, said so
    # The same steps, up to float rounding (Inductor fuses and reorders the elementwise work).
    assert result.losses == pytest.approx(full.losses[:6], rel=1e-4)
    # Validation runs eagerly: before training it is the eager run's number exactly.
    assert result.val_losses[0] == full.val_losses[0]
    assert [step for step, _ in result.val_losses] == [0, 3, 6]
    assert result.val_losses[2][1] < result.val_losses[0][1]  # and it learns
    # Samples (eager too) and the final files come out as usual.
    assert result.lora_path is not None and result.lora_path.is_file() and result.sample_paths


def test_a_compiled_run_resumes_exactly(compiled: tuple[TrainResult, RecordingHooks, int], tmp_path: Path) -> None:
    result, _, _ = compiled
    out = tmp_path / "resumed"
    shutil.copytree(result.config_path.parent / "checkpoints" / "step-000003", out / "checkpoints" / "step-000003")
    config = train_config(_setting(result, "base"), _setting(result, "images_dir"), out, compile=True, steps=6,
                          resume=True, checkpoint_every=3, val_every=3, sample_prompts=[])  # fmt: skip
    hooks = RecordingHooks()
    resumed = train(config, hooks)
    assert hooks.steps == [4, 5, 6]
    assert resumed.losses == result.losses and resumed.val_losses == result.val_losses


def _setting(result: TrainResult, key: str) -> Path:
    import yaml

    return Path(yaml.safe_load(result.config_path.read_text())[key])
