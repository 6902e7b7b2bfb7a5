// Package bench will hold reproducible benchmarks of lazy starts against a
// full pull, on a real registry over a shaped link. Micro-benchmarks live
// beside the code they measure (Benchmark… functions in each package).
package bench
