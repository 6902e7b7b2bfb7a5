// Package metrics defines lazyfs's Prometheus metrics and serves them.
//
// A process makes one Registry (New): its own prometheus.Registry, never
// the global default one, so tests and several servers in one process do
// not collide. The parts of the program report into it: a layers.Source
// through the per-image handles of Registry.Image (registry traffic,
// frame fetch latency, read-ahead), the cache through a collector reading
// cache.Store.Stats at each scrape (Registry.WatchCache), the commands and
// the snapshotter through MountStarted, MountEnded, MountFailed and
// ReadError. Registry.Listen serves it all in the Prometheus text format at
// /metrics.
//
// Every method is safe for concurrent use, and every method of a nil
// *Registry or a nil *Image does nothing, so code runs the same with
// metrics off. The metric names are listed in docs/containerd.md.
package metrics
