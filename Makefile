# make demo   set up, then run the whole pipeline once on the bundled example site
# make test   set up, then lint, check the docs, and run the test suite
# make bench  run the benchmarks by hand (not part of make test)
#
# Both set up from nothing: a virtual environment in .venv with syndicate installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# A demo-only signing key; production sets its own (see README, "Secrets").
export SYNDICATE_SECRET ?= demo-secret-not-for-production

.PHONY: install demo test lint docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@echo "== A clean slate: removing var/ and public/ from earlier demo runs"
	rm -rf var public
	$(BIN)/syndicate check
	$(BIN)/syndicate subscribers import examples/site/subscribers.csv
	$(BIN)/syndicate run --once
	$(BIN)/syndicate digest status weekly
	@echo
	@echo "Feeds:   public/feed.xml (RSS 2.0), public/atom.xml (Atom), public/feed.json (JSON Feed),"
	@echo "         public/tags/<tag>/, archives in public/history/<n>/"
	@echo "Pages:   public/archive/ (past issues, as linked from each email)"
	@echo "Emails:  var/outbox/*.eml (open one in a mail client, or run:"
	@echo "         $(BIN)/syndicate digest preview weekly --output var/preview  after adding a review)"
	@echo "Web:     SYNDICATE_SECRET=$(SYNDICATE_SECRET) $(BIN)/syndicate serve, then open"
	@echo "         http://127.0.0.1:8000/subscribe (the emails' links point there too)"
	@echo "Next:    $(BIN)/syndicate --help"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

docs: $(STAMP)
	$(BIN)/cog -r docs/cli.md

test: $(STAMP) lint
	$(BIN)/cog --check docs/cli.md
	sh tests/setup/browser.sh && sh tests/setup/redis.sh
	$(BIN)/python -m pytest -n 2 --durations=10

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/feeds_at_scale.py
	$(BIN)/python bench/send_at_scale.py
	$(BIN)/python bench/workers_at_scale.py
	$(BIN)/python bench/remote_sources.py
	$(BIN)/python bench/related_at_scale.py

clean:
	rm -rf $(VENV) var public .pytest_cache .ruff_cache test-artifacts
