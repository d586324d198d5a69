# Every target sets itself up into .venv/ at the repo root, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,example]'
	# keras-hub for the transformer tests, without tensorflow-text: only its text preprocessors
	# import it, and it would pull in the full tensorflow package beside tensorflow-cpu
	$(BIN)/pip install -q --no-deps 'keras-hub==0.32.0'
	$(BIN)/pip install -q absl-py kagglehub kagglesdk==0.1.28 packaging regex rich sentencepiece tokenizers
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/mnist_cnn/run.py

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
