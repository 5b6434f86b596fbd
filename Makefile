# apnet-edge: the two commands of the README.
#   make demo   set up .venv and run the demo on real video
#   make test   set up .venv and run lint + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.apnet-edge-installed

.PHONY: setup test lint demo clean

setup: $(STAMP)

# torch/torchvision are pinned to the releases this project is tested with (CPU use; the wheels carry CUDA).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[train,export,openvino,dev]'
	# type stubs of the TensorRT 10 API (mypy checks engines/ against them; the real tensorrt cannot install here)
	$(BIN)/pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	bash scripts/run_tests.sh

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
