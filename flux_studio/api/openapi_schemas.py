"""The schemas of the OpenAPI document (flux_studio.api.openapi): what the views accept and
what the serializers return, as plain dicts. Objects are closed (unknown fields are refused, as
the views do) unless marked open.
"""

from __future__ import annotations

from typing import Any

from flux_studio.api.tokens import NAME_CHARS
from flux_studio.api.webhooks import EVENTS
from gallery.models import License
from trainer.datasets import BULK_OPS, MAX_CAPTION
from trainer.models import CaptionPlacement, CaptionSource
from trainer.presets import LIMITS, MAX_RESOLUTIONS, MEMORY_MODES

S = dict[str, Any]
STATUS = {"type": "string", "enum": ["starting", "processing", "succeeded", "failed", "canceled"]}
STAMP = {"type": ["string", "null"], "format": "date-time"}
ID = {"type": "integer", "minimum": 1}
URL = {"type": "string", "format": "uri"}
STREAM = {**URL, "description": "its events, stored then live, as Server-Sent Events"}
LICENSE = {"type": "string", "enum": list(License.values)}
SIDE = {"type": "integer", "minimum": 32, "maximum": 2048, "multipleOf": 16}  # a training resolution


def ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: S) -> S:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: S, required: list[str] | None = None, *, closed: bool = True, description: str = "") -> S:
    schema: S = {"type": "object", "properties": properties}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def page_of(name: str) -> S:
    return obj({"next": nullable(URL), "previous": nullable(URL), "results": {"type": "array", "items": ref(name)}},
               ["next", "previous", "results"])


WEBHOOK_FIELDS: S = {
    "webhook": {"type": "string", "format": "uri", "maxLength": 1000, "description": "http(s) URL to POST the object to"},
    "webhook_events_filter": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(EVENTS)}},
}

TOKEN_FIELDS: S = {
    "id": ID, "name": {"type": "string"},
    "prefix": {"type": "string", "description": "the token's first characters, to tell tokens apart; not a secret"},
    "active": {"type": "boolean", "description": "false once revoked"},
    "current": {"type": "boolean", "description": "this request was sent with it"},
    "created_at": STAMP, "last_used_at": {**STAMP, "description": "to the minute; null: never used"},
    "revoked_at": STAMP, "urls": obj({"get": URL}),
    "created_by": {"type": ["integer", "null"], "description": "the token that created it over POST /tokens; null: the tokens page (or made before tokens recorded it)"},
}
TOKEN_REQUIRED = ["id", "name", "prefix", "active", "created_at", "last_used_at", "revoked_at", "urls"]

SCHEMAS: S = {
    "Problem": obj({
        "type": URL, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    }, ["type", "title", "status", "detail"], closed=False),
    "File": obj({
        "id": ID, "name": {"type": "string"}, "content_type": {"type": "string"}, "size": {"type": "integer"},
        "checksums": obj({"sha256": {"type": "string"}}), "dataset": ID, "width": {"type": "integer"},
        "height": {"type": "integer"}, "caption": {"type": "string"},
        "caption_source": {"type": "string", "enum": list(CaptionSource.values),
                           "description": "user and file captions are never replaced by auto-captioning unless it overwrites"},
        "excluded": {"type": "boolean", "description": "kept in the dataset but not trained on"},
        "warnings": {"type": "array", "items": {"type": "string"}}, "created_at": STAMP,
        "urls": obj({"get": URL, "download": URL, "image": URL, "thumbnail": URL}),
    }, ["id", "name", "dataset", "caption", "excluded", "urls"], closed=False),
    "FileUpdate": obj({
        "caption": {"type": "string", "maxLength": MAX_CAPTION, "description": "what the photo trains with; \"\" clears it"},
        "excluded": {"type": "boolean"},
    }, description="give caption, excluded or both"),
    "Dataset": obj({
        "id": ID, "name": {"type": "string"}, "trigger_word": {"type": "string"},
        "caption_placement": {"type": "string", "enum": list(CaptionPlacement.values)},
        "caption_prefix": {"type": "string"}, "caption_suffix": {"type": "string"},
        "captioner": {"type": "string"}, "caption_prompt": {"type": "string"},
        "counts": obj({"photos": {"type": "integer"}, "training": {"type": "integer", "description": "not excluded"},
                       "captioned": {"type": "integer", "description": "not excluded and captioned"}}),
        "created_at": STAMP, "updated_at": STAMP,
        "photos": {"type": "array", "items": ref("File"), "description": "GET /datasets/{id} only: every photo, oldest first"},
        "health": {"type": "object", "description": "GET /datasets/{id} only: counts and the problems worth fixing "
                                                    "before training (`problems`), as the web page shows"},
        "captioning": ref("Captioning"),
        "urls": obj({"get": URL, "files": URL, "captioning": URL, "export": URL, "web": URL, "stream": STREAM}),
    }, ["id", "name", "trigger_word", "counts", "urls"], closed=False),
    "DatasetEdit": obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 120},
        "trigger_word": {"type": "string", "maxLength": 40, "description": "2-40 letters, digits, _ or -; \"\" clears it"},
        "caption_placement": {"type": "string", "enum": list(CaptionPlacement.values),
                              "description": "where auto-captions put the trigger word"},
        "caption_prefix": {"type": "string", "maxLength": 200}, "caption_suffix": {"type": "string", "maxLength": 200},
        "captioner": {"type": "string", "maxLength": 200, "description": "a captioner preset, the studio's CAPTIONER or one of its CAPTIONERS; \"\" = the studio's"},
        "caption_prompt": {"type": "string", "maxLength": 1000},
    }),
    "DatasetCopy": obj({"name": {"type": "string", "minLength": 1, "maxLength": 120}}),
    "CaptionsBulk": obj({
        "op": {"type": "string", "enum": list(BULK_OPS), "description": (
            "replace: `find` -> `replace`; prepend / append: `text`; insert_trigger: the trigger word where the "
            "caption style puts it; template: fill empty captions with \"a photo of TRIGGER\"")},
        "ids": {"type": "array", "items": ID, "minItems": 1, "description": "photos of this dataset; all when left out"},
        "find": {"type": "string", "maxLength": MAX_CAPTION}, "replace": {"type": "string", "maxLength": MAX_CAPTION},
        "text": {"type": "string", "maxLength": MAX_CAPTION}, "case_sensitive": {"type": "boolean"},
        "dry_run": {"type": "boolean", "description": "only say what would change"},
    }, ["op"]),
    "CaptionsBulkResult": obj({
        "dataset": ID, "op": {"type": "string"}, "dry_run": {"type": "boolean"},
        "changes": {"type": "array", "items": obj({"id": ID, "before": {"type": "string"}, "after": {"type": "string"},
                                                  "before_source": {"type": "string"}})},
        "undo": nullable(obj({"edit": ID, "url": URL}, ["edit", "url"], description=(
            "POST {\"edit\": edit} to url to undo this edit while it is the dataset's last; null for a dry run or "
            "an edit that changed nothing"))),
        "counts": obj({"captioned": {"type": "integer"}, "training": {"type": "integer"}}),
    }, ["changes"], closed=False),
    "CaptionsUndo": obj({"edit": {**ID, "description": "the bulk answer's undo.edit: undo only that edit (409 if a "
                                                       "later one replaced it); left out: the last bulk edit"}}),
    "CaptionsUndoResult": obj({
        "dataset": ID, "edit": ID, "op": {"type": "string", "description": "the bulk edit's op"},
        "changes": {"type": "array", "items": obj({
            "id": ID, "before": {"type": "string", "description": "the caption the bulk edit left"},
            "after": {"type": "string", "description": "the caption put back"},
            "before_source": {"type": "string", "enum": list(CaptionSource.values)},
            "after_source": {"type": "string", "enum": list(CaptionSource.values),
                             "description": "the source the caption had before the bulk edit"}})},
        "skipped": {"type": "array", "items": obj({"id": ID, "reason": {
            "type": "string", "enum": ["changed", "deleted"],
            "description": "changed: the caption no longer reads as the bulk edit left it, and stays; deleted: "
                           "the photo is gone"}})},
        "counts": obj({"captioned": {"type": "integer"}, "training": {"type": "integer"}}),
    }, ["dataset", "edit", "changes", "skipped"], closed=False),
    "FilesBulk": obj({
        "op": {"type": "string", "enum": ["exclude", "include", "delete"],
               "description": "exclude: kept in the dataset, not trained on; include: trained on again; delete: removed"},
        "ids": {"type": "array", "items": ID, "minItems": 1, "description": "photos of this dataset (required)"},
    }, ["op", "ids"]),
    "FilesBulkResult": obj({
        "dataset": ID, "op": {"type": "string"}, "ids": {"type": "array", "items": ID},
        "count": {"type": "integer", "description": "photos changed or deleted"},
        "counts": obj({"photos": {"type": "integer"}, "captioned": {"type": "integer"}, "training": {"type": "integer"}}),
    }, ["dataset", "op", "count", "counts"], closed=False),
    "CaptioningStart": obj({
        "ids": {"type": "array", "items": ID, "minItems": 1, "description": "photos of this dataset; all when left out"},
        "overwrite": {"type": "boolean", "description": "replace captions you wrote or uploaded too"},
    }),
    "Captioning": obj({
        "dataset": ID, "status": {"anyOf": [STATUS, {"type": "null"}], "description": "null: never run"},
        "message": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "metrics": {"type": "object"}, "updated_at": STAMP, "urls": obj({"get": URL, "dataset": URL, "stream": STREAM}),
    }, ["dataset", "status", "urls"], closed=False),
    "TriggerWordCheck": obj({
        "word": {"type": "string"}, "base_model": {"type": "string"},
        "ok": {"type": "boolean", "description": "false: the word cannot be used (see errors)"},
        "errors": {"type": "array", "items": {"type": "string"}}, "warnings": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "splits": {"type": "array", "items": {"type": "object"}, "description": "how each tokenizer of the base splits it"},
    }, ["word", "ok", "errors", "warnings"], closed=False),
    "TrainingResume": obj({"memory_mode": {"type": "string", "enum": list(MEMORY_MODES),
                                           "description": "low: switch a training that ran out of GPU memory"}}),
    "TrainingContinue": obj({"steps": {"type": "integer", "minimum": LIMITS["steps"][0], "maximum": LIMITS["steps"][1]},
                             **WEBHOOK_FIELDS}, ["steps"]),
    "FileUploadResult": obj({
        "id": ID, "name": {"type": "string"}, "dataset": ID, "files": {"type": "array", "items": ref("File")},
        "rejected": {"type": "array", "items": obj({"name": {"type": "string"}, "reason": {"type": "string"}})},
        "created_at": STAMP,
        "urls": obj({"get": {**URL, "description": "give it to POST /trainings as `input_images`"}}),
    }, ["dataset", "files", "rejected"], closed=False),
    "TrainingInput": obj({
        "input_images": {"type": "string", "maxLength": 1000, "description": (
            "the `urls.get` of a POST /files answer (e.g. an uploaded zip) or of one file; or, in a multipart "
            "request, `input_images` file parts. Give one of input_images, files, dataset")},
        "dataset": {**ID, "description": "a dataset of yours, e.g. the one POST /files answered with"},
        "files": {"anyOf": [ID, {"type": "array", "items": ID, "minItems": 1, "maxItems": 200}],
                  "description": "a file id or file ids (copied into a new dataset)"},
        "trigger_word": {"type": "string", "maxLength": 40},
        "autocaption": {"type": "boolean", "description": "caption photos without a caption on the GPU worker first, as the training's first stage"},
        "autocaption_prefix": {"type": "string", "maxLength": 200}, "autocaption_suffix": {"type": "string", "maxLength": 200},
        "preset": {"type": "string", "enum": ["fast", "balanced", "high"]}, "base_model": {"type": "string"},
        "name": {"type": "string", "maxLength": 120},
        "steps": {"type": "integer", "minimum": 1, "maximum": 20000},
        "learning_rate": {"type": "number", "minimum": 1e-6, "maximum": 1e-2},
        "lora_rank": {"type": "integer", "minimum": 1, "maximum": 128},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 16},
        "resolution": {"anyOf": [SIDE, {"type": "array", "items": SIDE, "minItems": 1, "maxItems": MAX_RESOLUTIONS}],
                       "description": "bucket size in pixels, or several (e.g. [512, 768, 1024]) to train every photo "
                                      "at each; samples use the largest"},
        "caption_dropout_rate": {"type": "number", "minimum": 0, "maximum": 0.5},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "sample_every": {"type": "integer", "minimum": 0, "maximum": 5000},
        "sample_prompts": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "memory_mode": {"type": "string", "enum": list(MEMORY_MODES),
                        "description": "fast (bf16, all on the GPU) or low (checkpointing, offloading, 4-bit base on CUDA)"},
    }),
    "TrainingCreate": obj({"input": ref("TrainingInput"), **WEBHOOK_FIELDS}, ["input"]),
    "Training": obj({
        "id": ID, "name": {"type": "string"}, "status": STATUS,
        "parent": {"anyOf": [ID, {"type": "null"}], "description": "the training this one continues"},
        "input": {"type": "object"},
        "output": nullable(obj({"weights": nullable(URL), "kohya_weights": nullable(URL), "config": nullable(URL)})),
        "logs": {"type": "string"}, "error": {"type": ["string", "null"]},
        "metrics": {"type": "object"}, "samples": {"type": "array", "items": {"type": "object"}},
        "queue": nullable(obj({
            "position": {"type": "integer", "minimum": 1, "description": "1 = next to start"},
            "running": {"type": "integer", "minimum": 0, "description": "trainings running now"},
        }, description="while the training waits for the GPU worker, as its page shows; null otherwise")),
        "created_at": STAMP, "started_at": STAMP, "completed_at": STAMP,
        "urls": obj({"get": URL, "cancel": URL, "web": URL, "training_data": URL, "stream": STREAM}),
    }, ["id", "status", "input", "output", "logs", "error", "metrics", "created_at", "urls"], closed=False),
    "LoraRef": obj({
        "training": {**ID, "description": "your succeeded training"}, "model": {**ID, "description": "a gallery model"},
        "scale": {"type": "number", "minimum": -2, "maximum": 2},
    }),
    "PredictionInput": obj({
        "prompt": {"type": "string", "minLength": 1, "maxLength": 1000},
        "loras": {"type": "array", "items": ref("LoraRef"), "maxItems": 4},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "steps": {"type": "integer", "minimum": 1, "maximum": 100},
        "guidance": {"type": "number", "minimum": 0, "maximum": 20},
        "width": {"type": "integer", "minimum": 16, "maximum": 2048, "multipleOf": 16},
        "height": {"type": "integer", "minimum": 16, "maximum": 2048, "multipleOf": 16},
        "num_outputs": {"type": "integer", "minimum": 1, "maximum": 4}, "base_model": {"type": "string"},
    }, ["prompt"]),
    "PredictionCreate": obj({"input": ref("PredictionInput"), **WEBHOOK_FIELDS}, ["input"]),
    "Prediction": obj({
        "id": ID, "status": STATUS,
        "input": {"type": "object", "description": "the input as sent, defaults filled in (loras as "
                  "[{\"training\": id, \"scale\": s}] or [{\"model\": id, ...}]): post it again to remake it"},
        "output": nullable({"type": "array", "items": URL}), "logs": {"type": "string"},
        "error": {"type": ["string", "null"]}, "metrics": {"type": "object"},
        "queue": nullable(obj({
            "position": {"type": "integer", "minimum": 1, "description": "1 = next to start"},
            "ahead": {"type": "integer", "minimum": 0, "description": "predictions queued before this one"},
            "training": {"type": ["object", "null"], "description": "the running training it waits for: step, total, eta_s, it_per_s"},
            "gpu_workers": {"type": "integer", "minimum": 0},
            "wait_s": {"type": "integer", "minimum": 0, "description": "rough seconds until it starts"},
            "per_image_s": {"type": "number", "description": "typical seconds per image lately"},
        }, description="while the prediction waits, as its page shows; null otherwise")),
        "created_at": STAMP, "started_at": STAMP, "completed_at": STAMP,
        "urls": obj({"get": URL, "cancel": URL, "web": URL, "stream": STREAM}),
    }, ["id", "status", "input", "output", "logs", "error", "metrics", "created_at", "urls"], closed=False),
    "Model": obj({
        "id": ID, "title": {"type": "string"}, "description": {"type": "string"}, "owner": {"type": "string"},
        "trigger_word": {"type": "string"}, "base_model": {"type": "string"}, "license": LICENSE,
        "tags": {"type": "array", "items": {"type": "string"}}, "published": {"type": "boolean"},
        "like_count": {"type": "integer", "minimum": 0},
        "liked": {"type": "boolean", "description": "whether you like it (false without a token)"},
        "weights": {"type": "object"}, "kohya_weights": {"type": "object"},
        "examples": {"type": "array", "items": {"type": "object"}},
        "hub": obj({
            "repo": {"type": ["string", "null"]}, "url": {**nullable(URL), "description": "the repo on the Hub, once pushed"},
            "pushed_at": STAMP,
            "status": {"type": ["string", "null"], "enum": ["pushing", "pushed", "failed", None],
                       "description": "your own model's last push (null for others' models)"},
            "error": {"type": ["string", "null"], "description": "why your last push failed"},
        }),
        "urls": obj({"get": URL, "like": URL, "web": URL}),
    }, ["id", "title", "trigger_word", "base_model", "weights", "urls"], closed=False),
    "ModelPublish": obj({
        "training": ID, "title": {"type": "string", "maxLength": 120}, "description": {"type": "string"},
        "trigger_word": {"type": "string", "maxLength": 40}, "license": LICENSE,
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
        "examples": {"type": "array", "maxItems": 8, "items": obj({"prediction": ID, "index": {"type": "integer", "minimum": 0}}, ["prediction"])},
        "published": {"type": "boolean", "default": True,
                      "description": "false saves a private draft, or unpublishes a published model"},
        "publish": {"type": "boolean", "deprecated": True, "description": "older name of `published`"},
    }, ["training"]),
    "ModelExamplesAdd": obj({
        "samples": {"type": "array", "items": ID, "minItems": 1, "maxItems": 24,
                    "description": "ids of the model's training samples (the training's `samples[].id`)"},
        "images": {"type": "array", "maxItems": 8, "items": obj({"prediction": ID, "index": {"type": "integer", "minimum": 0}}, ["prediction"]),
                   "description": "your generated images made with this model's LoRA"},
    }, description="give samples, images or both; ones already among the examples are skipped"),
    "ModelExampleUpdate": obj({"is_cover": {"type": "boolean", "const": True, "description": "make this example the cover"}},
                              ["is_cover"]),
    "HubPush": obj({
        "repo_id": {"type": "string", "maxLength": 200, "description": "your-hf-name/my-lora, or a bare name for the token's namespace"},
        "token": {"type": "string", "maxLength": 400, "description": "a Hugging Face write token; used once by the worker, never stored"},
        "private": {"type": "boolean", "default": False},
    }, ["repo_id", "token"]),
    "WebhookSecret": obj({"key": {"type": "string", "description": "whsec_<base64 key>"}}, ["key"]),
    "Delivery": obj({
        "id": ID, "webhook_id": {"type": "string"}, "event": {"type": "string", "enum": list(EVENTS)}, "url": URL,
        "object": {"type": "object"}, "attempt": {"type": "integer"}, "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]}, "duration_ms": {"type": "integer"}, "created_at": STAMP,
    }, closed=False),
    "Account": obj({"type": {"type": "string"}, "username": {"type": "string"}, "token": {"type": ["string", "null"]}}),
    "Token": obj(TOKEN_FIELDS, TOKEN_REQUIRED, closed=False),
    "TokenCreate": obj({"name": {"type": "string", "minLength": 1, "maxLength": NAME_CHARS,
                                 "description": "e.g. the script that will use it (runs of whitespace become one space; "
                                                "longer is refused, never cut)"}}, ["name"]),
    "TokenCreated": obj({**TOKEN_FIELDS, "token": {
        "type": "string", "description": "the secret, for `Authorization: Bearer`: in this answer only"}},
        [*TOKEN_REQUIRED, "token"], closed=False),
}
