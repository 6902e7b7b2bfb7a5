package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lazyfs/lazyfs/internal/registrylog"
	"github.com/lazyfs/lazyfs/layers"
)

// A run's request timeline: every request the registry answered during one
// measurement, placed on the measurement's clock, so that a reader can see
// where a cold start's time goes (requests one after another, or many at
// once; time with no request outstanding, when the client works alone).
// The registry runs on the same machine, so its log's times and the
// bench's clock are one clock.

// timelineMark is a moment of a measurement (a command exited, a mount
// became ready), from its start.
type timelineMark struct {
	What string
	At   time.Duration
}

// span is a request's time at the registry, from the measurement's start.
type span struct{ start, end time.Duration }

// requestsLog names the timeline beside a command's log:
// NNNN-WHAT.log → NNNN-WHAT-requests.log.
func requestsLog(logPath string) string {
	return strings.TrimSuffix(logPath, ".log") + "-requests.log"
}

// writeTimeline writes the timeline of one measurement that started at
// start and ended after end: reqs (as registrylog.Parse returns them) by
// their start at the registry, the marks among them, and a summary (see
// timelineSummary). labels name known blob and manifest digests ("base
// layer", "python3 config"); rtt is the delay the link adds.
func writeTimeline(path string, start time.Time, end time.Duration, reqs []registrylog.Request, marks []timelineMark,
	labels map[string]string, rtt time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("request timeline: %w", err)
	}
	err = timelineText(f, strings.TrimSuffix(filepath.Base(path), "-requests.log"), start, end, reqs, marks, labels, rtt)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("request timeline %s: %w", path, err)
	}
	return nil
}

// timelineText writes what writeTimeline writes into a file.
func timelineText(w io.Writer, name string, start time.Time, end time.Duration, reqs []registrylog.Request,
	marks []timelineMark, labels map[string]string, rtt time.Duration) error {
	type row struct {
		span
		r registrylog.Request
	}
	var rows []row
	for _, q := range reqs {
		if q.Time.IsZero() {
			continue // no time in the log line: not placed (counted in the summary)
		}
		rows = append(rows, row{span{q.Start().Sub(start), q.Time.Sub(start)}, q})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(a.start, b.start) })
	marks = slices.Clone(marks)
	slices.SortStableFunc(marks, func(a, b timelineMark) int { return cmp.Compare(a.At, b.At) })

	var b strings.Builder
	fmt.Fprintf(&b, "# %s: the requests the registry answered during the run, by when it started handling each.\n", name)
	b.WriteString("# start, end: ms from the run's start (the client's start) to the registry's start of handling the request\n" +
		"#   and its completion (its log's time less http.response.duration, and that time; the registry is on this\n" +
		"#   machine: one clock). The client sent each request about RTT/2 before its start (a new connection one RTT\n" +
		"#   more) and had its last byte about RTT/2 after its end, later when the link's rate queued the body.\n" +
		"# dur: http.response.duration; bytes: body bytes written; off: where in the blob the body started (- when\n" +
		"#   the registry logged none: from 0, or not a blob read); what: the URI without /v2/ and the repository's\n" +
		"#   \"bench/\", digests shortened, known ones named.\n#\n")
	fmt.Fprintf(&b, "%10s %10s %9s  %-6s %6s %11s %11s  %s\n", "# start_ms", "end_ms", "dur_ms", "method", "status", "bytes", "off", "what")
	mi := 0
	flushMarks := func(before time.Duration, all bool) {
		for ; mi < len(marks) && (all || marks[mi].At <= before); mi++ {
			fmt.Fprintf(&b, "# ---------- %s at %s ms\n", marks[mi].What, msString(marks[mi].At))
		}
	}
	for _, r := range rows {
		flushMarks(r.start, false)
		off := "-"
		if r.r.Offset >= 0 {
			off = fmt.Sprint(r.r.Offset)
		}
		fmt.Fprintf(&b, "%10s %10s %9s  %-6s %6d %11d %11s  %s\n", msString(r.start), msString(r.end), msString(r.r.Duration),
			r.r.Method, r.r.Status, r.r.Written, off, shortURI(r.r.URI, labels))
	}
	flushMarks(0, true)

	spans := make([]span, len(rows))
	for i, r := range rows {
		spans[i] = r.span
	}
	sum := timelineSummary(spans, end, rtt)
	var bytes int64
	for _, q := range reqs {
		bytes += q.Written
	}
	b.WriteString("#\n")
	fmt.Fprintf(&b, "# %d requests, %s of bodies, in a run of %s ms", len(reqs), mb(bytes), msString(end))
	if n := len(reqs) - len(rows); n > 0 {
		fmt.Fprintf(&b, " (%d without a time in the log, not placed)", n)
	}
	b.WriteString(".\n")
	if len(rows) > 0 {
		fmt.Fprintf(&b, "# First request started at %s ms, the last ended at %s ms; at most %d at the registry at once.\n",
			msString(sum.first), msString(sum.last), sum.maxConcurrent)
		fmt.Fprintf(&b, "# The registry was handling a request during %s ms of the run; widened by RTT/2 (%s ms) on each side, as the\n"+
			"#   client waits, requests were outstanding during ≈ %s ms; none was during ≈ %s ms (the client working alone:\n"+
			"#   process start, resolving, decoding, the command itself), %s ms of them before the first and %s ms after the last.\n",
			msString(sum.busy), msString(rtt/2), msString(sum.waiting), msString(sum.idle), msString(sum.idleBefore), msString(sum.idleAfter))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summary is what timelineSummary finds.
type summary struct {
	first, last   time.Duration // first start, last end
	busy          time.Duration // union of the spans, within [0, end]
	waiting       time.Duration // union of the spans widened by rtt/2 each side, within [0, end]
	idle          time.Duration // end less waiting
	idleBefore    time.Duration // part of idle before the first widened span
	idleAfter     time.Duration // part of idle after the last widened span
	maxConcurrent int           // most spans overlapping at one moment
}

// timelineSummary summarizes the requests' spans at the registry within a
// run of length end: how long one was being handled, how long the client
// waited for one (each span widened by rtt/2 on both sides: the request
// and the response crossing the link), and the rest, when none was
// outstanding.
func timelineSummary(spans []span, end, rtt time.Duration) summary {
	var s summary
	if len(spans) == 0 {
		s.idle, s.idleBefore, s.idleAfter = end, end, end
		return s
	}
	s.first, s.last = spans[0].start, spans[0].end
	wide := make([]span, len(spans))
	for i, sp := range spans {
		s.first, s.last = min(s.first, sp.start), max(s.last, sp.end)
		wide[i] = span{sp.start - rtt/2, sp.end + rtt/2}
	}
	s.busy = unionLen(spans, 0, end)
	s.waiting = unionLen(wide, 0, end)
	s.idle = end - s.waiting
	s.idleBefore = min(max(s.first-rtt/2, 0), end)
	s.idleAfter = max(end-max(s.last+rtt/2, 0), 0)
	s.maxConcurrent = maxOverlap(spans)
	return s
}

// unionLen returns the length of the union of spans, clipped to [lo, hi].
func unionLen(spans []span, lo, hi time.Duration) time.Duration {
	var cut []span
	for _, sp := range spans {
		a, z := max(sp.start, lo), min(sp.end, hi)
		if a < z {
			cut = append(cut, span{a, z})
		}
	}
	slices.SortFunc(cut, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	var n time.Duration
	at := lo
	for _, c := range cut {
		a := max(c.start, at)
		if c.end > a {
			n += c.end - a
			at = c.end
		}
	}
	return n
}

// maxOverlap returns the most spans that overlap at one moment (a span
// ending where another starts does not overlap it).
func maxOverlap(spans []span) int {
	type edge struct {
		at time.Duration
		d  int
	}
	var es []edge
	for _, sp := range spans {
		es = append(es, edge{sp.start, 1}, edge{sp.end, -1})
	}
	// Ends before starts at the same moment.
	slices.SortFunc(es, func(a, b edge) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.d, b.d)) })
	n, most := 0, 0
	for _, e := range es {
		n += e.d
		most = max(most, n)
	}
	return most
}

func msString(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

var (
	uriRe    = regexp.MustCompile(`^/v2/(.+)/(blobs|manifests|referrers|tags)/(.*)$`)
	digestRe = regexp.MustCompile(`sha256[:-][0-9a-f]{64}`) // "-": a referrers tag (sha256-HEX)
)

// shortURI shortens a registry URI for the timeline: /v2/ and the
// repository's "bench/" dropped, each sha256 digest cut to 12 hex digits
// and followed by its label when labels has one; a referrers tag
// (sha256-HEX, the fallback of registries without the referrers API) is
// named as such.
func shortURI(uri string, labels map[string]string) string {
	s := uri
	if m := uriRe.FindStringSubmatch(uri); m != nil {
		s = strings.TrimPrefix(m[1], "bench/") + "/" + m[2] + "/" + m[3]
	}
	var named []string
	s = digestRe.ReplaceAllStringFunc(s, func(d string) string {
		if d[len("sha256")] == '-' {
			what := "referrers tag"
			if l := labels["sha256:"+d[len("sha256-"):]]; l != "" {
				what += " of " + l
			}
			named = append(named, what)
		} else if l := labels[d]; l != "" {
			named = append(named, l)
		}
		return d[:len("sha256:")+12]
	})
	if len(named) > 0 {
		s += " (" + strings.Join(named, ", ") + ")"
	}
	return s
}

// digestLabels names the pushed images' digests for timelines: manifests,
// configs and layers (the base layer, shared by all, once).
func digestLabels(images map[string]*builtImage) map[string]string {
	labels := map[string]string{}
	for name, b := range images {
		if b.Pushed == nil {
			continue
		}
		labels[b.Pushed.Digest.String()] = name + " manifest"
		labels[b.Pushed.ConfigDigest.String()] = name + " config"
		for i, l := range b.Layers {
			d := l.Digest.String()
			if i == 0 {
				labels[d] = "base layer"
				continue
			}
			labels[d] = fmt.Sprintf("%s layer %d", name, i)
		}
	}
	return labels
}

// addArtifactLabels names the blobs of the lazyfs artifacts that refer to
// image b (read from the registry at reg, plain HTTP, through the
// referrers tag fallback docker-registry 2.8 needs): each layer's index
// blob ("index of base layer") and prefetch profiles; and the artifacts'
// manifests. The labels of b's own digests must be in labels already.
func addArtifactLabels(ctx context.Context, reg string, b *builtImage, labels map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	repo := strings.TrimSuffix(b.Ref, ":latest")
	get := func(ref string, v any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reg+"/v2/"+repo+"/manifests/"+ref, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
		}
		return json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(v)
	}
	var refs v1.IndexManifest
	if err := get(strings.Replace(b.Digest, ":", "-", 1), &refs); err != nil {
		return fmt.Errorf("referrers of %s: %w", b.Ref, err)
	}
	for _, m := range refs.Manifests {
		var art v1.Manifest
		if err := get(m.Digest.String(), &art); err != nil {
			return fmt.Errorf("referrers of %s: %w", b.Ref, err)
		}
		switch m.ArtifactType {
		case layers.ArtifactType:
			labels[m.Digest.String()] = b.Name + " index artifact"
			for _, l := range art.Layers {
				what := l.Annotations[layers.LayerAnnotation]
				if n := labels[what]; n != "" {
					what = n
				}
				labels[l.Digest.String()] = "index of " + what
			}
		case layers.ProfileArtifactType:
			labels[m.Digest.String()] = b.Name + " profile artifact"
			for _, l := range art.Layers {
				labels[l.Digest.String()] = b.Name + " prefetch profile"
			}
		}
	}
	return nil
}
