from pathlib import Path

import pytest

from trainer.engine import ConfigError, TrainConfig
from trainer.engine.config import resolution_sides
from trainer.engine.generation import GenerateConfig


def test_from_dict_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(ConfigError, match="learnin_rate"):
        TrainConfig.from_dict({"learnin_rate": 1e-4, "steps": 10})


def test_from_dict_rejects_wrong_types() -> None:
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig.from_dict({"steps": "ten"})
    with pytest.raises(ConfigError, match="resume"):
        TrainConfig.from_dict({"resume": "yes"})


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(base="tiny", images_dir="in", output_dir="out", sample_prompts=["a", "b"], learning_rate=3e-4)
    assert TrainConfig.from_yaml(config.to_yaml(tmp_path / "c.yaml")) == config


def test_resolve_takes_the_preset_defaults() -> None:
    resolved = TrainConfig(base="tiny", images_dir="in", output_dir="out", lora_rank=8).resolve()
    assert (resolved.resolution, resolved.max_sequence_length, resolved.lora_alpha) == (64, 32, 8.0)
    assert TrainConfig(base="flux-dev", images_dir="i", output_dir="o").resolve().resolution == 1024


@pytest.mark.parametrize(
    ("change", "message"),
    [({"resolution": 70}, "multiple of 16"), ({"images_dir": ""}, "images_dir"), ({"memory_mode": "tiny"}, "memory_mode"),
     ({"caption_dropout": 1.5}, "caption_dropout"), ({"timestep_sampling": "cosine"}, "timestep_sampling"),
     ({"cuda_graphs": True}, "cuda_graphs .* needs compile: true"),
     ({"steps": 10, "warmup_steps": 11}, r"warmup_steps \(11\) is more than steps \(10\)")],
)  # fmt: skip
def test_resolve_names_the_bad_setting(change: dict, message: str) -> None:
    values = {"base": "tiny", "images_dir": "in", "output_dir": "out", **change}
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values).resolve()


def test_generate_config_accepts_lora_pairs_from_yaml_lists() -> None:
    config = GenerateConfig.from_dict({"base": "tiny", "prompt": "x", "loras": [["out/lora.safetensors", 0.8]]})
    assert config.loras == [["out/lora.safetensors", 0.8]]
    assert config.resolve().width == 64
    with pytest.raises(ConfigError):
        GenerateConfig.from_dict({"loras": [["a", 1.0, 2]]})


def test_one_parser_reads_every_form_of_the_resolution_setting() -> None:
    """The engine, the launch form, the API and the studio's pages all read the setting with it."""
    assert resolution_sides(None) == [] and resolution_sides(512) == [512] and resolution_sides(1024.0) == [1024]
    assert resolution_sides([1024, 512.0, 768, 512]) == [512, 768, 1024]
    assert resolution_sides("1024, 512,768 512") == [512, 768, 1024] and resolution_sides(" 64 ") == [64]
    for bad, message in (("512, big", "'big' is not a whole number of pixels"), (512.5, "512.5 is not a whole number"),
                         ([512, True], "True is not a whole number"), ("", "give a size in pixels"),
                         ([], "give a size in pixels")):
        with pytest.raises(ValueError, match=message):
            resolution_sides(bad)
