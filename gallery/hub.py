"""Push a published gallery model to the Hugging Face Hub: the LoRA files, examples, a model card.

The owner asks on the model page (`hub_push_request`); the light queue's worker does the network
I/O (`run_hub_push`, called by `gallery.tasks.hub_push_task`) with huggingface_hub's `HfApi`:
`create_repo(exist_ok=True)`, then one `upload_folder` commit of a staged folder:

    README.md                 model card (YAML front matter the Hub reads, then prose)
    lora.safetensors          diffusers format (`pipe.load_lora_weights(repo, weight_name=...)`)
    lora_kohya.safetensors    kohya / ComfyUI key layout, when the training exported one
    images/example-N.png      the gallery examples, shown by the card's widget

The token is the person's own write token, typed on the push form. It travels as an argument of
the queued task and is never saved on a row: in the queue it waits only until the worker takes
the task (Huey deletes the message then; a task's arguments are not logged, and it returns
nothing, so no result holds it). A studio-wide token would publish everyone's models under the
operator's account, and HF_TOKEN here is the (often read-only) token for gated base models.
The Hub's address is `settings.HF_ENDPOINT`, else the `HF_ENDPOINT` environment variable, else
huggingface.co; tests point it at a stand-in on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gallery.example_settings import shown_settings
from gallery.lora_usage import REPO_RE, hub_base_model, loading_recipe
from gallery.models import GalleryExample, GalleryModel, HubState
from gallery.selectors import training_summary
from trainer.engine.hub_errors import causes

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_TAGS = ["lora", "flux", "diffusers", "text-to-image"]
LORA_NAME, KOHYA_NAME = "lora.safetensors", "lora_kohya.safetensors"
# A push still "pushing" after this long lost its worker (or none runs): it may be asked again.
STALE_PUSH = timedelta(minutes=15)
MAX_EXAMPLES = 12
# Our license ids are the Hub's, except FLUX.1 [dev]'s own license, which the Hub calls "other".
FLUX_DEV_LICENSE = {
    "license": "other",
    "license_name": "flux-1-dev-non-commercial-license",
    "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
}


def hub_endpoint() -> str:
    return (getattr(settings, "HF_ENDPOINT", "") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


# --- Request (web process) --------------------------------------------------------------------

class PushUnderWay(ValidationError):
    """A push of this model is already running (the page shows it as a form error, the API as 409)."""


def hub_push_request(*, user: AbstractBaseUser, model: GalleryModel, repo_id: str, token: str,
                     private: bool = False) -> GalleryModel:
    """Mark the model as pushing and enqueue the push (after commit) on the light queue."""
    if model.owner_id != user.pk:
        raise PermissionDenied("only the owner can push a model to the Hub")
    repo_id, token = repo_id.strip().strip("/"), token.strip()
    errors = {}
    if not model.published:
        errors["model"] = "publish the model in the gallery first"
    if not REPO_RE.match(repo_id):
        errors["repo_id"] = "a repository name like your-hf-name/my-lora (letters, digits, -, _ and .)"
    if not token:
        errors["token"] = "paste a Hugging Face access token with write permission"
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    claimed = GalleryModel.objects.filter(pk=model.pk).filter(
        ~Q(hub_state=HubState.PUSHING) | Q(hub_requested_at__lt=now - STALE_PUSH) | Q(hub_requested_at__isnull=True),
    ).update(hub_state=HubState.PUSHING, hub_requested_at=now, hub_error="")
    if not claimed:
        raise PushUnderWay({"model": "a push to the Hub is already under way"})
    model.hub_state, model.hub_requested_at, model.hub_error = HubState.PUSHING, now, ""

    def enqueue() -> None:
        from gallery.tasks import hub_push_task

        hub_push_task(model.pk, repo_id, token, private)

    transaction.on_commit(enqueue)
    return model


# --- The push (light worker) ------------------------------------------------------------------

def run_hub_push(*, model_id: int, repo_id: str, token: str, private: bool = False) -> None:
    """Create the repo and upload the staged folder; record pushed (with the URL) or failed (why)."""
    from huggingface_hub import HfApi

    model = GalleryModel.objects.select_related("training", "owner").filter(pk=model_id).first()
    if model is None or model.hub_state != HubState.PUSHING:
        return  # deleted, or a newer request already finished: nothing to do
    if not model.published:
        _record_failure(model_id, "the model was unpublished before the push ran")
        return
    try:
        api = HfApi(endpoint=hub_endpoint(), token=token)
        if "/" not in repo_id:  # the token's own namespace
            repo_id = f"{api.whoami()['name']}/{repo_id}"
        url = str(api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True))
        with tempfile.TemporaryDirectory(prefix="hub-push-") as tmp:
            stage_folder(model, Path(tmp), repo_id)
            api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=tmp,
                              commit_message=f"{model.title} from FLUX Studio")
    # Any failure (network, auth, quota, storage, a bug) must end as a reason on the page, never as
    # a push stuck in "pushing": so no narrower except here.
    except Exception as exc:  # noqa: BLE001
        log.warning("hub push of gallery model %s to %s failed: %s", model_id, repo_id, type(exc).__name__)
        _record_failure(model_id, _reason(exc, token))
        return
    GalleryModel.objects.filter(pk=model_id).update(
        hub_state=HubState.PUSHED, hub_repo=repo_id, hub_url=url, hub_pushed_at=timezone.now(), hub_error="",
    )


def _record_failure(model_id: int, reason: str) -> None:
    GalleryModel.objects.filter(pk=model_id).update(hub_state=HubState.FAILED, hub_error=reason[:1000])


def _unreachable(exc: Exception) -> bool:
    """No answer from the Hub at all: DNS, a refused or timed-out connection, a proxy in the way,
    HF_HUB_OFFLINE. Matched on exception types along the cause chain, never on message text: the
    HTTP library's transport errors (an HTTPError that is no HfHubHTTPError, which has a status)
    and the OS's errors beneath them."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled

    return any(
        isinstance(e, (OfflineModeIsEnabled, ConnectionError, TimeoutError, socket.gaierror))
        or (isinstance(e, HTTPError) and not isinstance(e, HfHubHTTPError))
        for e in causes(exc)
    )


def _reason(exc: Exception, token: str) -> str:
    """A short reason for the page, never carrying the token."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if status in (401, 403):
        text = f"the Hub refused the token (HTTP {status}): it needs write access to that namespace. {text}"
    elif status is None and _unreachable(exc):
        host = urlsplit(hub_endpoint()).netloc or hub_endpoint()
        text = (f"FLUX Studio could not reach {host} (no network, or a proxy or firewall in the way): the studio's "
                f"network or proxy settings need a look; then push again. The token was not stored: paste it again "
                f"then. (Detail: {text})")
    if token:
        text = text.replace(token, "***")
    return text[:1000]


def stage_folder(model: GalleryModel, folder: Path, repo_id: str) -> list[Path]:
    """Write the repository's files into `folder`; returns their paths."""
    job = model.training
    written = [_copy(job.lora_file, folder / LORA_NAME)]
    if job.kohya_file:
        written.append(_copy(job.kohya_file, folder / KOHYA_NAME))
    examples: list[tuple[str, GalleryExample]] = []
    for n, example in enumerate(model.examples.all()[:MAX_EXAMPLES], start=1):
        path_in_repo = f"images/example-{n}.png"
        written.append(_copy(example.image, folder / path_in_repo))
        examples.append((path_in_repo, example))
    readme = folder / "README.md"
    readme.write_text(model_card(model, examples, repo_id, has_kohya=bool(job.kohya_file)), encoding="utf-8")
    return [readme, *written]


def _copy(field: Any, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with field.open("rb") as src, open(dest, "wb") as out:
        out.writelines(iter(lambda: src.read(1 << 20), b""))
    return dest


# --- The model card ---------------------------------------------------------------------------

def _code(text: str) -> str:
    """Inline code that survives backticks in a prompt."""
    return "`` " + text.replace("\n", " ") + " ``" if "`" in text else f"`{text}`"


def card_metadata(model: GalleryModel, examples: list[tuple[str, GalleryExample]]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if base := hub_base_model(model.base_model):
        meta["base_model"] = base
    meta.update(FLUX_DEV_LICENSE if model.license == "flux-1-dev-non-commercial" else {"license": model.license})
    meta["library_name"] = "diffusers"
    meta["pipeline_tag"] = "text-to-image"
    meta["tags"] = HUB_TAGS + [t for t in model.tags if t not in HUB_TAGS]
    meta["instance_prompt"] = model.trigger_word
    meta["widget"] = [{"text": e.prompt, "output": {"url": path}} for path, e in examples]
    return meta


def model_card(model: GalleryModel, examples: list[tuple[str, GalleryExample]], repo_id: str, *,
               has_kohya: bool = True) -> str:
    """README.md for the repo: YAML front matter (via huggingface_hub's ModelCardData) and prose."""
    from huggingface_hub import ModelCardData

    meta = card_metadata(model, examples)
    base = meta.get("base_model")
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"`{model.base_model}` (not on the Hub)"
    lines = [
        "---", ModelCardData(**meta).to_yaml(), "---", "",
        f"# {model.title}", "",
        f"A FLUX.1 LoRA for {base_text}, trained and published with FLUX Studio by {model.owner.username}.", "",
    ]
    if model.description:
        lines += [model.description.strip(), ""]
    lines += [
        "## Trigger word", "",
        f"Put {_code(model.trigger_word)} in your prompt to bring in what this LoRA learned.", "",
        "## Examples", "",
    ]
    for path, e in examples:
        settings_text = ", ".join(f"{k} {v}" for k, v in shown_settings(e).items() if k in ("seed", "steps", "guidance"))
        lines += [f"![{e.prompt[:80]}]({path})", "", f"Prompt: {_code(e.prompt)}" + (f" ({settings_text})" if settings_text else ""), ""]
    if not examples:
        lines += ["No example images.", ""]
    recipe = loading_recipe(base_model=model.base_model, trigger_word=model.trigger_word, weight_name=LORA_NAME,
                            repo_id=repo_id)
    lines += [
        f"## {recipe.title}", "", recipe.note, "",
        f"```{recipe.language}", recipe.code, "```", "",
        "## Files", "",
        f"- `{LORA_NAME}`: diffusers format, for `load_lora_weights`",
    ]
    if has_kohya:
        lines.append(f"- `{KOHYA_NAME}`: kohya key layout, for ComfyUI and other UIs")
    lines += ["", "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in training_summary(model.training).items() if v is not None]
    lines += ["", "## License", "", f"{model.get_license_display()}.", ""]
    return "\n".join(lines)
