package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Background is where one background fetch (layers.Background) stands,
// as a scrape reads it.
type Background struct {
	State       string // waiting, fetching, yielding, done, stopped, failed or off
	Frames      int    // frames of its layers
	Cached      int    // of them, on disk
	Bytes       int64  // uncompressed bytes of those frames
	CachedBytes int64  // of them, on disk
	Fetched     int64  // compressed bytes its requests asked for
	Requests    int    // requests it made
}

func bgDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "background", name), help, append([]string{"image"}, labels...), nil)
}

var (
	bgFetched = bgDesc("fetched_bytes_total",
		"Compressed bytes the background fetch of an image asked the registry for.")
	bgRequests = bgDesc("requests_total",
		"Range requests (and whole-layer reads) the background fetch of an image made.")
	bgFrames = bgDesc("frames",
		"Frames of the layers being fetched in the background (a frame two layers share counts once).")
	bgCached = bgDesc("frames_cached",
		"Of those frames, the ones on disk (as of the fetcher's last look).")
	bgBytes = bgDesc("bytes",
		"Uncompressed bytes of the frames being fetched in the background.")
	bgCachedBytes = bgDesc("cached_bytes",
		"Of those bytes, the ones on disk.")
	bgState = bgDesc("fetches",
		"Background fetches of an image, by state: waiting, fetching, yielding, done, stopped, failed, off.", "state")
)

// WatchBackground adds a background fetch of image (a name as for Image)
// to the metrics: progress is called at each scrape and must return at
// once. unwatch removes it (its bytes and requests stay counted). Several
// fetches of one image (the snapshotter's, one per layer) add up.
func (r *Registry) WatchBackground(image string, progress func() Background) (unwatch func()) {
	if r == nil {
		return func() {}
	}
	r.bgOnce.Do(func() {
		r.bg = &bgCollector{watches: map[*bgWatch]bool{}, ended: map[string]Background{}}
		r.reg.MustRegister(r.bg)
	})
	w := &bgWatch{image: image, progress: progress}
	c := r.bg
	c.mu.Lock()
	c.watches[w] = true
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			last := progress()
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.watches, w)
			e := c.ended[image]
			e.Fetched += last.Fetched
			e.Requests += last.Requests
			c.ended[image] = e
		})
	}
}

type bgWatch struct {
	image    string
	progress func() Background
}

type bgCollector struct {
	mu      sync.Mutex // guards the maps
	watches map[*bgWatch]bool
	ended   map[string]Background // per image, the counters of watches gone
}

func (c *bgCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{bgFetched, bgRequests, bgFrames, bgCached, bgBytes, bgCachedBytes, bgState} {
		ch <- d
	}
}

func (c *bgCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ws := make([]*bgWatch, 0, len(c.watches))
	for w := range c.watches {
		ws = append(ws, w)
	}
	sum := map[string]Background{}
	for image, e := range c.ended {
		sum[image] = e
	}
	c.mu.Unlock()
	states := map[[2]string]int{}
	for _, w := range ws {
		p := w.progress()
		s := sum[w.image]
		s.Frames += p.Frames
		s.Cached += p.Cached
		s.Bytes += p.Bytes
		s.CachedBytes += p.CachedBytes
		s.Fetched += p.Fetched
		s.Requests += p.Requests
		sum[w.image] = s
		states[[2]string{w.image, p.State}]++
	}
	images := make([]string, 0, len(sum))
	for image := range sum {
		images = append(images, image)
	}
	sort.Strings(images)
	for _, image := range images {
		s := sum[image]
		ch <- prometheus.MustNewConstMetric(bgFetched, prometheus.CounterValue, float64(s.Fetched), image)
		ch <- prometheus.MustNewConstMetric(bgRequests, prometheus.CounterValue, float64(s.Requests), image)
		ch <- prometheus.MustNewConstMetric(bgFrames, prometheus.GaugeValue, float64(s.Frames), image)
		ch <- prometheus.MustNewConstMetric(bgCached, prometheus.GaugeValue, float64(s.Cached), image)
		ch <- prometheus.MustNewConstMetric(bgBytes, prometheus.GaugeValue, float64(s.Bytes), image)
		ch <- prometheus.MustNewConstMetric(bgCachedBytes, prometheus.GaugeValue, float64(s.CachedBytes), image)
	}
	for k, n := range states {
		ch <- prometheus.MustNewConstMetric(bgState, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
