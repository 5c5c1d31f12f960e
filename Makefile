# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-fast bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

.env:
	cp .env.example .env

run: $(STAMP) .env
	@echo "Starting the embedded Redis, the ihuyi sandbox, worker, beat and Flower (Ctrl-C stops them)."
	@echo "  Flower:  http://127.0.0.1:5555  (user/password: FLOWER_BASIC_AUTH in .env)"
	@echo "  Try:     $(BIN)/voicecode send 13800138000 4821 --wait 10"
	@echo "  Or:      $(BIN)/voicecode demo"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile.dev start

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

bench: $(STAMP)
	$(BIN)/python -m bench

demo: $(STAMP) .env
	$(BIN)/voicecode demo

clean:
	rm -rf $(VENV) .voicecode
