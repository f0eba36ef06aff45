# `make demo` runs the main job; `make test` runs every test. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bru-installed

.PHONY: demo test test-services lint bench clean

# Every runtime dependency at the version of infra/docker/constraints.txt, as the image
# installs them: what the tests pass with is what a deployment runs.
$(STAMP): pyproject.toml infra/docker/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned, so that pip takes them from the local disk
	# where it can (they are a 5.5 GB CUDA build that also runs on the CPU)
	$(BIN)/pip install --quiet --disable-pip-version-check -c infra/docker/constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --disable-pip-version-check -c infra/docker/constraints.txt -e '.[dev,auth,dashboard]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bru campaign run configs/quick.yaml

test: $(STAMP)
	$(BIN)/pytest

# Service mode end to end: PostgreSQL, MLflow and Prefect servers and two workers as local
# processes (infra/local/stack.sh), a campaign submitted to them, every store checked.
test-services: $(STAMP)
	bash infra/local/test-services.sh

lint: $(STAMP)
	$(BIN)/ruff check bru_core flows tests infra bench
	$(BIN)/ruff format --check bru_core flows tests infra bench

bench: $(STAMP)
	$(BIN)/bru bench accuracy
	$(BIN)/bru bench activations
	$(BIN)/bru bench epochs
	$(BIN)/bru bench models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
