package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lazyfs/lazyfs/cache"
)

// WatchCache adds the frame cache's counters, read from stats (a
// cache.Store's Stats) once at each scrape. Call it once per Registry.
func (r *Registry) WatchCache(stats func() cache.Stats) {
	if r != nil {
		r.reg.MustRegister(&cacheCollector{stats: stats})
	}
}

func cacheDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "cache", name), help, labels, nil)
}

var (
	cacheHits = cacheDesc("hits_total",
		"Frame reads served by the cache, by tier: memory, or disk (re-verified).", "tier")
	cacheMisses = cacheDesc("misses_total",
		"Frame reads that waited for a load from the registry (shared by concurrent readers of one frame).")
	cacheLoads = cacheDesc("loads_total",
		"Frame loads run (a miss's fetch and decode; one for all its waiters).")
	cacheLoadErrors = cacheDesc("load_errors_total",
		"Frame loads that failed.")
	cacheCorrupt = cacheDesc("corrupt_frames_total",
		"Frames, loaded or on disk, that failed verification against their digest.")
	cacheLoadedBytes = cacheDesc("loaded_bytes_total",
		"Uncompressed frame bytes that loads returned.")
	cacheEvictions = cacheDesc("evictions_total",
		"Frames removed from disk to stay under --cache-size.")
	cacheDiskFrames = cacheDesc("disk_frames",
		"Frames on disk, as this process knows them.")
	cacheDiskBytes = cacheDesc("disk_bytes",
		"Bytes of frames on disk, as this process knows them.")
)

// cacheCollector turns one cache.Stats per scrape into metrics.
type cacheCollector struct {
	stats func() cache.Stats
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheHits, cacheMisses, cacheLoads, cacheLoadErrors, cacheCorrupt,
		cacheLoadedBytes, cacheEvictions, cacheDiskFrames, cacheDiskBytes} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(cacheHits, st.MemoryHits, "memory")
	counter(cacheHits, st.DiskHits, "disk")
	counter(cacheMisses, st.Misses)
	counter(cacheLoads, st.Loads)
	counter(cacheLoadErrors, st.LoadErrors)
	counter(cacheCorrupt, st.Corrupt)
	counter(cacheLoadedBytes, st.BytesLoaded)
	counter(cacheEvictions, st.Evictions)
	ch <- prometheus.MustNewConstMetric(cacheDiskFrames, prometheus.GaugeValue, float64(st.DiskFrames))
	ch <- prometheus.MustNewConstMetric(cacheDiskBytes, prometheus.GaugeValue, float64(st.DiskBytes))
}
