package bench

import (
	"fmt"
	"strings"
	"testing"
)

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		name string
		have [][2]int64
		rg   [2]int64
		want int64
	}{
		{"nothing before", nil, [2]int64{0, 10}, 0},
		{"disjoint", [][2]int64{{0, 10}}, [2]int64{10, 20}, 0},
		{"inside", [][2]int64{{0, 100}}, [2]int64{10, 20}, 10},
		{"straddles", [][2]int64{{0, 15}}, [2]int64{10, 20}, 5},
		{"covered twice counts once", [][2]int64{{0, 15}, {5, 20}}, [2]int64{10, 20}, 10},
		{"two pieces", [][2]int64{{0, 12}, {18, 30}}, [2]int64{10, 20}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := overlap(tc.have, tc.rg); got != tc.want {
				t.Errorf("overlap(%v, %v) = %d, want %d", tc.have, tc.rg, got, tc.want)
			}
		})
	}
}

// registryLine is a docker-registry 2.8 JSON log line, trimmed to the
// fields that matter.
func registryLine(id, method, uri, msg string, status int, written int64) string {
	s := fmt.Sprintf(`{"http.request.id":%q,"http.request.method":%q,"http.request.uri":%q,"level":"debug","msg":%q`, id, method, uri, msg)
	if status != 0 {
		s += fmt.Sprintf(`,"http.response.status":%d,"http.response.written":%d`, status, written)
	}
	return s + "}\n"
}

func TestParseRegistryLog(t *testing.T) {
	const d = "sha256:51ae48c75b2167bb9ad9365303a9d1ab5470e1295b0ddaed58ce405b8fcc9ddc"
	blob := "/v2/bench/python3/blobs/" + d
	log := strings.Join([]string{
		registryLine("a", "GET", "/v2/", "response completed", 200, 2),
		`127.0.0.1 - - [23/Nov/2026:18:30:11 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"` + "\n",
		registryLine("b", "GET", "/v2/bench/python3/manifests/latest", "response completed", 200, 500),
		registryLine("c", "GET", blob, `filesystem.Reader("/docker/registry/v2/blobs/sha256/51/x/data", 1000)`, 0, 0),
		registryLine("c", "GET", blob, `filesystem.Reader("/docker/registry/v2/blobs/sha256/51/x/data", 5000)`, 0, 0),
		registryLine("c", "GET", blob, "response completed", 206, 1001), // [1000, 2001)
		registryLine("d", "GET", blob, `filesystem.Reader("/docker/registry/v2/blobs/sha256/51/x/data", 2000)`, 0, 0),
		registryLine("d", "GET", blob, "response completed", 206, 1000), // meets c at byte 2000: not twice
		registryLine("e", "GET", blob, `filesystem.Reader("/docker/registry/v2/blobs/sha256/51/x/data", 1500)`, 0, 0),
		registryLine("e", "GET", blob, "response completed", 206, 100), // inside c: twice
		registryLine("f", "HEAD", blob, "response completed", 200, 0),
		`{"msg":"response completed", "partial`,
	}, "")
	got, err := parseRegistryLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests != 6 || got.Bytes != 2+500+1001+1000+100 || got.Blobs[d] != 2101 || got.Dup != 99 {
		t.Errorf("parseRegistryLog = %+v, want 6 requests, 2603 bytes, 2101 of the blob, 99 twice", got)
	}
}
