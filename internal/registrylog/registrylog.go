// Package registrylog reads the JSON log of Debian's docker-registry
// (distribution 2.8) at debug level: which requests it answered (or its
// auth refused), when and for how long, and for a ranged blob read, where
// in the blob the body
// started. The integration
// tests (internal/testutil) and the benchmark (bench) both count the
// registry's traffic with it.
package registrylog

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Request is one request as the registry logged it on completion.
type Request struct {
	ID     string // http.request.id
	Method string
	URI    string
	Status int
	// Written is the number of body bytes the registry sent.
	Written int64
	// Repo and Digest are set for /v2/REPO/blobs/DIGEST, else empty.
	Repo   string
	Digest digest.Digest
	// Offset is where in the blob the storage driver started reading, from
	// its debug line filesystem.Reader(PATH, OFFSET) for the same request
	// (the registry does not log the Range header anywhere); -1 when the
	// request has no such line.
	Offset int64
	// AuthError is why the registry's auth refused the request, from its
	// warning "error authorizing context: REASON" ("invalid token" for an
	// expired one, "authorization token required", "insufficient scope");
	// such a request has no "response completed" line, and Status is 401.
	AuthError string
	// Time is when the registry logged the request as completed: the
	// line's "time" (RFC 3339 with nanoseconds, in the registry's clock);
	// zero when the line has none or it does not parse.
	Time time.Time
	// Duration is http.response.duration: from the registry's start of
	// handling the request to its completion, body written; zero when the
	// line has none or it does not parse (or is negative).
	Duration time.Duration
}

// Start returns when the registry started handling the request (Time
// less Duration), or the zero time when Time is unknown.
func (r Request) Start() time.Time {
	if r.Time.IsZero() {
		return time.Time{}
	}
	return r.Time.Add(-r.Duration)
}

var (
	blobURIRe   = regexp.MustCompile(`^/v2/(.+)/blobs/([a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$`)
	readerMsgRe = regexp.MustCompile(`^filesystem\.Reader\(".*", (\d+)\)$`)
)

// Parse reads a registry log and returns its completed requests in the
// order they completed. Lines that are not JSON (the access log, a line
// being written) and JSON lines it does not know are passed over; a line
// longer than 16 MiB ends the reading without an error.
func Parse(rd io.Reader) ([]Request, error) {
	offsets := map[string]int64{} // request id → first offset read
	var out []Request
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e struct {
			Msg     string `json:"msg"`
			ID      string `json:"http.request.id"`
			Method  string `json:"http.request.method"`
			URI     string `json:"http.request.uri"`
			Status  int    `json:"http.response.status"`
			Written int64  `json:"http.response.written"`
			Time    string `json:"time"`
			Dur     string `json:"http.response.duration"`
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		if sm := readerMsgRe.FindStringSubmatch(e.Msg); sm != nil {
			if _, seen := offsets[e.ID]; !seen {
				off, _ := strconv.ParseInt(sm[1], 10, 64)
				offsets[e.ID] = off
			}
			continue
		}
		reason, refused := strings.CutPrefix(e.Msg, "error authorizing context: ")
		if !refused && !strings.HasPrefix(e.Msg, "response completed") {
			continue
		}
		r := Request{ID: e.ID, Method: e.Method, URI: e.URI, Status: e.Status, Written: e.Written, Offset: -1}
		if refused {
			// docker-registry answers an auth challenge with 401 and
			// logs no completion for it.
			r.Status, r.Written, r.AuthError = http.StatusUnauthorized, 0, reason
		}
		r.Time, r.Duration = parseTime(e.Time), parseDuration(e.Dur)
		if off, ok := offsets[e.ID]; ok {
			r.Offset = off
			delete(offsets, e.ID)
		}
		if m := blobURIRe.FindStringSubmatch(e.URI); m != nil {
			r.Repo, r.Digest = m[1], digest.Digest(m[2])
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return out, err
	}
	return out, nil
}

// parseTime parses a log line's "time" (logrus writes it in RFC 3339 with
// nanoseconds; RFC 3339 without a fraction parses too); zero if it does
// not parse.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// parseDuration parses http.response.duration, a Go duration string such
// as "3.282794ms"; zero if it does not parse or is negative.
func parseDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0
	}
	return d
}
