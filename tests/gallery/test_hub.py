"""Push to the Hugging Face Hub, against a stand-in of the Hub's HTTP API on 127.0.0.1.

The stand-in answers exactly what huggingface_hub's `create_repo` and `upload_folder` call
(`/api/repos/create`, `/api/validate-yaml`, `/api/models/{repo}/preupload/{rev}`,
`/api/models/{repo}/commit/{rev}` with NDJSON, `/api/whoami-v2`), and says "regular" for every
file so the bytes arrive inline (base64) in the commit: no LFS or Xet upload, no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import yaml
from django.core.files.base import ContentFile
from django.urls import reverse
from safetensors.numpy import load, save

from flux_studio.queues import light_queue
from gallery import hub, services_gallery
from gallery.models import GalleryExample, GalleryModel, HubState
from tests.conftest import make_image_bytes
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db
TOKEN = "hf_standin_write_token_123"


class HubStandIn:
    """A threaded http.server that keeps repos (path -> bytes) in memory and checks the token."""

    def __init__(self, token: str = TOKEN, user: str = "alice-hf") -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.calls: list[str] = []
        self.commits: list[dict[str, Any]] = []
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {token}":
                    return True
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return False

            def do_GET(self) -> None:
                hub_.calls.append(f"GET {self.path}")
                if self.path == "/api/whoami-v2" and self._authorized():
                    self._reply(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
                elif self.path != "/api/whoami-v2":
                    self._reply(404, {"error": "not here"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                hub_.calls.append(f"POST {path}")
                if not self._authorized():
                    return
                parts = path.strip("/").split("/")
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else f"{user}/{req['name']}"
                    if repo in hub_.repos:
                        self._reply(409, {"error": "You already created this model repo", "url": hub_.url_of(repo)})
                    else:
                        hub_.repos[repo] = {}
                        self._reply(200, {"url": hub_.url_of(repo), "name": repo})
                elif path == "/api/validate-yaml":
                    content = json.loads(body)["content"]
                    yaml.safe_load(content.split("---")[1])  # front matter must parse
                    self._reply(200, {"errors": [], "warnings": []})
                elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                for f in files]})
                elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    if repo not in hub_.repos:
                        self._reply(404, {"error": "Repository not found"})
                        return
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    hub_.commits.append({"repo": repo, "header": lines[0], "content_type": self.headers["Content-Type"]})
                    for line in lines[1:]:
                        assert line["key"] == "file" and line["value"]["encoding"] == "base64", line
                        hub_.repos[repo][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    oid = hashlib.sha1(body).hexdigest()
                    self._reply(200, {"commitUrl": f"{hub_.url_of(repo)}/commit/{oid}", "commitOid": oid})
                else:
                    self._reply(404, {"error": f"no such endpoint {path}"})

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_of(self, repo: str) -> str:
        return f"{self.url}/{repo}"


@pytest.fixture
def stand_in(settings) -> Iterator[HubStandIn]:
    server = HubStandIn()
    settings.HF_ENDPOINT = server.url
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def immediate_light_queue() -> Iterator[None]:
    """The light queue runs tasks in-process, so view -> on_commit -> task -> Hub is one call chain."""
    light_queue.immediate = True
    yield
    light_queue.immediate = False


def lora_bytes() -> bytes:
    """A small real safetensors file with diffusers-style LoRA keys (numpy: no torch needed)."""
    rng = np.random.default_rng(0)
    return save({
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": rng.standard_normal((4, 32), dtype=np.float32),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": rng.standard_normal((32, 4), dtype=np.float32),
    })


def make_published(alice) -> GalleryModel:
    """A published model on flux-dev with both LoRA files and one example."""
    job = TrainingJob.objects.create(
        owner=alice, name="Pet zqx", state=JobState.SUCCEEDED, base_model="flux-dev", trigger_word="zqxpet",
        config={"learning_rate": 4e-4, "lora_rank": 4, "seed": 7}, total_steps=12, step=12,
        snapshot=[{"image": "a.png", "caption": "a photo of zqxpet"}],
    )
    job.lora_file.save("lora.safetensors", ContentFile(lora_bytes()), save=False)
    job.kohya_file.save("lora_kohya.safetensors", ContentFile(b"kohya-bytes"), save=False)
    job.save()
    model = GalleryModel.objects.create(owner=alice, training=job, title="Zqx the cat", trigger_word="zqxpet",
                                        base_model="flux-dev", description="Our cat, in `any` style.", tags=["cats"])
    example = GalleryExample(gallery_model=model, prompt="a photo of zqxpet on a sofa", settings={"seed": 3, "steps": 28},
                             is_cover=True, position=1)
    example.image.save("e.png", ContentFile(make_image_bytes(64, 64)), save=True)
    return services_gallery.gallery_model_publish(model=model)


@pytest.fixture
def published(alice) -> GalleryModel:
    return make_published(alice)


def push(client, model: GalleryModel, repo_id: str = "alice-hf/zqx-cat", token: str = TOKEN, **extra: str):
    return client.post(reverse("gallery:model_hub_push", args=[model.pk]), {"repo_id": repo_id, "token": token, **extra})


def test_push_uploads_card_lora_and_examples(alice_client, published, stand_in, immediate_light_queue,
                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = push(alice_client, published)
    assert response.status_code == 302 and len(callbacks) == 1

    files = stand_in.repos["alice-hf/zqx-cat"]
    job = published.training
    with job.lora_file.open("rb") as handle:
        assert files["lora.safetensors"] == handle.read()
    assert any(".lora_A." in key for key in load(files["lora.safetensors"]))
    assert files["lora_kohya.safetensors"] == b"kohya-bytes"
    with published.examples.get().image.open("rb") as handle:
        assert files["images/example-1.png"] == handle.read()

    readme = files["README.md"].decode()
    _, front, body = readme.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "black-forest-labs/FLUX.1-dev"
    assert meta["license"] == "other" and meta["license_name"] == "flux-1-dev-non-commercial-license"
    assert meta["instance_prompt"] == "zqxpet"
    assert meta["tags"][:4] == ["lora", "flux", "diffusers", "text-to-image"] and "cats" in meta["tags"]
    assert meta["widget"] == [{"text": "a photo of zqxpet on a sofa", "output": {"url": "images/example-1.png"}}]
    assert "# Zqx the cat" in body and "`zqxpet`" in body
    assert 'pipe.load_lora_weights("alice-hf/zqx-cat", weight_name="lora.safetensors")' in body
    assert "![a photo of zqxpet on a sofa](images/example-1.png)" in body and "seed 3" in body
    assert stand_in.commits[0]["content_type"] == "application/x-ndjson"

    published.refresh_from_db()
    assert published.hub_state == HubState.PUSHED and published.hub_repo == "alice-hf/zqx-cat"
    assert published.hub_url == f"{stand_in.url}/alice-hf/zqx-cat" and published.hub_pushed_at is not None
    assert TOKEN not in json.dumps([published.hub_error, published.hub_url, published.hub_repo])
    page = alice_client.get(published.get_absolute_url()).content.decode()
    assert 'id="hub-link"' in page and published.hub_url in page

    # Pushing again updates the same repo (create_repo answers 409: exist_ok).
    with django_capture_on_commit_callbacks(execute=True):
        push(alice_client, published)
    published.refresh_from_db()
    assert published.hub_state == HubState.PUSHED and len(stand_in.commits) == 2


def test_a_bare_name_goes_to_the_tokens_namespace(alice_client, published, stand_in, immediate_light_queue,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        push(alice_client, published, repo_id="zqx-cat", private="on")
    published.refresh_from_db()
    assert published.hub_state == HubState.PUSHED and published.hub_repo == "alice-hf/zqx-cat"
    assert "GET /api/whoami-v2" in stand_in.calls and "README.md" in stand_in.repos["alice-hf/zqx-cat"]


def test_a_refused_token_is_recorded_as_the_reason(alice_client, published, stand_in, immediate_light_queue,
                                                   django_capture_on_commit_callbacks):
    wrong = "hf_wrong_token_456"
    with django_capture_on_commit_callbacks(execute=True):
        push(alice_client, published, token=wrong)
    published.refresh_from_db()
    assert published.hub_state == HubState.FAILED and not published.hub_url
    assert "401" in published.hub_error and wrong not in published.hub_error
    assert not stand_in.repos
    page = alice_client.get(published.get_absolute_url()).content.decode()
    assert 'id="hub-error"' in page and "401" in page and 'id="hub-form"' in page  # the form is offered again


def test_no_network_is_said_in_words_and_the_token_is_not_kept(alice_client, published, settings, monkeypatch,
                                                               immediate_light_queue, django_capture_on_commit_callbacks):
    """No DNS (the worker's machine is offline): huggingface_hub's own error chain, as it comes."""
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    settings.HF_ENDPOINT = "https://huggingface.co"
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with django_capture_on_commit_callbacks(execute=True):
        push(alice_client, published)
    monkeypatch.undo()
    published.refresh_from_db()
    assert published.hub_state == HubState.FAILED
    error = published.hub_error
    assert error.startswith("FLUX Studio could not reach huggingface.co") and "proxy" in error, error
    assert "token was not stored" in error and TOKEN not in error
    page = alice_client.get(published.get_absolute_url()).content.decode()
    assert "could not reach huggingface.co" in page and 'id="hub-form"' in page


def test_a_refused_connection_names_the_hub_it_tried(published, settings):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.HF_ENDPOINT = f"http://127.0.0.1:{port}"
    GalleryModel.objects.filter(pk=published.pk).update(hub_state=HubState.PUSHING)
    hub.run_hub_push(model_id=published.pk, repo_id="alice-hf/zqx-cat", token=TOKEN)
    published.refresh_from_db()
    assert published.hub_error.startswith(f"FLUX Studio could not reach 127.0.0.1:{port}"), published.hub_error


def test_other_failures_keep_their_detail():
    assert hub._reason(OSError("No space left on device"), TOKEN) == "No space left on device"
    assert "could not reach" not in hub._reason(RuntimeError(f"bad {TOKEN}"), TOKEN)
    assert TOKEN not in hub._reason(RuntimeError(f"bad {TOKEN}"), TOKEN)


def test_who_may_push_and_when(alice_client, bob_client, published, stand_in, django_capture_on_commit_callbacks):
    # Another user gets nothing (not even the form); a missing token or a bad name says why.
    assert push(bob_client, published).status_code == 404
    assert 'id="hub-form"' not in bob_client.get(published.get_absolute_url()).content.decode()
    response = push(alice_client, published, token="", repo_id="bad name!")
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("access token" in m and "repository name" in m for m in messages), messages

    # While a push is under way (no worker takes it here), a second request is refused.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        push(alice_client, published)
        response = push(alice_client, published)
    assert len(callbacks) == 1
    assert any("already under way" in str(m) for m in response.wsgi_request._messages)
    published.refresh_from_db()
    assert published.hub_state == HubState.PUSHING
    page = alice_client.get(published.get_absolute_url()).content.decode()
    assert "Pushing to the Hub" in page and 'http-equiv="refresh"' in page and 'id="hub-form"' not in page

    # Unpublished before the worker ran: the push does not happen, and says so.
    services_gallery.gallery_model_unpublish(model=published)
    hub.run_hub_push(model_id=published.pk, repo_id="alice-hf/zqx-cat", token=TOKEN)
    published.refresh_from_db()
    assert published.hub_state == HubState.FAILED and "unpublished" in published.hub_error and not stand_in.calls


def test_card_for_a_local_base_names_no_hub_base(published):
    published.base_model = "tiny"
    published.license = "mit"
    card = hub.model_card(published, [], "alice-hf/x")
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert "base_model" not in meta and meta["license"] == "mit" and meta["widget"] == []
    # Its usage section cannot name the base to diffusers: it says how FLUX Studio's engine loads it.
    assert "from_pretrained" not in card and "## Load it with FLUX Studio's engine" in card
    assert "hf download alice-hf/x lora.safetensors --local-dir .\npython -m trainer.engine generate --base tiny " \
           "--lora lora.safetensors" in card
    assert hub.hub_base_model("flux-schnell") == "black-forest-labs/FLUX.1-schnell"
    assert hub.hub_base_model("someone/their-flux") == "someone/their-flux"
    assert hub.hub_base_model("/models/flux") is None


@pytest.mark.slow
def test_a_light_worker_pushes_it(client, transactional_db, alice, stand_in, start_worker, monkeypatch):
    """The real path: the view enqueues on the light queue; a `run_worker --queue light` process pushes."""
    from tests.conftest import wait_for

    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)  # the worker process reads the environment
    model = make_published(alice)
    client.force_login(alice)
    worker = start_worker("light")
    assert push(client, model).status_code == 302
    wait_for(lambda: GalleryModel.objects.get(pk=model.pk).hub_state != HubState.PUSHING, timeout=60,
             message="the light worker did not finish the push:\n" + worker.output())
    model.refresh_from_db()
    assert model.hub_state == HubState.PUSHED, model.hub_error
    assert "zqxpet" in stand_in.repos["alice-hf/zqx-cat"]["README.md"].decode()
    assert TOKEN not in worker.output()
