"""The OpenAPI 3.1 document of /api/v1, written by hand next to the views it describes.

Plain dicts: the paths here, the schemas in flux_studio.api.openapi_schemas (what the views
accept and the serializers return). `document()` is served at /api/v1/openapi.json and
rendered at /api/v1/docs/.
"""

from __future__ import annotations

from flux_studio.api.openapi_schemas import ID, S, SCHEMAS, URL, WEBHOOK_FIELDS, obj, page_of, ref

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
STATUS_PARAM = {"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "pattern": "^(starting|processing|succeeded|failed|canceled)"
                                                       "(,(starting|processing|succeeded|failed|canceled))*$"},
                "description": "only these statuses, comma-separated, e.g. `failed,canceled`"}


BODY_ERRORS = {code: {"description": text, "content": PROBLEM} for code, text in (
    ("400", "a body that is not well-formed (broken JSON or multipart)"), ("413", "the body is too large"),
    ("415", "a body of a type this operation does not take"),
)}


def op(op_id: str, summary: str, ok: dict[str, S], *, params: list[S] | None = None, body: S | None = None,
       public: bool = False, description: str = "") -> S:
    operation: S = {"operationId": op_id, "summary": summary, "responses": {**ok, **ERRORS, **(BODY_ERRORS if body else {})}}
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
                    "15 s while idle. A 429 also answers one stream more than API_MAX_STREAMS_PER_USER (20) open at "
                    "once.")}


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
    "/files/{id}/download/{version}": {
        "parameters": [path_id(), path_str("version", ["image", "thumbnail"])],
        "get": op("downloadFileVersion", "Download the copy that trains (upright, metadata stripped) or the thumbnail",
                  {"200": binary("the image, named <name>-<version>.<format>")}),
    },
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
    "/presets": {"get": op(
        "listPresets", "The launch page's presets on a base: settings and time estimates per memory mode",
        {"200": json_response({"type": "object", "properties": {
            "base_model": {"type": "string"}, "base_models": {"type": "array", "items": {"type": "string"}},
            "default_preset": {"type": "string"}, "photos": {"type": "integer"},
            "memory_modes": {"type": "object", "additionalProperties": {"type": "string"}},
            "presets": {"type": "array", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "label": {"type": "string"}, "explanation": {"type": "string"},
                "settings": {"type": "object"},
                "estimated_seconds": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}})},
        params=[{"name": "base_model", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "one the studio offers (`base_models`); the default base when left out"},
                {"name": "photos", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                 "description": "the dataset's photo count, for the estimates (20 when left out)"}])},
    "/trainings": {
        "get": op("listTrainings", "List your trainings, newest first", {"200": json_response(page_of("Training"))},
                  params=[*LIST_PARAMS, STATUS_PARAM]),
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
        "get": op("listPredictions", "List your predictions, newest first", {"200": json_response(page_of("Prediction"))},
                  params=[*LIST_PARAMS, STATUS_PARAM]),
        "post": op("createPrediction", "Generate images", {"201": json_response(ref("Prediction"), "created")},
                   body=jbody("PredictionCreate"), params=[PREFER]),
    },
    "/predictions/{id}": {
        "parameters": [path_id()],
        "get": op("getPrediction", "Get a prediction", {"200": json_response(ref("Prediction"))}),
        "delete": op("deletePrediction", "Delete a finished prediction and its images (a running one: cancel it first)",
                     {"204": {"description": "deleted"}, **CONFLICT}),
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
            {"name": "tag", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "mine", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true", "false"]},
             "description": "true: your own models instead, drafts included (needs a token)"}]),
        "post": op("publishModel", "Publish, update or unpublish the gallery model of a succeeded training",
                   {"200": json_response(ref("Model"), "the training's model was there: updated, published or unpublished"),
                    "201": json_response(ref("Model"), "created: published, or saved as a private draft")},
                   body=jbody("ModelPublish")),
    },
    "/models/filters": {"get": op(
        "getModelFilters", "What the gallery's filters offer: bases, popular tags (most used first), sorts",
        {"200": json_response({"type": "object", "properties": {
            "base_models": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "sorts": {"type": "array", "items": {"type": "string"}}}})}, public=True)},
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
                                 "itself. It stays listed as revoked. The tokens it made (created_by), and theirs in "
                                 "turn, are revoked with it."),
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
