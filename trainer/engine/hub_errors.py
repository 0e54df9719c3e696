"""Why a base model failed to load, in words a person can act on.

diffusers hides the hub's first failure: when `model_info` fails it retries from the local cache,
and when the cache is empty it raises a plain OSError ("not fully cached") whose `__cause__` is
the real error (a gated repo, a typo in the id, no network). So the whole cause chain is walked
and matched on huggingface_hub's exception types, never on message text.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then its `__cause__` / `__context__` chain (each once, cycles cut)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def _first(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    return next((e for e in causes(error) if isinstance(e, kinds)), None)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def explain_load_failure(source: str, error: BaseException, has_token: bool) -> str:
    """One actionable sentence for a failed `from_pretrained(source)`.

    `has_token` says whether a Hugging Face token was available: a gated model needs one, and
    with one the fix is a different one (accept the license with that account).
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{source}"
    if _first(error, (GatedRepoError,)) is not None:  # before RepositoryNotFoundError, its parent
        if has_token:
            return (f"{source} is a gated model and the worker's Hugging Face token has no access to it: accept its "
                    f"license on {page} with the account that owns HF_TOKEN.")  # fmt: skip
        return (f"{source} is a gated model: accept its license on {page} and set HF_TOKEN "
                "(or run `hf auth login`) on the worker.")  # fmt: skip
    if _first(error, (RevisionNotFoundError,)) is not None:
        return f"{source} has no such revision on the Hugging Face hub; check the branch, tag or commit."
    if _first(error, (RepositoryNotFoundError,)) is not None:
        hint = "" if has_token else " (a private repository also needs HF_TOKEN on the worker)"
        return f"{source} was not found on the Hugging Face hub: check the spelling of the id{hint}, or give a local folder."
    http = _first(error, (HfHubHTTPError,))
    status = _status(http) if http is not None else None
    if status in (401, 403):
        return f"the Hugging Face hub refused access to {source} (HTTP {status}): check that HF_TOKEN is valid and has read access."
    if status == 429 or (status is not None and status >= 500):
        return f"the Hugging Face hub is busy or failing (HTTP {status}) while fetching {source}; try again later."
    # Transport errors: the hub's HTTP library's own (HTTPError that is not an HTTP status error),
    # and the OS's (DNS failure, refused or timed-out connection).
    unreachable = _first(error, (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError, TimeoutError, socket.gaierror))
    transport = _first(error, (HTTPError,))
    if unreachable is not None or (transport is not None and not isinstance(transport, HfHubHTTPError)):
        return (
            f"{source} is not in the local cache and the hub cannot be reached (no network or HF_HUB_OFFLINE=1). "
            "Download it on a machine with network and copy the cache, or give a local diffusers folder."
        )
    if Path(source).is_dir() and isinstance(error, OSError):
        return (f"{source} is incomplete: {_first_line(error)}. Copy the whole diffusers folder again "
                "(e.g. `hf download black-forest-labs/FLUX.1-dev --local-dir DIR`).")  # fmt: skip
    return f"could not load {source}: {type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""
