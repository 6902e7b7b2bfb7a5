package fetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The HTTP stack under go-containerregistry's auth transport, outermost
// first:
//
//	retryTransport    attempts on connection errors, 429 and 5xx (not for managed requests)
//	timeoutTransport  RequestTimeout per attempt, body included (not for managed requests)
//	guardTransport    refuses plain HTTP to hosts other than loopback unless Config.Insecure
//	countTransport    counts requests for Stats and the call's Meter
//	Config.Transport  or a clone of http.DefaultTransport
//
// A "managed" request is one whose caller (ReadRange, ReadBlob, OpenBlob)
// runs its own attempt loop and deadlines, because it must also retry
// failures that happen while reading the body; the two upper layers let it
// through untouched so that attempts do not multiply.

type ctxKey int

const managedKey ctxKey = 0

// managed marks ctx's requests as handled by the caller's own retry loop.
func managed(ctx context.Context) context.Context {
	return context.WithValue(ctx, managedKey, true)
}

func isManaged(ctx context.Context) bool {
	v, _ := ctx.Value(managedKey).(bool)
	return v
}

// errPlainHTTP is returned by guardTransport.
var errPlainHTTP = errors.New("fetch: plain HTTP refused for a registry that is not on loopback (Config.Insecure allows it)")

type countTransport struct {
	inner    http.RoundTripper
	requests *atomic.Int64
}

func (t *countTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	if m := meterFrom(req.Context()); m != nil {
		m.Request()
	}
	return t.inner.RoundTrip(req)
}

// errorBodyMax is the largest error response body drainTransport reads
// ahead.
const errorBodyMax = 64 << 10

// drainTransport reads the body of an error response (status 300 and up)
// of at most errorBodyMax bytes at once and closes it, handing the caller
// a copy: its connection goes back to the pool right away. A caller that
// sends the next request before closing the error's body (the referrers
// API's 404, then its fallback tag) would otherwise pay for a new
// connection.
type drainTransport struct {
	inner http.RoundTripper
}

func (t *drainTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err != nil || resp.StatusCode < 300 || resp.Body == nil || resp.ContentLength > errorBodyMax {
		return resp, err
	}
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, errorBodyMax+1))
	if rerr != nil || len(b) > errorBodyMax {
		// Hand over what was read, then the rest (or its error) as it comes.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
		return resp, nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

type guardTransport struct {
	inner    http.RoundTripper
	insecure bool
}

func (t *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.insecure && !isLoopbackHost(req.URL.Hostname()) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), errPlainHTTP)
	}
	return t.inner.RoundTrip(req)
}

// isLoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback address (127.0.0.0/8, ::1).
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

type timeoutTransport struct {
	inner   http.RoundTripper
	timeout time.Duration
}

func (t *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if isManaged(req.Context()) {
		return t.inner.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody ends a request's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

type retryTransport struct {
	inner http.RoundTripper
	c     *Client
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if isManaged(ctx) || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return t.inner.RoundTrip(req)
	}
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(ctx)
			r.Body = body
		}
		resp, err := t.inner.RoundTrip(r)
		var wait time.Duration
		retry := false
		switch {
		case err != nil:
			retry = retryable(ctx, err)
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			retry = true
			wait, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		if !retry || attempt > t.c.retries {
			return resp, err
		}
		cause := err
		if resp != nil {
			cause = fmt.Errorf("status %d", resp.StatusCode)
			io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
		}
		if err := t.c.pause(ctx, req.Method+" "+redactURL(req.URL), attempt, wait, cause); err != nil {
			return nil, err
		}
	}
}

// retryable reports whether an attempt that failed with err should be made
// again while ctx lives: connection errors, resets, short bodies, an
// attempt's own deadline, 429 and 5xx; not TLS or certificate failures,
// refusals of ours, digest mismatches or other statuses.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var herr *HTTPError
	if errors.As(err, &herr) {
		return herr.Temporary()
	}
	if errors.Is(err, errPlainHTTP) || errors.Is(err, ErrDigestMismatch) ||
		errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrRange) {
		return false
	}
	var (
		recErr     tls.RecordHeaderError
		verifyErr  *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
	)
	if errors.As(err, &recErr) || errors.As(err, &verifyErr) || errors.As(err, &unknownCA) ||
		errors.As(err, &hostErr) || errors.As(err, &invalidErr) {
		return false
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	return true
}

// pause waits before attempt+1 of op: the backoff for that attempt or the
// server's Retry-After, whichever is longer. It counts the retry and logs it.
func (c *Client) pause(ctx context.Context, op string, attempt int, retryAfter time.Duration, cause error) error {
	d := max(c.backoff(attempt), retryAfter)
	c.retryCount.Add(1)
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.LogAttrs(ctx, slog.LevelDebug, "retrying", slog.String("op", op),
			slog.Int("attempt", attempt+1), slog.Duration("dur", d), slog.String("err", cause.Error()))
	}
	return c.sleep(ctx, d)
}

const maxBackoff = 30 * time.Second

// backoff returns the delay after the given failed attempt (1 = the first):
// Config.Backoff doubled for each earlier retry, capped at maxBackoff, with
// ±25% jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	return d*3/4 + rand.N(d/2+1)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxRetryAfter bounds how long a Retry-After answer makes us wait: the
// retries stay bounded in time even when a server asks for hours.
const maxRetryAfter = time.Minute

// parseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3):
// either delay-seconds or an HTTP-date, taken relative to now. The result is
// in [0, maxRetryAfter]; ok is false for an empty or malformed value.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		var secs int64
		for i := 0; i < len(v); i++ {
			ch := v[i]
			if ch < '0' || ch > '9' {
				return 0, false
			}
			if secs < int64(maxRetryAfter/time.Second) {
				secs = secs*10 + int64(ch-'0')
			}
		}
		return min(time.Duration(secs)*time.Second, maxRetryAfter), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	return max(min(d, maxRetryAfter), 0), true
}

// parseContentRange reads a Content-Range header value of a 206 answer,
// "bytes FIRST-LAST/TOTAL" or "bytes FIRST-LAST/*" (total is then -1). It
// refuses unsatisfied ranges ("bytes */TOTAL"), signs, and ranges that are
// empty or end past TOTAL.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, size, found := strings.Cut(strings.TrimSpace(rest), "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var okA, okB bool
	first, okA = parseDigits(a)
	last, okB = parseDigits(b)
	if !okA || !okB || last < first {
		return 0, 0, 0, false
	}
	if size == "*" {
		return first, last, -1, true
	}
	total, ok = parseDigits(size)
	if !ok || last >= total {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// parseDigits parses a non-empty run of ASCII digits that fits an int64.
func parseDigits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
