"""How the engine reports to its caller: progress, samples, checkpoints, log lines, and the
stop flag it polls. The worker subclasses `TrainHooks`; every method has a no-op default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Progress:
    """One optimizer step's report."""

    step: int  # 1-based, counted across resumes
    total_steps: int
    loss: float  # training loss of this step (mean over accumulated micro-batches)
    lr: float
    it_per_s: float  # steps per second over the recent window
    eta_s: float  # seconds left at that pace
    val_loss: float | None = None  # set on the steps where validation ran


class TrainHooks:
    """Callbacks of a training run. Subclass and override what you need."""

    def on_log(self, message: str) -> None:
        """A human-readable line (stage changes, warnings, what was decided)."""

    def on_progress(self, progress: Progress) -> None:
        """Called after every optimizer step."""

    def on_sample(self, step: int, prompt: str, path: Path) -> None:
        """A sample image was written to `path`."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A resumable checkpoint folder was written."""

    def should_stop(self) -> bool:
        """Polled before every step; return True to cancel (a checkpoint is saved first)."""
        return False


class PrintHooks(TrainHooks):
    """Hooks for the command line: log lines and a progress line every few steps."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.stop_requested = False

    def interrupt(self, signum: int, frame: object) -> None:
        """A SIGINT handler: the first Ctrl-C stops at the end of the step with a checkpoint, a second quits."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        print("stopping after this step and saving a checkpoint (resume with --resume); Ctrl-C again quits now",
              flush=True)

    def should_stop(self) -> bool:
        return self.stop_requested

    def on_log(self, message: str) -> None:
        print(message, flush=True)

    def on_progress(self, progress: Progress) -> None:
        last = progress.step == progress.total_steps
        if progress.step % self.every == 0 or last or progress.val_loss is not None:
            val = f" val_loss={progress.val_loss:.4f}" if progress.val_loss is not None else ""
            print(
                f"step {progress.step}/{progress.total_steps} loss={progress.loss:.4f}{val} "
                f"lr={progress.lr:.2e} {progress.it_per_s:.2f} it/s eta={progress.eta_s:.0f}s",
                flush=True,
            )

    def on_sample(self, step: int, prompt: str, path: Path) -> None:
        print(f"sample at step {step}: {path}", flush=True)

    def on_checkpoint(self, step: int, path: Path) -> None:
        print(f"checkpoint at step {step}: {path}", flush=True)


@dataclass
class TrainResult:
    """What a finished (or canceled) run produced.

    On cancel, `lora_path` points at the LoRA of the checkpoint saved when stopping (usable, but
    not trained to the end) and `kohya_path` is None.
    """

    lora_path: Path | None
    kohya_path: Path | None
    config_path: Path
    sample_paths: list[Path] = field(default_factory=list)
    final_step: int = 0
    canceled: bool = False
    losses: list[float] = field(default_factory=list)  # per step, from step 1 (resumes included)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoint_dir: Path | None = None  # the latest checkpoint folder
