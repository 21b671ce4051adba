# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
SFD    := $(VENV)/bin/slowfast-dist
DEMO_DATA ?= demo_data
DEMO_OUT  ?= demo_output

.PHONY: venv test demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(SFD) make-synthetic $(DEMO_DATA)
	$(VENV)/bin/torchrun --standalone --nproc_per_node 2 -m slowfast_dist.cli train \
	    --cfg configs/demo.yaml AVA.DATA_ROOT $(DEMO_DATA) OUTPUT_DIR $(DEMO_OUT)
	@echo "TensorBoard logs: $(DEMO_OUT)/tensorboard  (view: $(VENV)/bin/tensorboard --logdir $(DEMO_OUT))"

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUT)
