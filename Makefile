# `make demo` and `make test` set up .venv themselves (pinned by
# constraints.txt), so both work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := 26.3

.PHONY: demo test protos clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/grar train --config configs/cpu-tiny.yaml

test: $(STAMP)
	$(PY) -m pytest -q

protos: $(STAMP)
	$(PY) -m protos.generate

clean:
	rm -rf $(VENV) runs
