# The project's checks are scripts/test.sh; this file only names the
# benchmark. BENCH_FLAGS go to lazybench (see bench/README.md), e.g.
#   make bench BENCH_FLAGS='-rate 1gbit -rtt 2ms -runs 3'
.PHONY: bench
bench:
	scripts/bench.sh $(BENCH_FLAGS)
