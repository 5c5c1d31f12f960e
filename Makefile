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

# Verification (the login page, voicecode verify, the demo's) needs VOICECODE_SECRET: an older .env gets .env.example's.
SECRET_IN_ENV = grep -q '^VOICECODE_SECRET=.' .env || { printf '\n%s\n' "$$(grep '^VOICECODE_SECRET=' .env.example)" >> .env && \
	echo "Added .env.example's dev VOICECODE_SECRET to .env (verification needs one)."; }

run: $(STAMP) .env
	@$(SECRET_IN_ENV)
	@echo "Starting the embedded Redis, the ihuyi sandbox, worker, beat, Flower and the login page (Ctrl-C stops them all, the Redis too)."
	@echo "  Log in:  http://127.0.0.1:8000/  (the code is read out on the sandbox's phone: http://127.0.0.1:8099/)"
	@echo "  Flower:  http://127.0.0.1:5555  (user/password: FLOWER_BASIC_AUTH in .env)"
	@echo "  Try:     $(BIN)/voicecode send 13800138000 4821 --wait 10"
	@echo "  Or:      $(BIN)/voicecode demo"
	PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/voicecode with-embedded-redis $(BIN)/honcho -f Procfile.dev start

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

bench: $(STAMP)
	$(BIN)/python -m bench

demo: $(STAMP) .env
	@$(SECRET_IN_ENV)
	$(BIN)/voicecode demo

clean:
	rm -rf $(VENV) .voicecode
