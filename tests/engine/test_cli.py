from pathlib import Path

from PIL import Image

from trainer.engine.cli import main

from .conftest import TRIGGER


def test_train_then_generate_from_the_command_line(tiny_base: Path, dataset: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    config = tmp_path / "extra.yaml"
    config.write_text("caption_dropout: 0.0\nval_every: 0\nsample_every: 0\n")
    code = main(["train", "--config", str(config), "--base", str(tiny_base), "--images", str(dataset), "--trigger",
                 TRIGGER, "--steps", "3", "--out", str(out), "--rank", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"lora.safetensors", "lora_kohya.safetensors", "config.yaml"}
    assert "caption_dropout: 0.0" in (out / "config.yaml").read_text()
    # no prompt given: one sample of "a photo of <trigger>" at the end, so samples/ is never empty
    assert [p.name for p in (out / "samples").iterdir()] == ["step-000003-0.png"]
    assert f"- a photo of {TRIGGER}" in (out / "config.yaml").read_text()
    image = tmp_path / "img.png"
    code = main(["generate", "--base", str(tiny_base), "--lora", f"{out}:0.8", "--prompt", f"a {TRIGGER}",
                 "--seed", "1", "--steps", "2", "--out", str(image), "--device", "cpu"])  # fmt: skip
    assert code == 0 and Image.open(image).size == (64, 64)


def test_bad_input_exits_with_a_message(dataset: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["train", "--base", "tiny", "--images", str(dataset), "--trigger", "nope", "--out", str(tmp_path)])
    assert code == 2
    assert "lack the trigger word 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "stepz" in capsys.readouterr().err


def test_an_explicit_empty_prompt_list_in_the_config_means_no_samples(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "quiet.yaml"
    config.write_text("sample_prompts: []\nval_every: 0\n")
    out = tmp_path / "out"
    code = main(["train", "--config", str(config), "--base", str(tiny_base), "--images", str(dataset), "--trigger",
                 TRIGGER, "--steps", "1", "--out", str(out), "--rank", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0 and (out / "lora.safetensors").is_file()
    assert not (out / "samples").exists()
