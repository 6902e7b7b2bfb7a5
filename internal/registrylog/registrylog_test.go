package registrylog

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// line is a docker-registry 2.8 JSON log line, trimmed to the fields that
// matter.
func line(id, method, uri, msg string, status int, written int64) string {
	s := fmt.Sprintf(`{"http.request.id":%q,"http.request.method":%q,"http.request.uri":%q,"level":"debug","msg":%q`, id, method, uri, msg)
	if status != 0 {
		s += fmt.Sprintf(`,"http.response.status":%d,"http.response.written":%d`, status, written)
	}
	return s + "}\n"
}

func TestParse(t *testing.T) {
	const d = digest.Digest("sha256:51ae48c75b2167bb9ad9365303a9d1ab5470e1295b0ddaed58ce405b8fcc9ddc")
	blob := "/v2/test/busybox/blobs/" + d.String()
	reader := func(off int) string {
		return fmt.Sprintf(`filesystem.Reader("/docker/registry/v2/blobs/sha256/51/x/data", %d)`, off)
	}
	log := strings.Join([]string{
		line("a", "GET", "/v2/", "response completed", 200, 2),
		`127.0.0.1 - - [23/Nov/2026:18:30:11 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"` + "\n",
		line("b", "GET", blob, reader(1000), 0, 0),
		line("b", "GET", blob, reader(5000), 0, 0), // a later read of the same request
		line("c", "HEAD", blob, "response completed", 200, 0),
		line("b", "GET", blob, "response completed", 206, 1001),
		line("d", "GET", blob, "response completed", 200, 7), // a whole-blob GET has no Reader line
		`{"level":"info","msg":"token not to be used after 2026-11-23 23:30:33 +0000 UTC - currently 2026-11-23 23:30:34.298341004 +0000 UTC"}` + "\n",
		line("e", "GET", blob, "error authorizing context: invalid token", 0, 0),
		`{"msg":"response completed", "partial`,
	}, "")
	got, err := Parse(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{
		{ID: "a", Method: "GET", URI: "/v2/", Status: 200, Written: 2, Offset: -1},
		{ID: "c", Method: "HEAD", URI: blob, Status: 200, Repo: "test/busybox", Digest: d, Offset: -1},
		{ID: "b", Method: "GET", URI: blob, Status: 206, Written: 1001, Repo: "test/busybox", Digest: d, Offset: 1000},
		{ID: "d", Method: "GET", URI: blob, Status: 200, Written: 7, Repo: "test/busybox", Digest: d, Offset: -1},
		{ID: "e", Method: "GET", URI: blob, Status: 401, Repo: "test/busybox", Digest: d, Offset: -1, AuthError: "invalid token"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse() =\n%+v\nwant\n%+v", got, want)
	}
}

// realLine is a "response completed" line as docker-registry 2.8 writes it
// with the JSON formatter, verbatim but for the fields timeAndDuration
// replaces.
const realLine = `{"go.version":"go1.19.8","http.request.host":"localhost:5099","http.request.id":"5d01213d-05eb-4169-bb3e-3476fd462571",` +
	`"http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:43540","http.request.uri":"/v2/","http.request.useragent":"curl/7.88.1",` +
	`"http.response.contenttype":"application/json; charset=utf-8",%s"http.response.status":200,"http.response.written":2,` +
	`"level":"info","msg":"response completed"%s}`

func TestParseTimeAndDuration(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		name      string
		dur, time string // the fields as they appear in the line; "" leaves the field out
		wantTime  time.Time
		wantDur   time.Duration
		wantStart time.Time
	}{
		{"as the registry writes them", `"3.282794ms"`, `"2026-11-23T23:26:49.038896543Z"`,
			at("2026-11-23T23:26:49.038896543Z"), 3282794 * time.Nanosecond, at("2026-11-23T23:26:49.035613749Z")},
		{"seconds and microseconds", `"1.5s"`, `"2026-11-23T23:26:49.5Z"`,
			at("2026-11-23T23:26:49.5Z"), 1500 * time.Millisecond, at("2026-11-23T23:26:48Z")},
		{"time without a fraction, in another zone", `"250µs"`, `"2026-11-24T00:26:49+01:00"`,
			at("2026-11-23T23:26:49Z"), 250 * time.Microsecond, at("2026-11-23T23:26:48.99975Z")},
		{"no duration", "", `"2026-11-23T23:26:49Z"`, at("2026-11-23T23:26:49Z"), 0, at("2026-11-23T23:26:49Z")},
		{"no time", `"3ms"`, "", time.Time{}, 3 * time.Millisecond, time.Time{}},
		{"time not RFC 3339", `"3ms"`, `"23/Nov/2026:23:26:49 +0000"`, time.Time{}, 3 * time.Millisecond, time.Time{}},
		{"duration without a unit", `"3282794"`, `"2026-11-23T23:26:49Z"`, at("2026-11-23T23:26:49Z"), 0, at("2026-11-23T23:26:49Z")},
		{"negative duration", `"-3ms"`, `"2026-11-23T23:26:49Z"`, at("2026-11-23T23:26:49Z"), 0, at("2026-11-23T23:26:49Z")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dur, tm string
			if tc.dur != "" {
				dur = `"http.response.duration":` + tc.dur + ","
			}
			if tc.time != "" {
				tm = `,"time":` + tc.time
			}
			log := fmt.Sprintf(realLine, dur, tm) + "\n"
			got, err := Parse(strings.NewReader(log))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("Parse(%s) = %+v, want one request", log, got)
			}
			r := got[0]
			if !r.Time.Equal(tc.wantTime) || r.Duration != tc.wantDur || !r.Start().Equal(tc.wantStart) {
				t.Errorf("Parse(%s): Time %v, Duration %v, Start() %v; want %v, %v, %v",
					log, r.Time, r.Duration, r.Start(), tc.wantTime, tc.wantDur, tc.wantStart)
			}
			if r.Method != "GET" || r.URI != "/v2/" || r.Status != 200 || r.Written != 2 {
				t.Errorf("Parse(%s) = %+v, want GET /v2/ 200, 2 bytes", log, r)
			}
		})
	}
}

// FuzzParse checks that any log parses without panicking, and that what it
// returns holds together: a digest only for a blob URI, an offset of -1 or
// more.
func FuzzParse(f *testing.F) {
	f.Add(line("a", "GET", "/v2/x/blobs/sha256:"+strings.Repeat("a", 64), `filesystem.Reader("/p", 12)`, 0, 0) +
		line("a", "GET", "/v2/x/blobs/sha256:"+strings.Repeat("a", 64), "response completed", 206, 3))
	f.Add(`{"msg":"response completed","http.request.uri":"/v2/"}` + "\nnot json\n{")
	f.Add(fmt.Sprintf(realLine, `"http.response.duration":"3.282794ms",`, `,"time":"2026-11-23T23:26:49.038896543Z"`))
	f.Fuzz(func(t *testing.T, log string) {
		reqs, err := Parse(strings.NewReader(log))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		for _, r := range reqs {
			if r.Duration < 0 {
				t.Errorf("request %q: duration %v", r.ID, r.Duration)
			}
			if r.Time.IsZero() && !r.Start().IsZero() {
				t.Errorf("request %q: time %v, start %v", r.ID, r.Time, r.Start())
			}
			if r.Offset < -1 {
				t.Errorf("request %q: offset %d", r.ID, r.Offset)
			}
			if (r.Digest != "") != blobURIRe.MatchString(r.URI) {
				t.Errorf("request %q: digest %q for URI %q", r.ID, r.Digest, r.URI)
			}
		}
	})
}
