package metrics

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric of ours.
const namespace = "lazyfs"

// frameBuckets are the upper bounds, in seconds, of the frame fetch
// latency histogram: a cached-nearby registry answers a 1 MiB range in a
// few milliseconds, a slow link or retries take seconds, and a load is cut
// at the cache's 60 s deadline.
var frameBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Registry is the metrics of one process. Make it with New.
type Registry struct {
	reg *prometheus.Registry

	fetchedBytes      *prometheus.CounterVec
	requests          *prometheus.CounterVec
	frameSeconds      *prometheus.HistogramVec
	readaheadFrames   *prometheus.CounterVec
	readaheadInFlight *prometheus.GaugeVec
	mounts            prometheus.Gauge
	mountErrors       prometheus.Counter
	readErrors        prometheus.Counter

	bgOnce sync.Once    // registers bg
	bg     *bgCollector // background fetches; nil until the first WatchBackground
}

// New returns a Registry with lazyfs's metrics and the Go runtime's and
// process's standard ones (go_*, process_*).
func New() *Registry {
	image := []string{"image"}
	r := &Registry{
		reg: prometheus.NewRegistry(),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "registry_fetched_bytes_total",
			Help: "Blob body bytes received from the registry to serve frames of an image (Range reads and whole-layer streams, failed attempts included).",
		}, image),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "registry_requests_total",
			Help: "HTTP requests sent to the registry to serve frames of an image (every attempt, token requests included).",
		}, image),
		frameSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "frame_fetch_duration_seconds",
			Help:    "Time of one successful load of a frame from the registry: the Range read with its retries, and decoding.",
			Buckets: frameBuckets,
		}, image),
		readaheadFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "readahead_frames_total",
			Help: "Frames fetched from the registry ahead of a sequential reader.",
		}, image),
		readaheadInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "readahead_in_flight",
			Help: "Frames being read ahead now (cached ones included while they are looked up).",
		}, image),
		mounts: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "mounts_active",
			Help: "FUSE mounts this process serves now.",
		}),
		mountErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "mount_errors_total",
			Help: "Lazy mounts that failed (finding the index, mounting, or committing the snapshot).",
		}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "read_errors_total",
			Help: "Requests answered with EIO because a frame could not be fetched or verified.",
		}),
	}
	r.reg.MustRegister(r.fetchedBytes, r.requests, r.frameSeconds, r.readaheadFrames, r.readaheadInFlight,
		r.mounts, r.mountErrors, r.readErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Gatherer returns what a scrape reads, for tests and other exporters.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the metrics in the Prometheus text format (or what the
// scraper's Accept header asks for). A metric that fails to collect is
// logged at Warn and left out; the others are served.
func (r *Registry) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Image returns the metrics of one image, labelled image=name. name must
// come from a bounded set: a repository (registry host and path, no tag or
// digest), as the snapshotter keeps one frame source per repository, or
// the reference a `lazyfs mount` serves. Calls with the same name share
// the same series.
func (r *Registry) Image(name string) *Image {
	if r == nil {
		return nil
	}
	return &Image{
		bytes:      r.fetchedBytes.WithLabelValues(name),
		requests:   r.requests.WithLabelValues(name),
		frame:      r.frameSeconds.WithLabelValues(name),
		raFrames:   r.readaheadFrames.WithLabelValues(name),
		raInFlight: r.readaheadInFlight.WithLabelValues(name),
	}
}

// MountStarted counts a FUSE mount this process now serves.
func (r *Registry) MountStarted() {
	if r != nil {
		r.mounts.Inc()
	}
}

// MountEnded counts a FUSE mount gone (unmounted, or detached).
func (r *Registry) MountEnded() {
	if r != nil {
		r.mounts.Dec()
	}
}

// MountFailed counts a lazy mount that failed.
func (r *Registry) MountFailed() {
	if r != nil {
		r.mountErrors.Inc()
	}
}

// ReadError counts a request answered with EIO; fusefs.Config.OnIOError
// takes it.
func (r *Registry) ReadError() {
	if r != nil {
		r.readErrors.Inc()
	}
}

// Image is the metrics of one image. It implements layers.Metrics (and so
// fetch.Meter).
type Image struct {
	bytes, requests prometheus.Counter
	frame           prometheus.Observer
	raFrames        prometheus.Counter
	raInFlight      prometheus.Gauge
}

// Request counts an HTTP request sent to the registry.
func (m *Image) Request() {
	if m != nil {
		m.requests.Inc()
	}
}

// BodyBytes counts blob bytes received.
func (m *Image) BodyBytes(n int64) {
	if m != nil {
		m.bytes.Add(float64(n))
	}
}

// FrameFetched records the time of one frame load.
func (m *Image) FrameFetched(d time.Duration) {
	if m != nil {
		m.frame.Observe(d.Seconds())
	}
}

// ReadaheadStarted counts a frame being read ahead.
func (m *Image) ReadaheadStarted() {
	if m != nil {
		m.raInFlight.Inc()
	}
}

// ReadaheadDone ends what ReadaheadStarted began; fetched says the frame
// came from the registry (not the cache).
func (m *Image) ReadaheadDone(fetched bool) {
	if m == nil {
		return
	}
	m.raInFlight.Dec()
	if fetched {
		m.raFrames.Inc()
	}
}
