# Two entry points: `make demo` and `make test`. Both build .venv from
# requirements.txt (pinned) and install the package in it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test assets bench bible clean

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
	$(PY) -m ruff check tf_finetune tests scripts benchmarks
	$(PY) -m pyink --check --diff tf_finetune tests scripts benchmarks
	$(PY) -m pytest -q --durations=25 tests

clean:
	rm -rf $(VENV) runs

# Benchmarks (not tests): need `make demo` first for the assets and the run.
bench: assets
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) benchmarks/finetune_throughput.py
	$(PY) benchmarks/serving_latency.py --model_dir=runs/sentiment_demo
	$(PY) benchmarks/sentiment_pairs.py
	$(PY) benchmarks/question_answering.py
	$(MAKE) bible
	$(PY) benchmarks/translation_bible.py

# The English-Spanish Bible corpus (assets/bible/en-es/*.tsv) from Debian's
# public-domain SWORD modules: a prerequisite of the translation benchmark,
# not of `make test`. Needs apt-get (no root: `apt-get download` only fetches).
SWORD_PACKAGES := sword-text-web sword-text-sparv

bible: $(STAMP)
	mkdir -p assets/downloads assets/sword
	for package in $(SWORD_PACKAGES); do \
	  ls assets/downloads/$${package}_*.deb >/dev/null 2>&1 || \
	    (cd assets/downloads && apt-get download $$package) || exit 1; \
	  dpkg-deb -x "$$(ls assets/downloads/$${package}_*.deb | tail -n 1)" \
	    assets/sword || exit 1; \
	done
	$(PY) scripts/prepare_bible_parallel.py --sword_dir=assets/sword \
	    --output_dir=assets/bible/en-es
