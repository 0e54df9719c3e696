"""Which optimizer and which compiled form a run gets, per device and memory mode.

The GPU figures behind these choices are in bench/README-train.md; the choices themselves are
decided here, so they are checked without a GPU.
"""

import pytest
import torch

from trainer.engine import TrainConfig, optimizers, training
from trainer.engine.compiling import use_cuda_graphs

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(
    ("memory_mode", "bitsandbytes", "chosen"),
    [("fast", True, "adamw"), ("low", True, "adamw8bit"), ("low", False, "adamw"), ("fast", False, "adamw")],
)
def test_auto_optimizer_is_fused_adamw_unless_low_memory_can_use_8bit(
    monkeypatch: pytest.MonkeyPatch, memory_mode: str, bitsandbytes: bool, chosen: str
) -> None:
    monkeypatch.setattr(optimizers, "can_quantize", lambda device: bitsandbytes)
    assert optimizers.optimizer_name(TrainConfig(memory_mode=memory_mode), CUDA) == chosen
    # a named optimizer is never second-guessed
    assert optimizers.optimizer_name(TrainConfig(memory_mode=memory_mode, optimizer="adafactor"), CUDA) == "adafactor"


def test_the_default_optimizer_on_a_cpu_is_fused_adamw() -> None:
    params = [torch.nn.Parameter(torch.zeros(4))]
    optimizer = training.make_optimizer(params, TrainConfig(), CPU, training.TrainHooks())
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["fused"]


def test_cuda_graphs_only_where_their_memory_reuse_is_safe() -> None:
    assert use_cuda_graphs(True, CUDA, grad_accum=1, checkpointing=False) == (True, "")
    assert use_cuda_graphs(False, CUDA, grad_accum=1, checkpointing=False) == (False, "")
    off_cpu = use_cuda_graphs(True, CPU, grad_accum=1, checkpointing=False)
    assert off_cpu[0] is False and "no CUDA graphs on cpu" in off_cpu[1]
    for grad_accum, checkpointing in ((2, False), (1, True)):
        used, why = use_cuda_graphs(True, CUDA, grad_accum=grad_accum, checkpointing=checkpointing)
        assert not used and "grad_accum 1 and no gradient checkpointing" in why


def test_the_cli_flags_reach_the_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from trainer.engine import cli

    seen: list[TrainConfig] = []
    monkeypatch.setattr(training, "train", lambda config, hooks: seen.append(config) or _Done())
    cli.run_train(cli.parse_args(["train", "--base", "tiny", "--images", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--compile", "--cuda-graphs"]))  # fmt: skip
    assert seen[0].compile is True and seen[0].cuda_graphs is True


class _Done:
    canceled, final_step, lora_path = False, 0, None
