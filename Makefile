# The only two set-up commands a user types are `make run PAIR=ETH-SOL` and `make test`:
# every target below creates .venv/ on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PAIR   ?= ETH-SOL
VENUE  ?= sim
ARGS   ?=
RUN_FLAGS := --pair $(PAIR) --venue $(VENUE)
ifdef CYCLES
RUN_FLAGS += --cycles $(CYCLES)
endif
ifdef SEED
RUN_FLAGS += --seed $(SEED)
endif
ifdef CLOCK
RUN_FLAGS += --clock $(CLOCK)
endif
ifdef FAULTS
RUN_FLAGS += --faults $(FAULTS)
endif
ifdef JOURNAL
RUN_FLAGS += --journal $(JOURNAL)
endif
ifdef GATEWAY
RUN_FLAGS += --gateway $(GATEWAY)
endif
ifdef NETWORK
RUN_FLAGS += --network $(NETWORK)
endif

.PHONY: venv run test check lint typecheck diagrams replay bench golden clean report runbook \
	chaos chaos-full deep crash

venv: $(STAMP)

# The venv's own pip (bundled with Python >= 3.11) installs everything here; upgrading it
# first only cost a download and an install.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dnpair run $(RUN_FLAGS) $(ARGS)

# Two workers: the suite is CPU-bound on the virtual clock and this machine has 2 cores.
# One test at a time to whichever worker is free (--maxschedchunk 1), in the order of
# tests/conftest.py (the long ones first): no long test is left to start last.
# compileall first: where PYTHONDONTWRITEBYTECODE is set no process writes bytecode, and
# each of the suite's `dnpair` subprocesses compiled the engine again (0.1-0.2 s of
# CPU each); existing .pyc files are still read (and rewritten only for changed sources).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m compileall -q engine machines adapters
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 1

# Seeded chaos (engine/harness/chaos.py): 2 000 seeds spread over the shipped fault profiles and
# the generated `random` one, windows jittered per seed, every invariant checked after
# every event. CHAOS_SEEDS / CHAOS_ARGS override; chaos-full runs every seed under every
# profile (12x longer); deep runs the slow pytest tiers (chaos, property, damage, paper, crash).
CHAOS_SEEDS ?= 1-2000
CHAOS_JOBS  ?= 2
CHAOS_ARGS  ?=
chaos: $(STAMP)
	$(BIN)/dnpair chaos --seeds $(CHAOS_SEEDS) --spread --jitter-s 20 --cycles 4 \
		--jobs $(CHAOS_JOBS) --progress 200 $(CHAOS_ARGS)

chaos-full: $(STAMP)
	$(BIN)/dnpair chaos --seeds $(CHAOS_SEEDS) --jitter-s 20 --cycles 4 \
		--jobs $(CHAOS_JOBS) --progress 1000 $(CHAOS_ARGS)

# SIGKILL crash test (tests/crash/): 6 enumerated points x 3 occurrences x 11 repeats
# + 24 random instants = 222 points, each restarted on the same journal and venue.
CRASH_ARGS ?= --seeds 1-11 --occurrences 1-3 --random 24
crash: $(STAMP)
	$(BIN)/python -m tests.crash.harness $(CRASH_ARGS)

deep: $(STAMP)
	DNPAIR_DEEP_TESTS=1 $(BIN)/python -m pytest -q -m slow tests/chaos tests/property tests/damage tests/paper tests/crash

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test
	$(BIN)/dnpair diagrams --check

diagrams: $(STAMP)
	$(BIN)/dnpair diagrams --out diagrams

replay: $(STAMP)
	@test -n "$(LOG)" || (echo "usage: make replay LOG=path/to/journal.db" >&2; exit 2)
	$(BIN)/dnpair replay $(LOG)

golden: $(STAMP)
	$(BIN)/python -m tests.replay.scenarios

report: $(STAMP)
	@test -n "$(LOG)" || (echo "usage: make report LOG=path/to/journal.db [CHART=out.png]" >&2; exit 2)
	$(BIN)/dnpair report $(LOG) $(if $(CHART),--chart $(CHART)) $(if $(CSV),--csv $(CSV))

runbook: $(STAMP)
	$(BIN)/dnpair runbook

bench: $(STAMP)
	@for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
