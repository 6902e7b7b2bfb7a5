// Package bench measures lazy container starts against real baselines on a
// shaped link: images built from Debian's packages are pushed with their
// lazyfs indexes to docker-registry in a network namespace behind tc's tbf
// and a delaying TCP proxy (DelayProxy), and each workload's start-up
// command is timed as a full pull + run (lazyrun pull, podman), a lazy
// cold start (with and without a prefetch profile), a warm start and a
// native run, and its image's mount to ready (lazyfs mount), with the
// bytes and requests the registry served and, beside each measurement's
// log, its requests on a timeline. Run takes one benchmark; cmd/lazybench
// is its command line and README.md says what is measured and how.
//
// Micro-benchmarks live beside the code they measure (Benchmark… functions
// in each package).
package bench
