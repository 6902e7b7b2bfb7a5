package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	_ "crypto/sha256" // digest algorithms for go-digest
	_ "crypto/sha512"

	digest "github.com/opencontainers/go-digest"
)

// MaxRangeLen is the most ReadRange reads at once (it allocates the
// buffer before asking); OpenBlob streams more.
const MaxRangeLen = 1 << 30

// attempts runs f until it succeeds, fails for good, or Config.Retries
// retries are spent, pausing between attempts (see pause). f gets a ctx
// marked as managed, so the transport neither retries nor times out its
// requests: f sets its own deadline. If ctx ends, attempts returns
// ctx.Err().
func (c *Client) attempts(ctx context.Context, op string, f func(ctx context.Context) error) error {
	mctx := managed(ctx)
	for attempt := 1; ; attempt++ {
		err := f(mctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > c.retries || !retryable(ctx, err) {
			return err
		}
		var retryAfter time.Duration
		if herr := (*HTTPError)(nil); errors.As(err, &herr) {
			retryAfter = herr.retryAfter
		}
		if err := c.pause(ctx, op, attempt, retryAfter, err); err != nil {
			return err
		}
	}
}

// deadlineErr explains an attempt that ran out of its own time while the
// caller's ctx still lives.
func (c *Client) deadlineErr(parent, attempt context.Context, err error) error {
	if err != nil && parent.Err() == nil && errors.Is(attempt.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no complete answer within %v: %w", c.cfg.RequestTimeout, err)
	}
	return err
}

func blobURL(cn *conn, blob digest.Digest) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", cn.repo.Scheme(), cn.repo.RegistryStr(), cn.repo.RepositoryStr(), blob)
}

// countReader counts the bytes read through it into n.
// countReader counts body bytes for Stats and for the call's Meter (nil:
// none).
type countReader struct {
	r io.Reader
	n *atomic.Int64
	m Meter
}

func (r countReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	if r.m != nil && n > 0 {
		r.m.BodyBytes(int64(n))
	}
	return n, err
}

// ReadRange returns exactly n bytes of blob starting at off, using an HTTP
// Range request (`Range: bytes=off-(off+n-1)`).
//
// It retries (Config.Retries, with Config.Backoff) on connection errors,
// resets, 429 (honouring Retry-After), 5xx, and bodies shorter than
// promised; a 200 answer with the whole blob is accepted by skipping to off
// (some servers ignore Range) if the body is long enough. Other 4xx answers
// are not retried (401 is the auth transport's to handle). Every attempt has
// the Config.RequestTimeout deadline, reading included. Status failures are
// *HTTPError (ErrNotFound for 404, ErrRange for 416); a range beyond the
// blob's end wraps ErrRange. The bytes are not verified: a range has no
// digest of its own, and the caller checks what it builds from them. n
// may be at most MaxRangeLen (ErrTooLarge).
//
// Safe for concurrent use; the returned slice is the caller's. If ctx ends
// it returns ctx.Err() promptly.
func (c *Client) ReadRange(ctx context.Context, repo string, blob digest.Digest, off, n int64) ([]byte, error) {
	if err := blob.Validate(); err != nil {
		return nil, fmt.Errorf("fetch %s [%d,+%d): %w", blob, off, n, err)
	}
	if off < 0 || n < 0 || n > math.MaxInt64-off {
		return nil, fmt.Errorf("fetch %s [%d,+%d): %w", blob, off, n, ErrRange)
	}
	if n == 0 {
		return []byte{}, nil
	}
	if n > MaxRangeLen {
		return nil, fmt.Errorf("fetch %s [%d,+%d): at most %d bytes at once: %w", blob, off, n, MaxRangeLen, ErrTooLarge)
	}
	cn, err := c.conn(ctx, repo, false)
	if err != nil {
		return nil, fmt.Errorf("fetch %s [%d,+%d): %w", blob, off, n, err)
	}
	var out []byte
	op := fmt.Sprintf("fetch %s [%d,+%d)", blob, off, n)
	err = c.attempts(ctx, op, func(mctx context.Context) error {
		actx, cancel := context.WithTimeout(mctx, c.cfg.RequestTimeout)
		defer cancel()
		b, err := c.rangeAttempt(actx, cn, blob, off, n)
		out = b
		return c.deadlineErr(ctx, actx, err)
	})
	if err != nil {
		return nil, fmt.Errorf("fetch %s [%d,+%d) from %s: %w", blob, off, n, repo, err)
	}
	return out, nil
}

func (c *Client) rangeAttempt(ctx context.Context, cn *conn, blob digest.Digest, off, n int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(cn, blob), nil)
	if err != nil {
		return nil, err
	}
	last := off + n - 1
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, last))
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := cn.http.Do(req)
	if err != nil {
		return nil, convertErr(err)
	}
	defer resp.Body.Close()

	var skip int64
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if cr == "" {
			break // trust it is what we asked for; the length is still checked
		}
		first, end, total, ok := parseContentRange(cr)
		if !ok {
			return nil, fmt.Errorf("answer has Content-Range %q: %w", truncate(cr, 80), ErrUnsupported)
		}
		if total >= 0 && last >= total {
			return nil, fmt.Errorf("blob has %d bytes: %w", total, ErrRange)
		}
		if first > off || end < last {
			return nil, fmt.Errorf("asked for bytes %d-%d, got %q: %w", off, last, truncate(cr, 80), ErrUnsupported)
		}
		skip = off - first
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength <= last {
			return nil, fmt.Errorf("blob has %d bytes: %w", resp.ContentLength, ErrRange)
		}
		skip = off
		c.log.LogAttrs(ctx, slog.LevelDebug, "server ignored Range, skipping", slog.String("layer", blob.String()),
			slog.Int64("off", off), slog.Int64("len", n))
	default:
		return nil, newHTTPError(resp)
	}

	body := countReader{r: resp.Body, n: &c.bytesFetched, m: meterFrom(ctx)}
	if skip > 0 {
		if got, err := io.CopyN(io.Discard, body, skip); err != nil {
			return nil, shortBody(got, skip+n, err)
		}
	}
	buf := make([]byte, n)
	if got, err := io.ReadFull(body, buf); err != nil {
		return nil, shortBody(skip+int64(got), skip+n, err)
	}
	return buf, nil
}

// shortBody explains a body that ended (or broke) before want bytes.
func shortBody(got, want int64, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if want < 0 {
		return fmt.Errorf("body broke after %d bytes: %w", got, err)
	}
	return fmt.Errorf("body ended after %d of %d bytes: %w", got, want, err)
}

// OpenBlob streams a whole blob. The returned reader verifies the digest
// (and the Content-Length, if sent) at EOF and returns an error wrapping
// ErrDigestMismatch instead of io.EOF if they differ.
//
// Opening retries like ReadRange; once the answer has come, a broken body
// is the reader's error (not retried). The stream is bound to ctx, and
// fails with an error wrapping ErrStalled when no byte arrives for a whole
// RequestTimeout. The reader is for one goroutine; Close it, even after an
// error, and it may be closed more than once.
func (c *Client) OpenBlob(ctx context.Context, repo string, blob digest.Digest) (io.ReadCloser, error) {
	if err := blob.Validate(); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", blob, err)
	}
	cn, err := c.conn(ctx, repo, false)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", blob, err)
	}
	var br *blobReader
	err = c.attempts(ctx, "open blob "+blob.String(), func(mctx context.Context) error {
		sctx, cancel := context.WithCancelCause(mctx)
		timer := time.AfterFunc(c.cfg.RequestTimeout, func() { cancel(ErrStalled) })
		stop := func() {
			timer.Stop()
			cancel(nil)
		}
		req, err := http.NewRequestWithContext(sctx, http.MethodGet, blobURL(cn, blob), nil)
		if err != nil {
			stop()
			return err
		}
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := cn.http.Do(req)
		if err != nil {
			err = stallErr(sctx, convertErr(err))
			stop()
			return err
		}
		if resp.StatusCode != http.StatusOK {
			herr := newHTTPError(resp)
			stop()
			return herr
		}
		timer.Reset(c.cfg.RequestTimeout)
		br = &blobReader{
			body: countReader{r: resp.Body, n: &c.bytesFetched, m: meterFrom(ctx)}, closer: resp.Body,
			blob: blob, verifier: blob.Verifier(), size: resp.ContentLength,
			ctx: sctx, timer: timer, timeout: c.cfg.RequestTimeout, stop: stop,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open blob %s in %s: %w", blob, repo, err)
	}
	return br, nil
}

// stallErr says so when ctx was ended by the stall timer.
func stallErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		return fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return err
}

// blobReader verifies a blob stream at EOF and keeps the stall timer fed.
type blobReader struct {
	body     io.Reader
	closer   io.Closer
	blob     digest.Digest
	verifier digest.Verifier
	size     int64 // Content-Length, -1 if unknown
	n        int64 // bytes read so far
	ctx      context.Context
	timer    *time.Timer
	timeout  time.Duration
	stop     func() // stops the timer and ends ctx
	err      error  // sticky: the error every later Read returns
	closed   bool
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.body.Read(p)
	if n > 0 {
		r.verifier.Write(p[:n])
		r.n += int64(n)
		r.timer.Reset(r.timeout)
	}
	switch {
	case r.size >= 0 && r.n > r.size:
		r.err = fmt.Errorf("read blob %s: body longer than its %d bytes: %w", r.blob, r.size, ErrDigestMismatch)
	case err == io.EOF:
		switch {
		case r.size >= 0 && r.n != r.size:
			r.err = fmt.Errorf("read blob %s: %w", r.blob, shortBody(r.n, r.size, io.ErrUnexpectedEOF))
		case !r.verifier.Verified():
			r.err = fmt.Errorf("read blob %s: %d bytes with another digest: %w", r.blob, r.n, ErrDigestMismatch)
		default:
			r.err = io.EOF
		}
	case err != nil:
		r.err = fmt.Errorf("read blob %s after %d bytes: %w", r.blob, r.n, stallErr(r.ctx, err))
	}
	if r.err != nil {
		r.stop()
	}
	return n, r.err
}

func (r *blobReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.stop()
	return r.closer.Close()
}

// ReadBlob returns a whole small blob, verified against its digest. It
// refuses (ErrTooLarge) a blob larger than max bytes without reading more
// than max+1 of it. It retries like ReadRange, short bodies included; a
// digest mismatch is not retried.
func (c *Client) ReadBlob(ctx context.Context, repo string, blob digest.Digest, max int64) ([]byte, error) {
	cn, err := c.conn(ctx, repo, false)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", blob, err)
	}
	b, err := c.readBlob(ctx, cn, blob, max)
	if err != nil {
		return nil, fmt.Errorf("read blob %s from %s: %w", blob, repo, err)
	}
	return b, nil
}

func (c *Client) readBlob(ctx context.Context, cn *conn, blob digest.Digest, max int64) ([]byte, error) {
	if err := blob.Validate(); err != nil {
		return nil, err
	}
	if max < 0 {
		max = 0
	}
	var out []byte
	err := c.attempts(ctx, "read blob "+blob.String(), func(mctx context.Context) error {
		actx, cancel := context.WithTimeout(mctx, c.cfg.RequestTimeout)
		defer cancel()
		b, err := c.readBlobAttempt(actx, cn, blob, max)
		out = b
		return c.deadlineErr(ctx, actx, err)
	})
	return out, err
}

func (c *Client) readBlobAttempt(ctx context.Context, cn *conn, blob digest.Digest, max int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(cn, blob), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := cn.http.Do(req)
	if err != nil {
		return nil, convertErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, newHTTPError(resp)
	}
	if resp.ContentLength > max {
		return nil, fmt.Errorf("%d bytes, at most %d allowed: %w", resp.ContentLength, max, ErrTooLarge)
	}
	limit := max
	if limit < math.MaxInt64 {
		limit++
	}
	b, err := io.ReadAll(io.LimitReader(countReader{r: resp.Body, n: &c.bytesFetched, m: meterFrom(ctx)}, limit))
	if err != nil {
		return nil, shortBody(int64(len(b)), resp.ContentLength, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than %d bytes: %w", max, ErrTooLarge)
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, shortBody(int64(len(b)), resp.ContentLength, io.ErrUnexpectedEOF)
	}
	if got := blob.Algorithm().FromBytes(b); got != blob {
		return nil, fmt.Errorf("%d bytes with digest %s: %w", len(b), got, ErrDigestMismatch)
	}
	return b, nil
}
