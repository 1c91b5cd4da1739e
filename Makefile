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

.PHONY: demo test protos vllm clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/grar train --config configs/cpu-tiny.yaml

$(VLLM_STAMP): constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q "pip==$(PIP_VERSION)"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -r constraints-vllm.txt
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

test: $(STAMP) $(VLLM_STAMP)
	$(PY) -m pytest -q

protos: $(STAMP)
	$(PY) -m protos.generate

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
