package registrylog

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

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

// FuzzParse checks that any log parses without panicking, and that what it
// returns holds together: a digest only for a blob URI, an offset of -1 or
// more.
func FuzzParse(f *testing.F) {
	f.Add(line("a", "GET", "/v2/x/blobs/sha256:"+strings.Repeat("a", 64), `filesystem.Reader("/p", 12)`, 0, 0) +
		line("a", "GET", "/v2/x/blobs/sha256:"+strings.Repeat("a", 64), "response completed", 206, 3))
	f.Add(`{"msg":"response completed","http.request.uri":"/v2/"}` + "\nnot json\n{")
	f.Fuzz(func(t *testing.T, log string) {
		reqs, err := Parse(strings.NewReader(log))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		for _, r := range reqs {
			if r.Offset < -1 {
				t.Errorf("request %q: offset %d", r.ID, r.Offset)
			}
			if (r.Digest != "") != blobURIRe.MatchString(r.URI) {
				t.Errorf("request %q: digest %q for URI %q", r.ID, r.Digest, r.URI)
			}
		}
	})
}
