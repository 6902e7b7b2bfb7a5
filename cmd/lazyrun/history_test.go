package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/testutil"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime"
)

// historyFields is a --format that shows every field, "|" between them.
const historyFields = "{{.ID}}|{{.CreatedSince}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}|{{.Lazy}}|{{.Cached}}"

// TestHistory pushes a two-layer image whose config has four history
// entries, two of them empty_layer, and follows `lazyrun history` from "no
// index anywhere" through an index in the registry, a container that read
// some files, a pull, and the registry gone.
func TestHistory(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	now := time.Now().UTC()
	at := func(d time.Duration) *v1.Time { return &v1.Time{Time: now.Add(-d)} }
	const envBy = "/bin/sh -c #(nop)  ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	history := []v1.History{
		{Created: *at(3 * 24 * time.Hour), CreatedBy: "/bin/sh -c #(nop) ADD file:6e7a4c0a in / "},
		{Created: *at(3*24*time.Hour - time.Minute), CreatedBy: envBy, EmptyLayer: true},
		{Created: *at(2*time.Hour + 5*time.Minute), CreatedBy: "COPY data /data # buildkit", Comment: "buildkit.dockerfile.v0"},
		{Created: *at(2 * time.Hour), CreatedBy: `/bin/sh -c #(nop)  CMD ["sh"]`, EmptyLayer: true},
	}
	ls := []testutil.Layer{
		testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{
			{Path: "data/"},
			{Path: "data/big", Size: 6 << 20, Seed: 1},
			{Path: "data/small", Data: []byte("hi\n")},
		}, types.OCILayer),
	}
	pushed := testutil.PushImageInfo(t, reg.Addr, "test/hist:v1", ls, testutil.ImageConfig{History: history, Created: now.Add(-2 * time.Hour)})
	relay := testutil.StartRelay(t, reg.Addr)
	ref := relay.Addr + "/test/hist:v1"
	shortID := pushed.ConfigDigest.Encoded()[:12]

	// No index anywhere: SIZE is the blob's size, and a run would build the index.
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })
	rows := historyTable(t, e, ref)
	want := [][]string{
		{shortID, "2 hours ago", `/bin/sh -c #(nop)  CMD ["sh"]`, "0B", "", "-", "-"},
		{"<missing>", "2 hours ago", "COPY data /data # buildkit", humanSize(pushed.Layers[1].Size), "buildkit.dockerfile.v0", "pull", "0B"},
		{"<missing>", "3 days ago", envBy[:44] + "…", "0B", "", "-", "-"},
		{"<missing>", "3 days ago", "/bin/sh -c #(nop) ADD file:6e7a4c0a in / ", humanSize(pushed.Layers[0].Size), "", "pull", "0B"},
	}
	checkRows(t, "no index", rows, want)

	// The default table: docker's header and columns, then lazyfs's two.
	out := e.mustRun(t, "history", ref)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 || !regexp.MustCompile(`^IMAGE {3,}CREATED {3,}CREATED BY {3,}SIZE {3,}COMMENT {3,}LAZY {3,}CACHED$`).MatchString(lines[0]) {
		t.Fatalf("history table:\n%s", out)
	}
	if !regexp.MustCompile(`^` + shortID + ` {3,}2 hours ago {3,}/bin/sh -c #\(nop\)  CMD \["sh"\] {3,}0B {3,}- {3,}-$`).MatchString(lines[1]) {
		t.Errorf("history table's top row = %q", lines[1])
	}
	if out := e.mustRun(t, "history", "-q", ref); out != shortID+"\n<missing>\n<missing>\n<missing>\n" {
		t.Errorf("history -q = %q", out)
	}
	out = e.mustRun(t, "history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", ref)
	if wantOut := pushed.ConfigDigest.String() + `|/bin/sh -c #(nop)  CMD ["sh"]` + "\n"; !strings.HasPrefix(out, wantOut) || !strings.Contains(out, "\n<missing>|"+envBy+"\n") {
		t.Errorf("history --no-trunc =\n%s", out)
	}
	out = e.mustRun(t, "history", "-H=false", ref)
	if !strings.HasPrefix(out, "IMAGE") || !strings.Contains(out, "CREATED AT") ||
		!strings.Contains(out, history[3].Created.Local().Format(time.RFC3339)) ||
		!strings.Contains(out, " "+strconv.FormatInt(pushed.Layers[1].Size, 10)+" ") {
		t.Errorf("history -H=false:\n%s", out)
	}

	// An index in the registry: both layers lazy, SIZE the uncompressed
	// size, nothing cached yet.
	tarSizes := pushIndex(t, ref)
	e = &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })
	rows = historyTable(t, e, ref)
	want[1][3], want[1][5], want[1][6] = humanSize(tarSizes[1]), "yes", "0B (0%)"
	want[3][3], want[3][5], want[3][6] = humanSize(tarSizes[0]), "yes", "0B (0%)"
	checkRows(t, "index in the registry", rows, want)

	// A container reads a few files: part of each layer is cached.
	if out := e.mustRun(t, "run", "--rm", ref, "cat", "/data/small"); out != "hi\n" {
		t.Fatalf("cat /data/small = %q", out)
	}
	rows = historyTable(t, e, ref)
	for _, i := range []int{1, 3} {
		if p := cachedPercent(t, rows[i][6]); p == 0 || rows[i][5] != "yes" {
			t.Errorf("after a run, row %d = %q: want a lazy layer partly cached", i, rows[i])
		}
	}

	// After a pull all of it is.
	e.mustRun(t, "pull", ref)
	want[1][6] = humanSize(tarSizes[1]) + " (100%)"
	want[3][6] = humanSize(tarSizes[0]) + " (100%)"
	checkRows(t, "after pull", historyTable(t, e, ref), want)
	t.Logf("history after pull:\n%s", e.mustRun(t, "history", ref))

	// An image the registry does not know.
	r := e.lazyrun(t, "", "history", relay.Addr+"/test/hist:nope")
	if r.code != 1 || !strings.Contains(r.stderr, "no such image: "+relay.Addr+"/test/hist:nope") {
		t.Errorf("history of an unknown image: exit %d, stderr %q; want 1, no such image", r.code, r.stderr)
	}
	if r := e.lazyrun(t, "", "history", "--format", "{{.Nope}}", ref); r.code != 125 {
		t.Errorf("history --format {{.Nope}}: exit %d, want 125\n%s", r.code, r.stderr)
	}

	// The registry gone: the pulled image as recorded.
	relay.Stop()
	checkRows(t, "registry gone", historyTable(t, e, ref, "--retries", "0"), want)
}

// historyTable runs `lazyrun GLOBALS... history --format historyFields REF`
// and splits its lines into fields.
func historyTable(t *testing.T, e *env, ref string, globals ...string) [][]string {
	t.Helper()
	args := append(globals, "history", "--format", historyFields, ref)
	r := e.lazyrun(t, "", args...)
	if r.code != 0 || strings.Contains(r.stderr, "level=WARN") || strings.Contains(r.stderr, "level=ERROR") {
		t.Fatalf("lazyrun %s: exit %d, want 0 and no warnings\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	out := r.stdout
	var rows [][]string
	for line := range strings.Lines(out) {
		rows = append(rows, strings.Split(strings.TrimSuffix(line, "\n"), "|"))
	}
	return rows
}

func checkRows(t *testing.T, when string, got, want [][]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: history has %d rows, want %d:\n%q", when, len(got), len(want), got)
	}
	for i := range want {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("%s: history row %d =\n%q\nwant\n%q", when, i, got[i], want[i])
		}
	}
}

var cachedRe = regexp.MustCompile(`^\S+ \((\d+)%\)$`)

// cachedPercent reads the percentage of a CACHED cell ("1.2MB (12%)").
func cachedPercent(t *testing.T, s string) int {
	t.Helper()
	m := cachedRe.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("CACHED %q: want BYTES (N%%)", s)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// pushIndex builds the index of every layer of ref in this process and
// pushes it as the image's index artifact, as `lazyfs index --push` does.
// It returns the layers' uncompressed sizes.
func pushIndex(t *testing.T, ref string) []int64 {
	t.Helper()
	store, err := cache.Open(cache.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	client := fetch.New(fetch.Config{})
	res := layers.NewResolver(layers.Config{Client: client, Store: store})
	img, err := client.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := res.Build(t.Context(), img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Push(t.Context(), img, ls); err != nil {
		t.Fatal(err)
	}
	sizes := make([]int64, len(ls))
	for i, l := range ls {
		sizes[i] = l.Index.TarSize
	}
	return sizes
}

func TestHistoryFormatting(t *testing.T) {
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		age   time.Duration
		human bool
		want  string
	}{
		{500 * time.Millisecond, true, "Less than a second ago"},
		{45 * time.Second, true, "45 seconds ago"},
		{70 * time.Second, true, "About a minute ago"},
		{20 * time.Minute, true, "20 minutes ago"},
		{65 * time.Minute, true, "About an hour ago"},
		{2*time.Hour + 5*time.Minute, true, "2 hours ago"},
		{3 * 24 * time.Hour, true, "3 days ago"},
		{20 * 24 * time.Hour, true, "2 weeks ago"},
		{100 * 24 * time.Hour, true, "3 months ago"},
		{3 * 365 * 24 * time.Hour, true, "3 years ago"},
		{time.Hour, false, created.Local().Format(time.RFC3339)},
	} {
		if got := formatCreated(created, tc.age, tc.human); got != tc.want {
			t.Errorf("formatCreated(%v, %v, %v) = %q, want %q", created, tc.age, tc.human, got, tc.want)
		}
	}
	if got := formatCreated(time.Time{}, time.Hour, true); got != "N/A" {
		t.Errorf("formatCreated(zero) = %q, want N/A", got)
	}

	for _, tc := range []struct {
		n     int64
		human bool
		want  string
	}{
		{0, true, "0B"},
		{999, true, "999B"},
		{1000, true, "1kB"},
		{1234567, true, "1.23MB"},
		{4261234, true, "4.26MB"},
		{77_800_000, true, "77.8MB"},
		{1_500_000_000, true, "1.5GB"},
		{1234567, false, "1234567"},
		{0, false, "0"},
	} {
		if got := formatSize(tc.n, tc.human); got != tc.want {
			t.Errorf("formatSize(%d, %v) = %q, want %q", tc.n, tc.human, got, tc.want)
		}
	}

	for _, tc := range []struct {
		l     runtime.HistoryLayer
		human bool
		want  string
	}{
		{runtime.HistoryLayer{Size: 2_000_000}, true, "0B"}, // no index: no share
		{runtime.HistoryLayer{Indexed: true, Size: 10_000_000}, true, "0B (0%)"},
		{runtime.HistoryLayer{Indexed: true, Size: 10_000_000, Cached: 1_100_000}, true, "1.1MB (11%)"},
		{runtime.HistoryLayer{Indexed: true, Size: 10_000_000, Cached: 9_999_999}, true, "10MB (99%)"},
		{runtime.HistoryLayer{Indexed: true, Size: 10_000_000, Cached: 10_000_000}, false, "10000000 (100%)"},
		{runtime.HistoryLayer{Indexed: true}, true, "0B (100%)"},
	} {
		if got := formatCached(&tc.l, tc.human); got != tc.want {
			t.Errorf("formatCached(%+v, %v) = %q, want %q", tc.l, tc.human, got, tc.want)
		}
	}

	for _, tc := range []struct {
		s     string
		width int
		want  string
	}{
		{"short", 45, "short"},
		{strings.Repeat("a", 45), 45, strings.Repeat("a", 45)},
		{strings.Repeat("a", 46), 45, strings.Repeat("a", 44) + "…"},
		{"日本語のコマンド", 9, "日本語の…"}, // wide runes count two columns
	} {
		if got := ellipsis(tc.s, tc.width); got != tc.want {
			t.Errorf("ellipsis(%q, %d) = %q, want %q", tc.s, tc.width, got, tc.want)
		}
	}
}

// TestHistoryRows maps a config's history onto rows without a registry:
// newest first, the ID on the top row only, empty layers 0B.
func TestHistoryRows(t *testing.T) {
	cfg := digest.FromString("config")
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	h := &runtime.ImageHistory{
		Image: &fetch.Image{},
		Entries: []runtime.HistoryEntry{
			{Created: created, CreatedBy: "ADD\tfile in /", Layer: &runtime.HistoryLayer{Lazy: runtime.LazyYes, Indexed: true, Size: 4_260_000, Cached: 2_130_000}},
			{Created: created, CreatedBy: "ENV A=b"},
			{CreatedBy: "COPY x /x", Layer: &runtime.HistoryLayer{Lazy: runtime.LazyUnknown, Size: 1000}},
		},
	}
	h.Image.Manifest.Config.Digest = cfg
	rows := historyRows(h, historyOptions{human: true, since: func(time.Time) time.Duration { return 2 * time.Hour }})
	var got []string
	for _, r := range rows {
		got = append(got, strings.Join([]string{r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Lazy"], r["Cached"]}, "|"))
	}
	want := []string{
		cfg.Encoded()[:12] + "|N/A|COPY x /x|1kB|N/A|0B",
		"<missing>|2 hours ago|ENV A=b|0B|-|-",
		"<missing>|2 hours ago|ADD file in /|4.26MB|yes|2.13MB (50%)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("historyRows =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
