"""The OpenAPI 3.1 document of /api/v1, written by hand next to the views it describes.

One module, plain dicts: the schemas say what the views accept (unknown fields are refused, as
the views do) and what the serializers return. `document()` is served at /api/v1/openapi.json
and rendered at /api/v1/docs/.
"""

from __future__ import annotations

from typing import Any

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
        "urls": obj({"get": URL, "download": URL}),
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
        "urls": obj({"get": URL, "files": URL, "captioning": URL, "export": URL, "web": URL}),
    }, ["id", "name", "trigger_word", "counts", "urls"], closed=False),
    "DatasetEdit": obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 120},
        "trigger_word": {"type": "string", "maxLength": 40, "description": "2-40 letters, digits, _ or -; \"\" clears it"},
        "caption_placement": {"type": "string", "enum": list(CaptionPlacement.values),
                              "description": "where auto-captions put the trigger word"},
        "caption_prefix": {"type": "string", "maxLength": 200}, "caption_suffix": {"type": "string", "maxLength": 200},
        "captioner": {"type": "string", "maxLength": 200, "description": "a captioner preset or kind:path; \"\" = the studio's"},
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
        "metrics": {"type": "object"}, "updated_at": STAMP, "urls": obj({"get": URL, "dataset": URL}),
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
        "urls": obj({"get": URL, "cancel": URL, "web": URL, "training_data": URL}),
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
        "id": ID, "status": STATUS, "input": {"type": "object"},
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
        "urls": obj({"get": URL, "cancel": URL, "web": URL}),
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
    "TokenCreate": obj({"name": {"type": "string", "minLength": 1, "maxLength": 80,
                                 "description": "e.g. the script that will use it"}}, ["name"]),
    "TokenCreated": obj({**TOKEN_FIELDS, "token": {
        "type": "string", "description": "the secret, for `Authorization: Bearer`: in this answer only"}},
        [*TOKEN_REQUIRED, "token"], closed=False),
}

PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
ERRORS = {code: {"description": text, "content": PROBLEM} for code, text in (
    ("401", "no or bad token"), ("404", "no such object, or not yours"), ("422", "invalid input (field errors)"),
    ("429", "rate limited (see Retry-After)"),
)}


CONFLICT = {"409": {"description": "not possible in the object's current state (the detail says why)", "content": PROBLEM}}


def json_response(schema: S, description: str = "OK") -> S:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def binary(description: str) -> S:
    return {"description": description, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def path_id(name: str = "id") -> S:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def path_str(name: str, choices: list[str]) -> S:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": choices}}


LIST_PARAMS = [
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}, "description": "from `next`"},
    {"name": "page_size", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
]


def op(op_id: str, summary: str, ok: dict[str, S], *, params: list[S] | None = None, body: S | None = None,
       public: bool = False, description: str = "") -> S:
    operation: S = {"operationId": op_id, "summary": summary, "responses": {**ok, **ERRORS}}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    if public:
        operation["security"] = [{}, {"bearerAuth": []}]
    return operation


def jbody(name: str) -> S:
    return {"application/json": {"schema": ref(name)}}


PREFER = {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string", "pattern": "^wait(=[0-9]{1,2})?$"},
          "description": "wait=n: hold the request up to n seconds (max 60) until the prediction finishes"}

def events_op(op_id: str, what: str, ends: str) -> S:
    return {"parameters": [path_id()], "get": op(
        op_id, f"Watch {what}'s events live (Server-Sent Events)",
        {"200": {"description": "text/event-stream: stored events, then `replayed`, then live ones",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}},
         "204": {"description": "finished, and nothing after the given id: stop reconnecting"}},
        params=[{"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                 "description": "send only events after this id (an EventSource sends Last-Event-ID instead)"},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}],
        description="Each frame: `id`, `event` (its kind: state, progress, log, sample, …) and `data` (the event as "
                    f"JSON: id, kind, data, ts); the same events the web page shows. {ends} A comment line comes every "
                    "15 s while idle.")}


PATHS: S = {
    "/files": {
        "get": op("listFiles", "List your uploaded photos", {"200": json_response(page_of("File"))},
                  params=[*LIST_PARAMS, {"name": "dataset", "in": "query", "required": False, "schema": ID}]),
        "post": op("createFiles", "Upload images or .zip archives", {"201": json_response(ref("FileUploadResult"), "accepted files and rejection reasons")},
                   body={"multipart/form-data": {"schema": obj({
                       "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1},
                       "dataset": {"type": "integer", "minimum": 1}}, ["file"])}},
                   description="Each file goes through the studio's photo checks. Lands in `dataset` or your 'API uploads' dataset."),
    },
    "/files/uploads/{id}": {"parameters": [path_id()], "get": op(
        "getFileUpload", "An upload (one POST /files): its files; its URL is a training's input_images",
        {"200": json_response(ref("FileUploadResult"))})},
    "/files/{id}": {
        "parameters": [path_id()],
        "get": op("getFile", "Get a file", {"200": json_response(ref("File"))}),
        "patch": op("updateFile", "Edit a photo's caption or exclude it from training", {"200": json_response(ref("File"))},
                    body=jbody("FileUpdate"),
                    description="A caption set here is yours: auto-captioning keeps it unless asked to overwrite."),
        "delete": op("deleteFile", "Delete a file", {"204": {"description": "deleted"}}),
    },
    "/files/{id}/download": {"parameters": [path_id()], "get": op("downloadFile", "Download the original", {"200": binary("the file")})},
    "/datasets": {
        "get": op("listDatasets", "List your datasets, newest first", {"200": json_response(page_of("Dataset"))}, params=LIST_PARAMS),
        "post": op("createDataset", "Create a dataset", {"201": json_response(ref("Dataset"), "created")},
                   body={"application/json": {"schema": {**ref("DatasetEdit"), "description": "`name` is required"}}},
                   description="Add photos with POST /files and its `dataset` field (images, or a zip with same-name "
                               ".txt captions)."),
    },
    "/datasets/{id}": {
        "parameters": [path_id()],
        "get": op("getDataset", "Get a dataset with its photos, health and captioning", {"200": json_response(ref("Dataset"))}),
        "patch": op("updateDataset", "Rename a dataset, or change its trigger word and caption style",
                    {"200": json_response(ref("Dataset"))}, body=jbody("DatasetEdit")),
        "delete": op("deleteDataset", "Delete a dataset and its photos", {"204": {"description": "deleted"}},
                     description="Trainings made from it keep the photos and captions they froze at launch."),
    },
    "/datasets/{id}/events": events_op("watchDataset", "a dataset", "Auto-captioning progress: `captioning` and "
                                       "`caption` events; the stream stays open."),
    "/datasets/{id}/duplicate": {"parameters": [path_id()], "post": op(
        "duplicateDataset", "Copy a dataset (photo files, captions, style)", {"201": json_response(ref("Dataset"), "the copy")},
        body=jbody("DatasetCopy"))},
    "/datasets/{id}/export": {"parameters": [path_id()], "get": op(
        "exportDataset", "The training photos with same-name .txt captions, as a zip",
        {"200": {"description": "zip", "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}})},
    "/datasets/{id}/files/bulk": {"parameters": [path_id()], "post": op(
        "bulkEditFiles", "Exclude, include or delete many photos of a dataset at once",
        {"200": json_response(ref("FilesBulkResult"), "how many photos changed, and the dataset's new counts")},
        body=jbody("FilesBulk"),
        description="All or nothing: an id that is not a photo of this dataset changes nothing (422).")},
    "/datasets/{id}/captions/bulk": {"parameters": [path_id()], "post": op(
        "bulkEditCaptions", "Find/replace, prepend, append, insert the trigger word or fill templates in many captions",
        {"200": json_response(ref("CaptionsBulkResult"), "what changed (or would, with dry_run)")}, body=jbody("CaptionsBulk"),
        description="All or nothing: an edit that would make any caption longer than 2,000 characters is a 422 naming "
                    "the photos, and changes nothing.")},
    "/datasets/{id}/captions/undo": {"parameters": [path_id()], "post": op(
        "undoBulkCaptionEdit", "Undo the last bulk caption edit: each caption's text and former source come back",
        {"200": json_response(ref("CaptionsUndoResult"), "what was put back, and what was left as it is"), **CONFLICT},
        body={"application/json": {"schema": ref("CaptionsUndo")}},
        description="As the dataset page's Undo: an auto caption comes back as auto (re-captioning may refresh it), "
                    "one from a zip's .txt as file. Only the last bulk edit made over the API is kept, once: 409 when "
                    "there is none (never made, or undone already) or `edit` is not it. A caption changed since the "
                    "bulk edit stays as it is (`skipped`).")},
    "/datasets/{id}/captioning": {
        "parameters": [path_id()],
        "get": op("getCaptioning", "The dataset's latest auto-captioning run", {"200": json_response(ref("Captioning"))}),
        "post": op("startCaptioning", "Auto-caption the dataset on the GPU worker",
                   {"202": json_response(ref("Captioning"), "queued; poll urls.get")},
                   body={"application/json": {"schema": ref("CaptioningStart")}},
                   description="Captions you wrote or uploaded stay unless `overwrite`; excluded photos are skipped. "
                               "New captions appear on the photos in GET /datasets/{id}."),
    },
    "/trigger-words/check": {"get": op(
        "checkTriggerWord", "Check a trigger word as the dataset page does", {"200": json_response(ref("TriggerWordCheck"))},
        params=[{"name": "word", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 200}},
                {"name": "base_model", "in": "query", "required": False, "schema": {"type": "string"}}])},
    "/trainings": {
        "get": op("listTrainings", "List your trainings, newest first", {"200": json_response(page_of("Training"))}, params=LIST_PARAMS),
        "post": op("createTraining", "Train a LoRA", {"201": json_response(ref("Training"), "created")},
                   body={**jbody("TrainingCreate"), "multipart/form-data": {"schema": obj({
                       "input": {"type": "string", "description": "the TrainingInput object as JSON text"},
                       "input_images": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1},
                       "webhook": WEBHOOK_FIELDS["webhook"],
                       "webhook_events_filter": {"type": "string", "description": "e.g. start,completed"}},
                       ["input", "input_images"])}},
                   description="JSON, or multipart with the images (a zip) as `input_images` file parts; the answer "
                               "then lists `rejected_files` with reasons."),
    },
    "/trainings/{id}": {
        "parameters": [path_id()],
        "get": op("getTraining", "Get a training", {"200": json_response(ref("Training"))}),
        "delete": op("deleteTraining", "Delete a finished training and its files", {"204": {"description": "deleted"}, **CONFLICT},
                     description="409 while it runs (cancel first), while it is published in the gallery (unpublish "
                                 "first) or while a continuation of it has not succeeded."),
    },
    "/trainings/{id}/events": events_op("watchTraining", "a training", "The stream ends after the `state` event "
                                        "that finishes the training (succeeded, failed, canceled)."),
    "/trainings/{id}/cancel": {"parameters": [path_id()], "post": op("cancelTraining", "Cancel a training", {"200": json_response(ref("Training"))})},
    "/trainings/{id}/resume": {"parameters": [path_id()], "post": op(
        "resumeTraining", "Resume a canceled or failed training from its last checkpoint",
        {"200": json_response(ref("Training")), **CONFLICT}, body={"application/json": {"schema": ref("TrainingResume")}})},
    "/trainings/{id}/continue": {"parameters": [path_id()], "post": op(
        "continueTraining", "Train a succeeded LoRA further, as a new training from its weights",
        {"201": json_response(ref("Training"), "the new training (its `parent` is this one)"), **CONFLICT},
        body=jbody("TrainingContinue"))},
    "/trainings/{id}/files/{kind}": {
        "parameters": [path_id(), path_str("kind", ["weights", "kohya_weights", "config", "training_data"])],
        "get": op("downloadTrainingFile", "Download the LoRA (diffusers or kohya layout), its config, or the training data "
                  "(a zip: dataset/ with the photos and captions as trained, beside which config.yaml runs as it is)",
                  {"200": binary(".safetensors, .yaml or .zip")}),
    },
    "/trainings/{id}/samples/{sample_id}": {
        "parameters": [path_id(), path_id("sample_id")],
        "get": op("getTrainingSample", "A sample image made during training", {"200": binary("image")}),
    },
    "/predictions": {
        "get": op("listPredictions", "List your predictions, newest first", {"200": json_response(page_of("Prediction"))}, params=LIST_PARAMS),
        "post": op("createPrediction", "Generate images", {"201": json_response(ref("Prediction"), "created")},
                   body=jbody("PredictionCreate"), params=[PREFER]),
    },
    "/predictions/{id}": {
        "parameters": [path_id()],
        "get": op("getPrediction", "Get a prediction", {"200": json_response(ref("Prediction"))}),
        "delete": op("deletePrediction", "Delete a prediction and its images (canceled first if it runs)",
                     {"204": {"description": "deleted"}}),
    },
    "/predictions/{id}/events": events_op("watchPrediction", "a prediction", "The stream ends after the `state` event "
                                          "that finishes the prediction."),
    "/predictions/{id}/cancel": {"parameters": [path_id()], "post": op("cancelPrediction", "Cancel a prediction", {"200": json_response(ref("Prediction"))})},
    "/predictions/{id}/images/{index}": {
        "parameters": [path_id(), {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}],
        "get": op("getPredictionImage", "Download an output image", {"200": binary("PNG")}),
    },
    "/models": {
        "get": op("listModels", "Browse the public gallery", {"200": json_response(page_of("Model"))}, public=True, params=[
            *LIST_PARAMS, {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "sort", "in": "query", "required": False, "schema": {"type": "string", "enum": ["newest", "used", "liked"]}},
            {"name": "base_model", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "a base the studio offers, or one a published model has; another is a 422"},
            {"name": "tag", "in": "query", "required": False, "schema": {"type": "string"}}]),
        "post": op("publishModel", "Publish, update or unpublish the gallery model of a succeeded training",
                   {"200": json_response(ref("Model"), "the training's model was there: updated, published or unpublished"),
                    "201": json_response(ref("Model"), "created: published, or saved as a private draft")},
                   body=jbody("ModelPublish")),
    },
    "/models/{id}": {"parameters": [path_id()], "get": op("getModel", "Get a gallery model", {"200": json_response(ref("Model"))}, public=True)},
    "/models/{id}/hub": {"parameters": [path_id()], "post": op(
        "pushModelToHub", "Push your published model to the Hugging Face Hub",
        {"202": json_response(ref("Model"), "queued: `hub.status` is pushing; poll urls.get until pushed or failed")},
        body=jbody("HubPush"),
        description="The LoRA files, examples and a model card, in one commit. 422 when the model is not published, "
                    "the name or token is missing or bad; 409 while a push of it is already under way.")},
    "/models/{id}/like": {
        "parameters": [path_id()],
        "post": op("likeModel", "Like a published model (again: no change)", {"200": json_response(ref("Model"), "with the new like_count")}),
        "delete": op("unlikeModel", "Take back your like (none: no change)", {"200": json_response(ref("Model"), "with the new like_count")}),
    },
    "/models/{id}/files/{kind}": {
        "parameters": [path_id(), path_str("kind", ["weights", "kohya_weights"])],
        "get": op("downloadModelFile", "Download a published LoRA",
                  {"200": binary(".safetensors, named <title-slug>-<trigger>[-kohya].safetensors as on the model page")},
                  public=True),
    },
    "/models/{id}/examples": {"parameters": [path_id()], "post": op(
        "addModelExamples", "Add training samples or generated images to your model's examples",
        {"201": json_response(ref("Model"), "the model with its examples")}, body=jbody("ModelExamplesAdd"),
        description="As the publishing page's \"add\": an id that is not a sample of the model's training is a 422.")},
    "/models/{id}/examples/{example_id}": {
        "parameters": [path_id(), path_id("example_id")],
        "get": op("getModelExample", "An example image of a model", {"200": binary("image")}, public=True),
        "patch": op("updateModelExample", "Make an example of your model its cover", {"200": json_response(ref("Model"))},
                    body=jbody("ModelExampleUpdate")),
        "delete": op("deleteModelExample", "Remove an example from your model (the next one becomes the cover)",
                     {"204": {"description": "removed"}}),
    },
    "/account": {"get": op("getAccount", "Who this token belongs to", {"200": json_response(ref("Account"))})},
    "/webhooks/default/secret": {"get": op("getWebhookSecret", "The key webhook signatures are made with", {"200": json_response(ref("WebhookSecret"))})},
    "/webhooks/default/secret/rotate": {"post": op("rotateWebhookSecret", "Replace the webhook secret", {"200": json_response(ref("WebhookSecret"))})},
    "/webhooks/deliveries": {"get": op("listWebhookDeliveries", "The delivery log, one row per attempt", {"200": json_response(page_of("Delivery"))}, params=LIST_PARAMS)},
    "/tokens": {
        "get": op("listTokens", "List your API tokens, revoked ones too (never their secrets)",
                  {"200": json_response(page_of("Token"))}, params=LIST_PARAMS),
        "post": op("createToken", "Create an API token", {"201": json_response(ref("TokenCreated"), "its secret, shown once")},
                   body=jbody("TokenCreate"),
                   description="Only a hash of the secret is kept; a lost token cannot be shown again: revoke it and "
                               "create another. At most 50 active tokens (422)."),
    },
    "/tokens/{id}": {
        "parameters": [path_id()],
        "get": op("getToken", "Get one of your API tokens", {"200": json_response(ref("Token"))}),
        "delete": op("revokeToken", "Revoke a token (again: no change)", {"204": {"description": "revoked"}},
                     description="Requests with it answer 401 from now on; the token sending this request may revoke "
                                 "itself. It stays listed as revoked."),
    },
}

DESCRIPTION = """\
Train FLUX.1 LoRAs and generate with them, shaped like Replicate's HTTP API.

Authenticate with `Authorization: Bearer <token>` (create the first token at /api/v1/tokens/;
then POST /tokens makes more). Errors are RFC 9457 problem documents. Lists are paginated with
an opaque `cursor` (follow `next`). Requests are rate limited per token (fixed one-minute
window; 429 with Retry-After).

Webhooks (`webhook`, `webhook_events_filter` on create) POST the object as GET returns it, signed
like Standard Webhooks: headers webhook-id, webhook-timestamp and webhook-signature =
"v1,<base64 HMAC-SHA256 of id.timestamp.body>" keyed with the base64-decoded part of your
secret after "whsec_" (GET /webhooks/default/secret). Failed deliveries are retried with
exponential backoff; "logs" events are sent at most once every few seconds per object.

Live progress without a webhook: GET /trainings/{id}/events (and /predictions/{id}/events,
/datasets/{id}/events) is a Server-Sent Events stream, e.g. `curl -N -H "Authorization: Bearer
$TOKEN" …/events`; reconnect with Last-Event-ID to get only what you missed.
"""


def document(*, server: str = "/api/v1") -> S:
    return {
        "openapi": "3.1.0",
        "info": {"title": "FLUX Studio API", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [{"url": server}],
        "security": [{"bearerAuth": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "a personal API token"}},
        },
    }


def operations_for_docs() -> list[S]:
    """Operations flattened for the HTML docs page."""
    rows = []
    for path, item in PATHS.items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            body = operation.get("requestBody", {}).get("content", {})
            body_ref = next((c["schema"].get("$ref", "") for c in body.values()), "").rsplit("/", 1)[-1]
            rows.append({
                "method": method.upper(), "path": "/api/v1" + path, "summary": operation["summary"],
                "description": operation.get("description", ""), "params": [*shared, *operation.get("parameters", [])],
                "body": body_ref, "body_types": list(body), "responses": operation["responses"],
                "public": "security" in operation, "id": operation["operationId"],
            })
    return rows
