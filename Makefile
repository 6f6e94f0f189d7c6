# Two entry points: `make demo` and `make test`. Both build .venv from
# requirements.txt (pinned) and install the package in it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test assets bench clean

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

assets: $(STAMP)
	$(PY) scripts/prepare_demo_data.py --output_dir=assets
	$(PY) scripts/prepare_pair_data.py --output_dir=assets

demo: assets
	$(PY) -m tf_finetune.train --flagfile=flags/sentiment_demo.flags
	$(PY) scripts/classify_with_saved_model.py \
	    --saved_model=runs/sentiment_demo/export \
	    --input_file=examples/demo_sentences.csv

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs

# Benchmarks (not tests): need `make demo` first for the assets and the run.
bench: assets
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) benchmarks/finetune_throughput.py
	$(PY) benchmarks/serving_latency.py --model_dir=runs/sentiment_demo
	$(PY) benchmarks/sentiment_pairs.py
