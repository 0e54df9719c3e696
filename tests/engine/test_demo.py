"""The shipped `demo` base draws what its prompts say, and a short LoRA on it learns a new concept.

Metrics are defined in trainer/engine/demo/fidelity.py. Thresholds sit below what the shipped
weights measure (see the report in bench/demo_fidelity.py), with room for seed-to-seed noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.engine import BASE_PRESETS
from trainer.engine.demo import WEIGHTS_DIR
from trainer.engine.demo.fidelity import (
    CONCEPT_TRIGGER,
    base_accuracy,
    concept_score,
    lora_fidelity,
    prompt_accuracy,
    train_concept_lora,
)
from trainer.engine.demo.preset import DEMO_PRESET
from trainer.engine.demo.scenes import Scene, concept_scenes, draw

SEEDS = [0, 1, 2, 3]  # renders are cheap; fewer seeds make the concept score noisy (0.13 on seeds 0-1, 0.50 on 2-3)


@pytest.fixture(scope="module")
def demo_pipeline():  # type: ignore[no-untyped-def]
    """The shipped base, rendered with 2 threads (the figures were measured so); restored after."""
    import torch

    from trainer.engine.models import load_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    pipeline = load_pipeline("demo", "cpu")
    pipeline.set_progress_bar_config(disable=True)
    yield pipeline
    torch.set_num_threads(threads)


def test_preset_and_shipped_weights() -> None:
    assert BASE_PRESETS["demo"] == DEMO_PRESET
    size = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert size < 12 * 2**20, f"shipped weights are {size / 2**20:.1f} MB"
    assert (WEIGHTS_DIR / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def test_metrics_on_drawn_scenes() -> None:
    """The metrics give full marks to the procedural pictures they were designed around."""
    scene = draw(Scene("red", "circle", "blue"))
    assert prompt_accuracy(scene, "red", "blue") == 1.0
    assert prompt_accuracy(scene, "blue", "red") == 0.0
    assert concept_score(scene) == 0.0
    assert concept_score(draw(concept_scenes(1, seed=0)[0])) > 0.9
    from trainer.engine.demo.layout import LAYOUT_PROMPTS, score_image

    for colour, shape, where, background in LAYOUT_PROMPTS:
        assert score_image(draw(Scene(colour, shape, background, where)), colour, shape, where, background) == (
            1.0, True, True if where else None)  # fmt: skip
    # a square drawn where a circle was asked for fits the square mask better
    _, right_shape, _ = score_image(draw(Scene("red", "square", "blue")), "red", "circle", "", "blue")
    assert not right_shape


def test_base_draws_the_colours_prompts_name(demo_pipeline) -> None:  # type: ignore[no-untyped-def]
    scores = base_accuracy(demo_pipeline, SEEDS)
    print(f"base prompt colour accuracy {scores.accuracy:.3f}: {scores.per_prompt}")
    # chance is 1/8 per region; the shipped base measures ~0.73 over 4 seeds (bench/demo_fidelity.py)
    assert scores.accuracy >= 0.6, scores.per_prompt
    # word order reaches the model: red/blue land right both ways round
    assert scores.per_prompt["a red circle on a blue background"] >= 0.75, scores.per_prompt
    assert scores.per_prompt["a blue circle on a red background"] >= 0.75, scores.per_prompt


def test_base_puts_the_shape_where_the_prompt_says(demo_pipeline) -> None:  # type: ignore[no-untyped-def]
    """Metrics in trainer/engine/demo/layout.py; placed prompts only (left, right, top, bottom)."""
    from trainer.engine.demo.layout import LAYOUT_PROMPTS, layout_scores

    scores = layout_scores(demo_pipeline, SEEDS, [p for p in LAYOUT_PROMPTS if p[2]])
    print(scores)
    # measured on the shipped base, seeds 0-3: position 0.94 (chance 0.5), IoU with the drawn shape
    # 0.55; shape accuracy (best IoU among circle/square/triangle) 0.5, too close to chance (1/3)
    # across seeds to assert: the base places shapes but tells them apart only weakly
    assert scores.position_accuracy >= 0.75, scores
    assert scores.shape_iou >= 0.4, scores


@pytest.fixture(scope="module")
def concept_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_concept_lora(tmp_path_factory.mktemp("demo-lora"), steps=100)


def test_lora_learns_the_concept_and_leaves_other_prompts(demo_pipeline, concept_lora: Path) -> None:  # type: ignore[no-untyped-def]
    scores = lora_fidelity(demo_pipeline, concept_lora, SEEDS)
    print(scores)
    # the trigger word now brings the checkerboard the base never drew (measured 0.09 -> 0.23)
    assert scores.trigger_before < 0.2, scores
    assert scores.trigger_after - scores.trigger_before >= 0.12, scores
    # prompts without the trigger keep their colours (0.75 -> 0.75), barely show the pattern
    # (measured 0.036 -> 0.069) and change far less (7.7 vs 51.4 mean |pixel change| of 255)
    assert scores.other_after < scores.trigger_after, scores
    assert scores.other_accuracy_after >= scores.other_accuracy_before - 0.125, scores
    # Prior preservation keeps other prompts close to the base: little checkerboard, small change.
    assert scores.other_after - scores.other_before < 0.06, scores
    assert scores.other_change < 0.3 * scores.trigger_change, scores
    captions = [p.read_text() for p in Path(concept_lora).parents[1].joinpath("data").glob("*.txt")]
    assert sum(CONCEPT_TRIGGER in c for c in captions) == 16 and len(captions) == 32


def test_pretrain_demo_smoke_run_trains_and_is_reproducible(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`pretrain-demo --smoke` runs every stage for real in seconds; the same seed gives the same bytes."""
    import torch
    from safetensors.torch import load_file

    from trainer.engine.cli import main
    from trainer.engine.demo.build import DemoSpec, build_demo_pipeline

    threads = torch.get_num_threads()
    for name in ("a", "b"):
        assert main(["pretrain-demo", "--smoke", "--out", str(tmp_path / name), "--seed", "3"]) == 0
    assert torch.get_num_threads() == threads  # pretraining pins 2 threads only while it runs
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.safetensors"))
    assert {f.parts[0] for f in files} >= {"transformer", "vae"}
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    # it really trained: the saved transformer is not the untrained one, and the log shows a loss
    saved = load_file(str(tmp_path / "a" / "transformer" / "diffusion_pytorch_model.safetensors"))
    untrained = build_demo_pipeline(DemoSpec(seed=3)).transformer.state_dict()
    assert any(not torch.equal(value.float(), untrained[key].half().float()) for key, value in saved.items())
    assert "step 1/3 loss" in (tmp_path / "a" / "pretrain.log").read_text()
    # without --out a smoke run would overwrite the shipped weights: refused
    assert main(["pretrain-demo", "--smoke"]) == 2
    assert "--smoke needs --out" in capsys.readouterr().err


def test_pretrain_demo_command_parses() -> None:
    from trainer.engine.cli import parse_args

    args = parse_args(["pretrain-demo", "--out", "somewhere", "--steps", "3", "--vae-steps", "2", "--seed", "1"])
    assert (args.command, args.steps, args.vae_steps, args.seed, str(args.out)) == ("pretrain-demo", 3, 2, 1, "somewhere")
