"""The noise levels a step trains on: each sampler's distribution has the shape it promises."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.engine.flow import flux_mu, sample_sigmas

N = 20_000


def _draw(method: str, tokens: int = 256, mean: float = 0.0, std: float = 1.0, seed: int = 0) -> torch.Tensor:
    return sample_sigmas(N, method, tokens, mean, std, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["uniform", "sigmoid", "logit_normal", "shift"])
def test_every_sampler_stays_strictly_inside_0_1(method: str) -> None:
    sigmas = _draw(method, mean=1.5, std=2.0)
    assert sigmas.shape == (N,)
    assert bool(((sigmas > 0) & (sigmas < 1)).all())


def test_logit_normal_centres_on_its_mean_and_weights_the_middle() -> None:
    sigmas = _draw("logit_normal")
    assert sigmas.median().item() == pytest.approx(0.5, abs=0.02)
    # logit(sigma) is standard normal: ~68% of levels fall within sigmoid(+-1) = (0.27, 0.73)
    middle = ((sigmas > 1 / (1 + math.e)) & (sigmas < 1 / (1 + math.exp(-1)))).float().mean().item()
    assert middle == pytest.approx(0.683, abs=0.02)
    # uniform puts only 46% there: the middle levels, where the model learns most, are favoured
    assert ((_draw("uniform") > 0.27) & (_draw("uniform") < 0.73)).float().mean().item() < 0.5
    # the mean moves the median to sigmoid(mean); a wider std pushes mass towards the ends
    assert _draw("logit_normal", mean=1.0).median().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.02)
    assert _draw("logit_normal", mean=-1.0).median().item() == pytest.approx(1 / (1 + math.exp(1.0)), abs=0.02)
    wide = _draw("logit_normal", std=3.0)
    assert ((wide < 0.05) | (wide > 0.95)).float().mean() > 3 * ((sigmas < 0.05) | (sigmas > 0.95)).float().mean()


def test_sigmoid_is_the_standard_logit_normal_whatever_the_mean_setting() -> None:
    assert torch.equal(_draw("sigmoid", mean=2.0, std=3.0), _draw("logit_normal"))


def test_shift_moves_levels_towards_noise_more_for_larger_images() -> None:
    small, large = _draw("shift", tokens=256), _draw("shift", tokens=4096)  # 256 px and 1024 px with FLUX's VAE
    expected = lambda mu: math.exp(mu) / (math.exp(mu) + 1)  # noqa: E731  (the shifted median of logit-normal)
    assert small.median().item() == pytest.approx(expected(flux_mu(256)), abs=0.02)
    assert large.median().item() == pytest.approx(expected(flux_mu(4096)), abs=0.02)
    assert 0.5 < small.median().item() < large.median().item()
