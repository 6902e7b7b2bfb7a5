package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/registrylog"
)

func TestUnionLen(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		spans  []span
		lo, hi time.Duration
		want   time.Duration
	}{
		{"none", nil, 0, 100 * ms, 0},
		{"one", []span{{10 * ms, 20 * ms}}, 0, 100 * ms, 10 * ms},
		{"disjoint", []span{{10 * ms, 20 * ms}, {30 * ms, 35 * ms}}, 0, 100 * ms, 15 * ms},
		{"overlapping counted once", []span{{10 * ms, 30 * ms}, {20 * ms, 40 * ms}}, 0, 100 * ms, 30 * ms},
		{"nested", []span{{10 * ms, 50 * ms}, {20 * ms, 30 * ms}}, 0, 100 * ms, 40 * ms},
		{"unsorted", []span{{30 * ms, 35 * ms}, {10 * ms, 20 * ms}}, 0, 100 * ms, 15 * ms},
		{"clipped at both ends", []span{{-10 * ms, 10 * ms}, {90 * ms, 120 * ms}}, 0, 100 * ms, 20 * ms},
		{"outside", []span{{110 * ms, 120 * ms}}, 0, 100 * ms, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unionLen(tc.spans, tc.lo, tc.hi); got != tc.want {
				t.Errorf("unionLen(%v, %v, %v) = %v, want %v", tc.spans, tc.lo, tc.hi, got, tc.want)
			}
		})
	}
}

func TestMaxOverlap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spans []span
		want  int
	}{
		{"none", nil, 0},
		{"one", []span{{1, 2}}, 1},
		{"one after another", []span{{1, 2}, {2, 3}, {3, 4}}, 1},
		{"three at once", []span{{1, 10}, {2, 5}, {4, 6}, {7, 8}}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maxOverlap(tc.spans); got != tc.want {
				t.Errorf("maxOverlap(%v) = %d, want %d", tc.spans, got, tc.want)
			}
		})
	}
}

func TestTimelineSummary(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		spans []span
		end   time.Duration
		rtt   time.Duration
		want  summary
	}{
		{"no requests", nil, 100 * ms, 20 * ms, summary{idle: 100 * ms, idleBefore: 100 * ms, idleAfter: 100 * ms}},
		{"two in a row", []span{{30 * ms, 40 * ms}, {60 * ms, 70 * ms}}, 100 * ms, 20 * ms,
			// widened: [20,50] and [50,80]: waiting 60, idle 40 = 20 before + 20 after
			summary{first: 30 * ms, last: 70 * ms, busy: 20 * ms, waiting: 60 * ms, idle: 40 * ms, idleBefore: 20 * ms, idleAfter: 20 * ms, maxConcurrent: 1}},
		{"two at once, near the ends", []span{{5 * ms, 50 * ms}, {10 * ms, 98 * ms}}, 100 * ms, 20 * ms,
			summary{first: 5 * ms, last: 98 * ms, busy: 93 * ms, waiting: 100 * ms, maxConcurrent: 2}},
		{"a gap in the middle", []span{{20 * ms, 30 * ms}, {70 * ms, 80 * ms}}, 100 * ms, 0,
			summary{first: 20 * ms, last: 80 * ms, busy: 20 * ms, waiting: 20 * ms, idle: 80 * ms, idleBefore: 20 * ms, idleAfter: 20 * ms, maxConcurrent: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := timelineSummary(tc.spans, tc.end, tc.rtt); got != tc.want {
				t.Errorf("timelineSummary(%v, %v, %v) = %+v, want %+v", tc.spans, tc.end, tc.rtt, got, tc.want)
			}
		})
	}
}

func TestShortURI(t *testing.T) {
	const (
		d1 = "sha256:8daf9fb0fe5f81d208b6fa61c5ce8370db9cc820cd33aaa25d519518a5f7dd11"
		d2 = "sha256:1df383c1bff3000000000000000000000000000000000000000000000000ffff"
	)
	labels := map[string]string{d1: "base layer", "sha256:" + strings.Repeat("a", 64): "go manifest"}
	for _, tc := range []struct{ uri, want string }{
		{"/v2/", "/v2/"},
		{"/v2/bench/go/manifests/latest", "go/manifests/latest"},
		{"/v2/bench/go/blobs/" + d1, "go/blobs/sha256:8daf9fb0fe5f (base layer)"},
		{"/v2/bench/go/blobs/" + d2, "go/blobs/sha256:1df383c1bff3"},
		{"/v2/bench/go/manifests/sha256-" + strings.Repeat("a", 64), "go/manifests/sha256-aaaaaaaaaaaa (referrers tag of go manifest)"},
		{"/v2/bench/go/manifests/sha256-" + strings.Repeat("b", 64), "go/manifests/sha256-bbbbbbbbbbbb (referrers tag)"},
		{"/v2/other/repo/referrers/" + d1 + "?artifactType=x", "other/repo/referrers/sha256:8daf9fb0fe5f?artifactType=x (base layer)"},
	} {
		if got := shortURI(tc.uri, labels); got != tc.want {
			t.Errorf("shortURI(%q) = %q, want %q", tc.uri, got, tc.want)
		}
	}
}

func TestTimelineText(t *testing.T) {
	start := time.Date(2026, 11, 23, 23, 0, 0, 0, time.UTC)
	at := func(ms float64) time.Time { return start.Add(time.Duration(ms * float64(time.Millisecond))) }
	const blob = "/v2/bench/python3/blobs/sha256:8daf9fb0fe5f81d208b6fa61c5ce8370db9cc820cd33aaa25d519518a5f7dd11"
	reqs := []registrylog.Request{ // in the order they completed
		{Method: "GET", URI: "/v2/", Status: 200, Written: 2, Offset: -1, Time: at(50), Duration: time.Millisecond},
		{Method: "GET", URI: blob, Status: 206, Written: 3000, Offset: 4096, Time: at(130), Duration: 30 * time.Millisecond},
		{Method: "GET", URI: blob, Status: 206, Written: 1000, Offset: 0, Time: at(120), Duration: 10 * time.Millisecond},
		{Method: "HEAD", URI: blob, Status: 200, Offset: -1}, // no time: counted, not placed
	}
	marks := []timelineMark{{"lazyrun run exited", 200 * time.Millisecond}, {"mounted", 105 * time.Millisecond}}
	var b strings.Builder
	if err := timelineText(&b, "0005-python3-cold", start, 210*time.Millisecond, reqs, marks,
		map[string]string{"sha256:8daf9fb0fe5f81d208b6fa61c5ce8370db9cc820cd33aaa25d519518a5f7dd11": "base layer"}, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for l := range strings.Lines(b.String()) {
		if !strings.HasPrefix(l, "#") || strings.HasPrefix(l, "# ----------") {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
	}
	want := []string{
		"49.0 50.0 1.0 GET 200 2 - /v2/",
		"100.0 130.0 30.0 GET 206 3000 4096 python3/blobs/sha256:8daf9fb0fe5f (base layer)",
		"# ---------- mounted at 105.0 ms",
		"110.0 120.0 10.0 GET 206 1000 0 python3/blobs/sha256:8daf9fb0fe5f (base layer)",
		"# ---------- lazyrun run exited at 200.0 ms",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("timeline rows:\n%s\nwant\n%s\nwhole text:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"), b.String())
	}
	for _, s := range []string{
		"# 0005-python3-cold: ",
		"# 4 requests, 4 kB of bodies, in a run of 210.0 ms (1 without a time in the log, not placed).",
		"at most 2 at the registry at once",
		// busy: [49,50] + [100,130] = 31; widened by 10: [39,60] + [90,140] = 71; idle 139 = 39 before + 70 after + 30 between
		"during 31.0 ms of the run",
		"outstanding during ≈ 71.0 ms; none was during ≈ 139.0 ms",
		"39.0 ms of them before the first and 70.0 ms after the last",
	} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("timeline lacks %q:\n%s", s, b.String())
		}
	}
}
