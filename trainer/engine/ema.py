"""An exponential moving average of the adapter's weights (`ema_decay`), as ai-toolkit offers.

The last step's weights carry the noise of the last few batches; their average over the recent
steps is smoother, and often the better LoRA. The loop trains the live weights as always and,
after each optimizer step, moves the average toward them. What a person gets uses the average:
the final LoRA files, the loadable LoRA of each checkpoint and the sample images; the validation
loss keeps measuring the live weights, which is what the optimizer is doing. A checkpoint saves
the average too, so a resume continues it exactly.

The decay warms up as diffusers' EMAModel does: min(decay, (1 + n) / (10 + n)) for the update after n,
so a short run is not dominated by the random initial weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class AdapterEMA:
    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.updates = 0
        self.average = [p.detach().float().clone() for p in params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average ← average + (1 − decay) · (weights − average)."""
        weight = 1.0 - self.current_decay()  # the first update at 1/10, as diffusers' EMAModel
        self.updates += 1
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self.params], weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The adapter holds the average inside the block, its trained weights again after it
        (copied in place: compiled code and CUDA graphs keep pointing at the same tensors)."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for param, average in zip(self.params, self.average):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(self.params, trained):
                    param.copy_(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": [t.cpu() for t in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError("the checkpoint's weight average does not fit this adapter")
        self.updates = int(state["updates"])
        for mine, saved in zip(self.average, state["average"]):
            mine.copy_(saved)


@contextmanager
def averaged(ema: AdapterEMA | None) -> Iterator[None]:
    """The average applied when there is one; nothing changes otherwise."""
    if ema is None:
        yield
        return
    with ema.applied():
        yield
