# `make demo` and `make test` set up .venv themselves (pinned by
# constraints.txt), so both work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := 26.3

# The vLLM server of the tests runs from its own venv (see
# constraints-vllm.txt); the judge reaches it over HTTP.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

# The demo's generated tasks: made once, reused by every later demo.
DEMO_DATA := runs/demo-data
DEMO_TASKS := --tasks chain_sum --train 1000 --heldout 200 --seed 0 \
  --option chain_sum.max_terms=3 --option chain_sum.max_digits=2

.PHONY: demo demo-data demo-tiny test test-fast docs protos vllm clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

# SFT -> GRPO -> held-out eval of base, SFT and SFT+GRPO on the shipped
# Gemma-3-270M (prepared once into $$GRAR_CACHE, default ~/.cache/grar).
demo: demo-data
	$(VENV)/bin/grar pipeline --config configs/demo-270m.yaml

# The model and the generated tasks of the demo, alone (the benches that
# run the demo's stages start here).
demo-data: $(STAMP)
	$(VENV)/bin/grar models prepare gemma3-270m
	test -f $(DEMO_DATA)/manifest.json || \
	  $(VENV)/bin/grar data make $(DEMO_TASKS) --out $(DEMO_DATA)

# The same loop on tiny random models, in about a minute: plumbing only.
demo-tiny: $(STAMP)
	$(VENV)/bin/grar train --config configs/cpu-tiny.yaml

$(VLLM_STAMP): constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q "pip==$(PIP_VERSION)"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -r constraints-vllm.txt
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# The docs first: a strict build takes seconds, the suite minutes.
test: $(STAMP) $(VLLM_STAMP) docs
	$(PY) -m pytest -q

# Everything but the slow, vLLM, Ray and end-to-end tests (markers in
# pyproject.toml): under 3 minutes on 2 cores, no .venv-vllm needed.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not vllm and not ray and not e2e"

# The documentation site, into build/site; its reference pages are generated
# from the code as it builds (docs/gen_reference.py), and --strict turns a
# broken link or a page missing from the nav into a failure.
# (NO_MKDOCS_2_WARNING: Material prints a notice about its successor on
# every build otherwise.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

protos: $(STAMP)
	$(PY) -m protos.generate

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
