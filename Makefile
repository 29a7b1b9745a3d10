# gestore: a PEC provider on Postfix and Dovecot.
#
#   make test       everything: installs the Debian packages, builds, brings the lab up,
#                   runs every test (unit and integration) with -race -shuffle=on, brings it down
#   make demo       installs what is missing, builds, brings the two-provider lab up in PEC
#                   wiring, sends a PEC, shows and checks every message it makes, leaves the lab up
#   make unit       fast tests only (no lab)
#   make check      gofmt, go vet, staticcheck
#   make fuzz       every fuzz target in turn, FUZZTIME each (make fuzz FUZZTIME=60s)
#   make fuzz-seeds every fuzz target on its seeds and testdata/fuzz inputs only, no fuzzing:
#                   the short form, which make test and make unit also run (go test runs
#                   each FuzzXxx on its seed corpus)
#   make faults     the fault run (issue 17): PEC_FAULTS_N (200) PECs in flight while every PEC
#                   daemon, B's Postfix and Dovecot, slapd and clamd are killed and restarted at
#                   seeded random moments (PEC_FAULTS_SEED replays a run); prints the counts.
#                   make test runs its short form (20 PECs, two kills)
#   make nodes      provider A on two nodes sharing PostgreSQL (issue 18): PEC_NODES_N (300)
#                   PECs from A to B split across A's two submission ports, PEC_NODES_N/3 from B
#                   to A through both A MX nodes, each node killed once mid-load (SIGKILL, postfix
#                   abort); prints the counts. make test runs its short form (60 PECs, one kill)
#                   on the lab brought to PEC_STORE=postgres PEC_A_NODES=2 after the other tests
#   make bench      the Go benchmarks (short), then, when the lab is up, the short form of the
#                   lab benchmarks of issue 19 (make bench-lab)
#   make bench-lab  on the running lab: P1 end to end (PEC transactions A to B against plain
#                   mail), P2 and P2' at the access point; BENCH_LAB_ARGS to change the counts
#   make bench-store the store benchmarks, SQLite then PostgreSQL in one run (commits/s, search)
#   make lab-up / lab-down
#   make containers the Dockerfile and compose file run for real (podman): build, bring the
#                   two-provider network up, send one PEC through it, check it, bring it down

SHELL      := /bin/bash
GO         ?= go
export GOTOOLCHAIN := local
export CGO_ENABLED := 1
export PEC_LAB     ?= /tmp/pec-lab
BIN        := bin
STATICCHECK_VERSION := v0.8.2
FUZZTIME   ?= 10s
# integration tests share one lab; keep package parallelism modest on small machines
TESTFLAGS  ?= -race -shuffle=on -count=1 -timeout 40m

.PHONY: all build test test-lab unit integration faults nodes check fuzz fuzz-seeds bench bench-lab bench-store lab-up lab-down demo clean tools containers containers-clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

# The README's test command. Installs what is missing, builds, starts the lab, runs every test,
# always stops the lab (leaving nothing running), and exits with the tests' status.
# Go itself comes from install-go.sh when it is missing or too old (as for make demo).
test:
	bash integration/scripts/install-packages.sh
	@go=$$(bash integration/scripts/install-go.sh) && PATH="$$(dirname "$$go"):$$PATH" $(MAKE) --no-print-directory test-lab

# The two-node test (TestTwoNodesOfA) needs A on PostgreSQL with a second node: it runs last,
# on the lab brought to that shape (PEC_STORE=postgres PEC_A_NODES=2), so that every other test
# keeps the default lab.
NODES_TEST := ^TestTwoNodesOfA$$
test-lab: build
	bash integration/scripts/lab-up.sh
	@rc=0; $(GO) test $(TESTFLAGS) -tags integration -skip '$(NODES_TEST)' ./... || rc=$$?; \
	  { PEC_STORE=postgres PEC_A_NODES=2 bash integration/scripts/lab-up.sh && \
	    $(GO) test $(TESTFLAGS) -tags integration -run '$(NODES_TEST)' ./integration/; } || rc=$$?; \
	  bash integration/scripts/lab-down.sh; exit $$rc

# The long fault run, on the lab like make test (brought up, always brought down).
PEC_FAULTS_N ?= 200
faults: build
	bash integration/scripts/install-packages.sh
	bash integration/scripts/lab-up.sh
	@rc=0; PEC_FAULTS_N=$(PEC_FAULTS_N) $(GO) test -count=1 -v -timeout 40m -tags integration -run '^TestFaultRun$$' ./integration/ || rc=$$?; \
	  bash integration/scripts/lab-down.sh; exit $$rc

# The long two-node run, on the lab like make test (brought up, always brought down).
PEC_NODES_N ?= 300
nodes: build
	bash integration/scripts/install-packages.sh
	PEC_STORE=postgres PEC_A_NODES=2 bash integration/scripts/lab-up.sh
	@rc=0; PEC_NODES_N=$(PEC_NODES_N) $(GO) test -count=1 -v -timeout 40m -tags integration -run '$(NODES_TEST)' ./integration/ || rc=$$?; \
	  bash integration/scripts/lab-down.sh; exit $$rc

unit:
	$(GO) test $(TESTFLAGS) ./...

# On a lab already up; TestTwoNodesOfA needs it two-noded (make test and make nodes do that).
integration: build
	$(GO) test $(TESTFLAGS) -tags integration -skip '$(NODES_TEST)' ./...

tools:
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

check: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) run ./internal/funclen .
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck -tags integration ./...

# Every FuzzXxx target in the tree, FUZZTIME each.
fuzz-seeds:
	$(GO) test -count=1 -run '^Fuzz' ./...

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
	  done; \
	done

# The store's search benchmark builds its log once under /tmp/pec-store-bench; 1 million events
# by default (about a minute). The 10 million of the issue: make bench PEC_BENCH_EVENTS=10000000
# (a 4.8 GB database, about 11 minutes to build on 2 cores).
PEC_BENCH_EVENTS ?= 1000000
bench:
	PEC_BENCH_EVENTS=$(PEC_BENCH_EVENTS) $(GO) test -run '^$$' -bench . -benchtime 3x -benchmem ./...
	@if [ -f $(PEC_LAB)/lab.json ]; then $(MAKE) --no-print-directory bench-lab; \
	else echo "bench: no lab at $(PEC_LAB) (make lab-up): the lab benchmarks (make bench-lab) did not run"; fi

# Issue 19's figures on the running lab, short form (the full runs: integration/bench).
BENCH_LAB_ARGS ?= -n10k 20 -n1m 2 -n10m 2 -c 4
bench-lab:
	$(GO) run ./integration/bench -point e2e $(BENCH_LAB_ARGS)
	$(GO) run ./integration/bench -point access $(BENCH_LAB_ARGS)

# The stores compared on one machine in one run: commits with 1, 4 and 16 callers (with and
# without group commit) and searches over PEC_BENCH_EVENTS events, SQLite first, then
# PostgreSQL (a private cluster kept under PEC_BENCH_DIR/pg, so the log is built once).
PEC_BENCH_DIR ?= /tmp/pec-store-bench
STORE_BENCHTIME ?= 2s
bench-store:
	PEC_BENCH_EVENTS=$(PEC_BENCH_EVENTS) PEC_BENCH_DIR=$(PEC_BENCH_DIR) PEC_PG_DIR=$(PEC_BENCH_DIR)/pg \
	  $(GO) test -p 1 -run '^$$' -bench . -benchtime $(STORE_BENCHTIME) -timeout 120m ./pec/store/sqlite ./pec/store/postgres

lab-up: build
	bash integration/scripts/install-packages.sh
	bash integration/scripts/lab-up.sh

lab-down:
	bash integration/scripts/lab-down.sh

# demo.sh installs what is missing (Go included), so make demo depends on nothing here.
demo:
	bash integration/scripts/demo.sh

# docker/podman-test.sh: installs podman & co., makes the Debian base image once (debootstrap),
# builds the image (cached layers), runs docker/compose.yaml, sends and checks one PEC (A to B),
# removes every container, volume and network it made. Exit status: whether it all worked.
containers:
	bash docker/podman-test.sh

# Also the cache: the image, the base image and the build's Go caches (next run is cold).
containers-clean:
	bash docker/podman-test.sh clean

clean:
	rm -rf $(BIN)
