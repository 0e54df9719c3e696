# FLUX Studio: `make run` sets up and starts the studio; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run worker test test-embedded test-scaled bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first with its exact version so pip takes the local CPU wheel instead of a
# multi-gigabyte CUDA download. On a GPU box install the CUDA build of torch 2.13.0 into .venv
# before `make setup` (README: "GPU machines").
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v 0

run: setup
	$(BIN)/python manage.py studio --host $(HOST) --port $(PORT)

worker: setup
	$(BIN)/python manage.py run_worker --queue gpu

# Every test runs on the embedded shape; the tests marked `services` run again on the scaled-out
# shape (PostgreSQL, Redis, and an S3-compatible server the tests start).
test: setup test-embedded test-scaled

test-embedded: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-scaled: $(STAMP)
	FLUX_TEST_SHAPE=scaled $(BIN)/python -m pytest -m services $(PYTEST_ARGS)

# Every benchmark prints its figures; the GPU ones (bash bench/gpu_suite.sh) need CUDA and are run by hand.
bench: $(STAMP)
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/caption_speed.py
	$(BIN)/python bench/generate_speed.py
	$(BIN)/python bench/demo_fidelity.py
	$(BIN)/python bench/event_latency.py
	$(BIN)/python bench/event_latency.py --shape scaled

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
