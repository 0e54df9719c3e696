"""Load captioners from a preset, a hub id or a local folder, once per process.

Spec strings:
  - a preset name from CAPTIONER_PRESETS (``florence2``, ``blip``, ``smolvlm``, ...);
  - ``kind:source`` where kind is ``florence2``, ``blip`` or ``vlm`` (aliases: ``smolvlm``,
    ``qwen2.5-vl``) and source a hub id or a local folder;
  - a bare hub id or folder: the kind is read from its config.json ``model_type``.
Weights are loaded in bf16 (fp16 where bf16 is unsupported) on a GPU and fp32 on the CPU. Any
failure to load becomes `CaptionerUnavailable`, whose message says why and what to do, so the
web side can fall back to template captions.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .backends import KINDS, Captioner, LoadedModel
from .presets import CAPTIONER_PRESETS, DEFAULT_CAPTIONER

_KIND_ALIASES = {"florence2": "florence2", "florence": "florence2", "blip": "blip", "vlm": "vlm",
                 "smolvlm": "vlm", "qwen2.5-vl": "vlm", "qwen2-vl": "vlm"}
_FALLBACK_HINT = "Use the template caption instead."


class CaptionerUnavailable(ValueError):
    """No captioner can be loaded for this spec here; `reason` says why, `hint` what to do."""

    def __init__(self, spec: str, reason: str, hint: str = "") -> None:
        self.spec, self.reason, self.hint = spec, reason, hint
        text = f"captioner {spec!r} cannot be loaded: {reason}."
        super().__init__(" ".join(part for part in (text, hint, _FALLBACK_HINT) if part))


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()  # a worker may caption from several threads; load each model once


def load_captioner(
    spec: str = DEFAULT_CAPTIONER,
    device: str = "auto",
    *,
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    num_beams: int = 1,
    local_files_only: bool | None = None,
) -> Captioner:
    """A ready Captioner for `spec`, loading the model only the first time per device.

    prompt: the Florence-2 task token (default ``<MORE_DETAILED_CAPTION>``), BLIP's text to
    continue (default none), or the VLM instruction (default `DEFAULT_VLM_PROMPT`).
    local_files_only: never touch the network; defaults to on when HF_HUB_OFFLINE is set.
    """
    kind, source = resolve_spec(spec)
    torch_device = resolve_device(device)
    dtype = dtype_for(torch_device)
    if local_files_only is None:
        local_files_only = _offline()
    with _LOCK:
        # Keyed by where the weights are, not by spec: "blip" and "blip:<its hub id>", or a
        # folder given with and without its kind, share one model.
        key = (_cache_source(source), str(torch_device), str(dtype))
        loaded = _CACHE.get(key)
        if loaded is None:
            loaded = _load(spec, kind, source, torch_device, dtype, local_files_only)
            _CACHE[key] = loaded
        elif kind is not None and kind != loaded.kind:
            raise CaptionerUnavailable(spec, f"it holds a {loaded.kind} model, not a {kind} one")
    return Captioner(
        loaded, spec=spec, prompt=prompt, max_new_tokens=max_new_tokens,
        num_beams=num_beams, on_unload=_forget,
    )


def unload_captioners() -> int:
    """Free every cached captioner (call before training needs the GPU); returns how many."""
    with _LOCK:
        count = len(_CACHE)
        for loaded in _CACHE.values():
            loaded.release()
        _CACHE.clear()
    _free_memory()
    return count


def resolve_spec(spec: str) -> tuple[str | None, str]:
    """(kind or None when it must be read from the config, source) for a spec string."""
    spec = (spec or "").strip()
    if not spec:
        raise CaptionerUnavailable(spec, "no captioner was chosen", "Pick one of the presets.")
    if spec in CAPTIONER_PRESETS:
        preset = CAPTIONER_PRESETS[spec]
        return preset.kind, preset.source
    head, sep, tail = spec.partition(":")
    if sep and head.lower() in _KIND_ALIASES:
        if not tail.strip():
            raise CaptionerUnavailable(spec, f"no model named after '{head}:'")
        return _KIND_ALIASES[head.lower()], tail.strip()
    return None, spec


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CaptionerUnavailable(str(device), "no CUDA GPU is visible to this process")
    return resolved


def dtype_for(device: torch.device) -> torch.dtype:
    """Half precision on a GPU (bf16 where supported: no fp16 overflow), fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _load(
    spec: str, kind: str | None, source: str, device: torch.device, dtype: torch.dtype,
    local_files_only: bool,
) -> LoadedModel:
    location = _check_location(spec, source)
    is_hub_id = location == source and not Path(source).expanduser().is_dir()
    try:
        try:  # the Hub cache first: no network round trips when the weights are already here
            kind, processor, model = _from_pretrained(spec, kind, location, dtype, local_only=True)
        except CaptionerUnavailable:
            raise
        except Exception:
            if local_files_only or not is_hub_id:
                raise
            if not _hub_reachable():  # fail in a second rather than after ~20 s of retries
                raise ConnectionError("the Hugging Face Hub cannot be reached") from None
            kind, processor, model = _from_pretrained(spec, kind, location, dtype, local_only=False)
    except CaptionerUnavailable:
        raise
    except Exception as exc:  # transformers/hub raise OSError, ValueError, HTTP errors, ...
        raise _explain(spec, source, exc) from exc
    model.to(device).eval()
    return LoadedModel(kind, source, model, processor, device, dtype)


def _from_pretrained(
    spec: str, kind: str | None, location: str, dtype: torch.dtype, *, local_only: bool
) -> tuple[str, Any, Any]:
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(location, local_files_only=local_only)
    kind = _check_kind(spec, kind, config.model_type)
    processor = AutoProcessor.from_pretrained(location, local_files_only=local_only)
    model = AutoModelForImageTextToText.from_pretrained(
        location, dtype=dtype, local_files_only=local_only
    )
    return kind, processor, model


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens (assumed yes behind a proxy)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _check_location(spec: str, source: str) -> str:
    """A local folder as a path string, or the hub id; a path that is not there fails early."""
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    looks_local = source.startswith(("/", ".", "~", "\\")) or source.count("/") > 1 or "\\" in source
    if path.exists() or looks_local:
        raise CaptionerUnavailable(
            spec, f"there is no model folder at {source}",
            "Give a folder holding config.json, the weights and the processor files.",
        )
    return source


def _check_kind(spec: str, kind: str | None, model_type: str) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    found = model_type if model_type in ("florence2", "blip") else "vlm"
    if found == "vlm" and model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise CaptionerUnavailable(spec, f"a '{model_type}' model is not an image captioner")
    if kind is not None and kind != found:
        raise CaptionerUnavailable(spec, f"it holds a '{model_type}' model, not a {kind} one")
    return found


def _explain(spec: str, source: str, exc: Exception) -> CaptionerUnavailable:
    """Translate a loading exception into a plain reason and what to do about it."""
    from huggingface_hub import errors as hub_errors

    chain = _exception_chain(exc)
    names = {type(item).__name__ for item in chain}
    text = " ".join(str(item) for item in chain).lower()
    if isinstance(exc, ImportError) or "requires the" in text and "library" in text:
        return CaptionerUnavailable(spec, f"a library it needs is missing ({_first_line(exc)})",
                                    "Install it in the worker's environment.")
    if any(isinstance(item, hub_errors.GatedRepoError) for item in chain) or "gated" in text:
        return CaptionerUnavailable(
            spec, f"{source} is gated on the Hugging Face Hub",
            "Accept its license on the Hub and set HF_TOKEN for the worker.",
        )
    if Path(source).expanduser().is_dir():  # a local folder: the network is not the problem
        return CaptionerUnavailable(spec, f"the folder {source} does not hold a loadable model "
                                    f"({_first_line(exc)})", "It needs config.json, weights and "
                                    "processor files, as save_pretrained() writes them.")
    offline = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError",
               "ConnectionError", "ConnectTimeout"}
    if names & offline or "offline" in text or "couldn't connect" in text or _offline():
        return CaptionerUnavailable(
            spec, "its weights are not on this machine and the Hub cannot be reached (offline)",
            f"Download {source} where there is network (`hf download {source}`) into the Hub "
            "cache, or point the spec at a local folder.",
        )
    if "RepositoryNotFoundError" in names or "not a valid model identifier" in text:
        return CaptionerUnavailable(spec, f"no model called {source} exists on the Hub (or it is "
                                    "private)", "Check the id, or set HF_TOKEN for a private one.")
    if "does not appear to have a file named" in text or "no file named" in text:
        return CaptionerUnavailable(spec, f"{source} lacks files ({_first_line(exc)})")
    return CaptionerUnavailable(spec, f"{type(exc).__name__}: {_first_line(exc)}")


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _forget(loaded: LoadedModel) -> None:
    with _LOCK:
        for key in [key for key, value in _CACHE.items() if value is loaded]:
            del _CACHE[key]
        loaded.release()
    _free_memory()


def _cache_source(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else source


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
