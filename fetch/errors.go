package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

var (
	// ErrNotFound means the registry does not know the manifest, blob or
	// repository asked for (HTTP 404). An *HTTPError with Status 404 matches
	// it with errors.Is.
	ErrNotFound = errors.New("fetch: not found")

	// ErrDigestMismatch means bytes read from the registry do not match the
	// digest they were asked for.
	ErrDigestMismatch = errors.New("fetch: blob digest mismatch")

	// ErrTooLarge means a blob is larger than the caller allowed (ReadBlob's
	// max) or a size declared by the registry is implausible.
	ErrTooLarge = errors.New("fetch: blob too large")

	// ErrRange means a byte range lies (partly) outside the blob. An
	// *HTTPError with Status 416 matches it with errors.Is.
	ErrRange = errors.New("fetch: range outside blob")

	// ErrStalled ends an OpenBlob stream whose body made no progress for a
	// whole Config.RequestTimeout.
	ErrStalled = errors.New("fetch: no data within the request timeout")

	// ErrNoPlatform means an image index has no manifest for the wanted
	// platform. The error that wraps it lists the platforms the index has.
	ErrNoPlatform = errors.New("fetch: no manifest for platform")

	// ErrUnsupported means the registry answered with something this client
	// does not handle (a schema 1 manifest, an unknown media type, a
	// malformed range answer).
	ErrUnsupported = errors.New("fetch: unsupported")
)

// HTTPError is an HTTP answer with an unexpected status. It never holds
// credentials: URL has no query (signed blob URLs carry tokens there) and no
// userinfo.
type HTTPError struct {
	Method, URL string // URL without query or userinfo
	Status      int
	Code        string // registry error code if any, e.g. BLOB_UNKNOWN
	Message     string // registry error message if any, at most 200 bytes

	retryAfter time.Duration // the answer's Retry-After, 0 if none
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s", e.Code)
		if e.Message != "" {
			fmt.Fprintf(&b, ": %s", e.Message)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Temporary reports whether the request may succeed if sent again: 429 or
// any 5xx.
func (e *HTTPError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Is makes errors.Is(err, ErrNotFound) true for a 404 and errors.Is(err,
// ErrRange) true for a 416.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrRange:
		return e.Status == http.StatusRequestedRangeNotSatisfiable
	}
	return false
}

// redactURL returns u without query, fragment and userinfo.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	c.RawFragment = ""
	return c.String()
}

const maxErrorBody = 64 << 10

// newHTTPError builds an *HTTPError from resp and closes its body after
// reading at most maxErrorBody bytes of it.
func newHTTPError(resp *http.Response) *HTTPError {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &HTTPError{Status: resp.StatusCode}
	if resp.Request != nil {
		e.Method = resp.Request.Method
		e.URL = redactURL(resp.Request.URL)
	}
	var envelope struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &envelope) == nil && len(envelope.Errors) > 0 {
		e.Code = envelope.Errors[0].Code
		e.Message = truncate(envelope.Errors[0].Message, 200)
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.retryAfter = d
	}
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// convertErr turns a go-containerregistry *transport.Error found in err's
// chain into an *HTTPError (ggcr's own text may quote whole response
// bodies). Other errors are returned unchanged.
//
// It also strips the query and userinfo from the URL of a *url.Error in the
// chain: a redirect to blob storage carries signed credentials there.
func convertErr(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			uerr.URL = redactURL(u)
		} else {
			uerr.URL = "(unparsable URL)"
		}
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	e := &HTTPError{Status: terr.StatusCode}
	if terr.Request != nil {
		e.Method = terr.Request.Method
		e.URL = redactURL(terr.Request.URL)
	}
	if len(terr.Errors) > 0 {
		e.Code = string(terr.Errors[0].Code)
		e.Message = truncate(terr.Errors[0].Message, 200)
	}
	if err == error(terr) || (uerr != nil && uerr.Err == error(terr)) {
		return e
	}
	// The status came with other failures (ggcr's ping reports both the
	// https and the http attempt): keep their text, shortened.
	return &ggcrError{msg: truncate(err.Error(), 500), http: e}
}

// ggcrError is a go-containerregistry error whose text says more than the
// *HTTPError it holds.
type ggcrError struct {
	msg  string
	http *HTTPError
}

func (e *ggcrError) Error() string { return e.msg }
func (e *ggcrError) Unwrap() error { return e.http }
