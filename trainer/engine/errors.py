"""User-facing errors of the training engine.

Every error a person can fix (bad config, bad images, a model that cannot be loaded, not enough
memory) is an `EngineError`, so the worker can show its message as is and treat anything else as
a bug.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of all errors whose message is meant for the person running the job."""


class ConfigError(EngineError):
    """A setting is unknown, missing or out of range."""


class DatasetError(EngineError):
    """The images or captions cannot be trained on as they are."""


class BaseModelLoadError(EngineError):
    """The base model could not be loaded (no network, gated repo, missing files...)."""


class OutOfMemoryError(EngineError):
    """The device ran out of memory; the message suggests a lighter setting."""


class CheckpointError(EngineError):
    """A checkpoint to resume from is missing or does not match the config."""


class StopRequested(Exception):
    """Raised inside a run when `should_stop()` says so before training began; `train` returns a
    canceled result for it. Not an EngineError: nothing went wrong."""
