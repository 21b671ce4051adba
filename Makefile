# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
SFD    := $(VENV)/bin/slowfast-dist
DEMO_DATA ?= demo_data
DEMO_OUT  ?= runs/demo

# `make gpu-check OUT=dir` on a machine with one CUDA GPU and a Python whose CUDA torch must not
# be replaced, without network: the other packages come from a folder of wheels made beforehand
# (README, "Checking on a GPU", has the pip download command). Writes OUT/gpu_check.json.
GPU_PYTHON ?= python3
WHEELS ?= .whl
OUT    ?= gpu_check_out
GPU_CHECK_ARGS ?=
GPU_SITE ?= /tmp/slowfast_gpu_site

.PHONY: venv test demo clean gpu-check gpu-libjpeg

venv: $(VENV)/.installed

# setup.py builds DATA.DECODER libjpeg (data/_libjpeg.c) where gcc and libjpeg-turbo's headers
# are found; without them the install goes on and DATA.DECODER auto uses simplejpeg
$(VENV)/.installed: pyproject.toml setup.py slowfast_dist/data/_libjpeg.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@$(PY) -c "from slowfast_dist.data import jpeg; print('DATA.DECODER auto decodes JPEG frames with', jpeg.resolve_decoder('auto'))"
	touch $@

test: venv $(VENV)/.dali
	$(PY) -m pytest -q tests

# NVIDIA DALI's CPU backend, so the DALI decoder's tests run on machines without a GPU too. Best
# effort (about 1 GB from PyPI): where it cannot install, those tests skip and say why.
$(VENV)/.dali: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dali]' || echo "make: NVIDIA DALI did not install; its tests will be skipped"
	touch $@

$(DEMO_DATA)/annotations/ava_action_list_v2.2.pbtxt: | venv
	$(SFD) make-synthetic $(DEMO_DATA)

# Trains configs/demo.yaml from scratch with 2 processes (gloo on CPU), evaluates the exact
# mAP after the last epoch, and compares it with a model that outputs constant scores.
demo: venv $(DEMO_DATA)/annotations/ava_action_list_v2.2.pbtxt
	rm -rf $(DEMO_OUT)
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node 2 -m slowfast_dist.cli \
	    train --cfg configs/demo.yaml AVA.FRAME_DIR $(DEMO_DATA)/frames \
	    AVA.FRAME_LIST_DIR $(DEMO_DATA)/frame_lists AVA.ANNOTATION_DIR $(DEMO_DATA)/annotations \
	    OUTPUT_DIR $(DEMO_OUT)
	$(PY) benchmarks/demo_baseline.py $(DEMO_OUT) $(DEMO_DATA) --json $(DEMO_OUT)/baseline.json
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir $(dir $(DEMO_OUT))  (the run is named $(notdir $(DEMO_OUT)))"

gpu-check:
	@ls $(WHEELS)/*.whl >/dev/null 2>&1 || { echo "gpu-check: no wheels in $(WHEELS)/ (see README, Checking on a GPU)"; exit 2; }
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target $(GPU_SITE) $(WHEELS)/*.whl
	@# DATA.DECODER libjpeg: built here if it can be, else the one `make gpu-libjpeg` made
	@# (setup.py's extension is optional: a failed build still exits 0, so the import decides)
	-$(GPU_PYTHON) setup.py -q build_ext --inplace >/dev/null 2>&1
	cd slowfast_dist/data && $(GPU_PYTHON) -c "import _libjpeg" 2>/dev/null || cp $(abspath $(WHEELS))/libjpeg/* . 2>/dev/null || true
	@$(GPU_PYTHON) -c "import sys; sys.path[:0] = ['$(GPU_SITE)', '.']; from slowfast_dist.data import jpeg; print('gpu-check: DATA.DECODER auto is', jpeg.resolve_decoder('auto'))"
	PYTHONPATH=$(GPU_SITE):$(CURDIR) PYTHONUNBUFFERED=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out $(OUT) $(GPU_CHECK_ARGS)

# DATA.DECODER libjpeg for a GPU machine that cannot build it (no compiler or no libjpeg-turbo
# headers there): the C module built here for its Python's version (GPU_PY: a Python of that
# version here), with this machine's libjpeg-turbo beside it (found through the module's
# rpath), into $(WHEELS)/libjpeg/.
GPU_PY ?= python3.12
gpu-libjpeg:
	mkdir -p $(WHEELS)/libjpeg
	PY=$(GPU_PY) && \
	INC=$$($$PY -c "import sysconfig; print(sysconfig.get_paths()['include'])") && \
	EXT=$$($$PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))") && \
	gcc -O2 -Wall -shared -fPIC -I$$INC slowfast_dist/data/_libjpeg.c -ljpeg \
	    -Wl,-rpath,'$$ORIGIN' -o $(WHEELS)/libjpeg/_libjpeg$$EXT
	cp -L $$(ldd $(WHEELS)/libjpeg/_libjpeg*.so | awk '/libjpeg/ {print $$3}') $(WHEELS)/libjpeg/
	ls -l $(WHEELS)/libjpeg

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUT)
