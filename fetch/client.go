package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Config configures a Client. The zero value is usable.
type Config struct {
	// Insecure allows plain HTTP, and skips TLS certificate verification,
	// for registries other than loopback ones (localhost, 127.0.0.0/8,
	// [::1]), which always may use plain HTTP as Docker's do. Without it a
	// plain HTTP request to any other host is refused.
	Insecure bool

	// Platform picked from image indexes. nil: this machine's
	// (runtime.GOOS/GOARCH, and the GOARM variant for arm).
	Platform *ocispec.Platform

	// RequestTimeout is the deadline of each HTTP request, reading the body
	// included; for OpenBlob's stream it bounds the wait for the answer and
	// then each pause of the body. 0 = 30s.
	RequestTimeout time.Duration

	// Retries is the number of attempts after the first on connection
	// errors, 429, 5xx and short bodies. 0 = 4; negative = none.
	Retries int

	// Backoff is the delay before the first retry, doubled for each next
	// one (with ±25% jitter, at most 30s), or longer if the server's
	// Retry-After says so (honoured up to one minute). 0 = 200ms.
	Backoff time.Duration

	// Logger receives debug records of retries and odd server behaviour.
	// nil = silent.
	Logger *slog.Logger

	// Transport sends the requests. nil = a clone of http.DefaultTransport
	// (with TLS verification off when Insecure). An injected transport is
	// used as it is.
	Transport http.RoundTripper

	// Keychain finds credentials per registry. nil = authn.DefaultKeychain
	// (~/.docker/config.json, $DOCKER_CONFIG, credential helpers).
	Keychain authn.Keychain

	// UserAgent is sent before go-containerregistry's own. "" = ggcr's only.
	UserAgent string
}

const (
	defaultRequestTimeout = 30 * time.Second
	defaultRetries        = 4
	defaultBackoff        = 200 * time.Millisecond
)

// Client talks to OCI registries.
//
// It is safe for concurrent use. It holds one authenticated transport per
// repository and access (pull, or push), made on first use by a handshake
// that concurrent callers share, and kept for the Client's life; bearer
// tokens are refreshed when the registry answers 401. It starts no
// goroutines of its own beyond those of net/http's connection pool (see
// CloseIdleConnections). Returned slices and structs are the caller's.
// Every method that can block takes a ctx and returns ctx.Err() (wrapped)
// promptly when it ends.
type Client struct {
	cfg      Config
	retries  int
	platform ocispec.Platform
	log      *slog.Logger
	base     http.RoundTripper // the stack of transport.go, under ggcr's auth
	own      *http.Transport   // the transport New made, nil if Config.Transport was given
	keychain authn.Keychain

	// sleep waits between attempts; tests replace it to see the delays.
	sleep func(ctx context.Context, d time.Duration) error

	requests, retryCount, bytesFetched atomic.Int64

	mu    sync.Mutex             // guards conns
	conns map[connKey]*connEntry // authenticated transports by repository
}

// New returns a Client for cfg.
func New(cfg Config) *Client {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = defaultBackoff
	}
	retries := cfg.Retries
	switch {
	case retries == 0:
		retries = defaultRetries
	case retries < 0:
		retries = 0
	}
	c := &Client{
		cfg:      cfg,
		retries:  retries,
		log:      cfg.Logger,
		keychain: cfg.Keychain,
		sleep:    sleepCtx,
		conns:    make(map[connKey]*connEntry),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	if cfg.Platform != nil {
		c.platform = *cfg.Platform
	} else {
		c.platform = hostPlatform()
	}
	rt := cfg.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// A mount reads with several requests at once (readers, read-ahead,
		// fetch at open, prefetch); with the default two idle connections
		// per host the others were closed after each request and the next
		// one paid a new connection's round trip.
		t.MaxIdleConnsPerHost = maxIdleConnsPerHost
		if cfg.Insecure {
			if t.TLSClientConfig == nil {
				t.TLSClientConfig = &tls.Config{}
			}
			t.TLSClientConfig.InsecureSkipVerify = true
		}
		rt = t
		c.own = t
	}
	rt = &drainTransport{inner: rt}
	rt = &countTransport{inner: rt, requests: &c.requests}
	rt = &guardTransport{inner: rt, insecure: cfg.Insecure}
	rt = &timeoutTransport{inner: rt, timeout: cfg.RequestTimeout}
	rt = &retryTransport{inner: rt, c: c}
	c.base = transport.NewUserAgent(rt, cfg.UserAgent)
	return c
}

// CloseIdleConnections closes the idle keep-alive connections of the
// transport New made (not of an injected Config.Transport). The Client
// stays usable.
func (c *Client) CloseIdleConnections() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// hostPlatform is this machine's platform as image indexes name it.
func hostPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm" {
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" {
					p.Variant = "v" + s.Value[:1]
				}
			}
		}
	}
	return p
}

// Stats are the Client's counters since New.
type Stats struct {
	Requests     int64 // HTTP requests sent, each attempt, token and ping requests included
	Retries      int64 // attempts made again after a failure
	BytesFetched int64 // body bytes of blob reads (ReadRange, OpenBlob, ReadBlob, configs)
}

// Stats returns the counters. Safe for concurrent use; the three values are
// read one after the other, not as one snapshot.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:     c.requests.Load(),
		Retries:      c.retryCount.Load(),
		BytesFetched: c.bytesFetched.Load(),
	}
}

// nameOptions are the go-containerregistry parse options for a reference
// whose registry is host: loopback registries and Config.Insecure get
// name.Insecure, which lets the ping fall back to plain HTTP.
func (c *Client) nameOptions(host string) []name.Option {
	if c.cfg.Insecure || isLoopbackHost(hostOnly(host)) {
		return []name.Option{name.Insecure}
	}
	return nil
}

// hostOnly strips the port of a registry "host[:port]".
func hostOnly(hostport string) string {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap.Addr().String()
	}
	u := url.URL{Host: hostport}
	return u.Hostname()
}

func (c *Client) parseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parse reference %q: %w", ref, err)
	}
	if opts := c.nameOptions(r.Context().RegistryStr()); opts != nil {
		if r, err = name.ParseReference(ref, opts...); err != nil {
			return nil, fmt.Errorf("parse reference %q: %w", ref, err)
		}
	}
	return r, nil
}

func (c *Client) parseRepository(repo string) (name.Repository, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return name.Repository{}, fmt.Errorf("parse repository %q: %w", repo, err)
	}
	if opts := c.nameOptions(r.RegistryStr()); opts != nil {
		if r, err = name.NewRepository(repo, opts...); err != nil {
			return name.Repository{}, fmt.Errorf("parse repository %q: %w", repo, err)
		}
	}
	return r, nil
}

type connKey struct {
	repo string
	push bool
}

// connEntry is one repository's authenticated transport, or the handshake
// making it: done is closed when conn or err is set.
type connEntry struct {
	done chan struct{}
	conn *conn
	err  error
}

// conn is an authenticated connection to one repository.
type conn struct {
	repo name.Repository
	rt   http.RoundTripper // ggcr's *transport.Wrapper: auth, token refresh, scheme
	http *http.Client      // rt with our redirect policy
}

// Prepare makes the handshake with repo's registry (the /v2/ ping, and a
// token when it asks for one) that the first read of repo would make, and
// keeps it, with its connection, for the reads to come. A process that
// knows it will read soon calls it ahead, so that the first read costs
// one round trip rather than three.
func (c *Client) Prepare(ctx context.Context, repo string) error {
	_, err := c.conn(ctx, repo, false)
	return err
}

// maxIdleConnsPerHost is how many connections to one registry are kept
// open between requests.
const maxIdleConnsPerHost = 16

// conn returns the authenticated transport for repo, doing the handshake
// (ping, credentials from the keychain, token) on first use. Concurrent
// callers share one handshake; each stops waiting when its own ctx ends,
// and if the one doing it was cancelled the next caller tries again.
// Failed handshakes are not kept.
func (c *Client) conn(ctx context.Context, repo string, push bool) (*conn, error) {
	key := connKey{repo, push}
	for {
		c.mu.Lock()
		e, ok := c.conns[key]
		if !ok {
			e = &connEntry{done: make(chan struct{})}
			c.conns[key] = e
			c.mu.Unlock()
			e.conn, e.err = c.handshake(ctx, repo, push)
			if e.err != nil {
				c.mu.Lock()
				delete(c.conns, key)
				c.mu.Unlock()
			}
			close(e.done)
			return e.conn, e.err
		}
		c.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e.conn, nil
		}
		if ctx.Err() == nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) {
			continue
		}
		return nil, e.err
	}
}

func (c *Client) handshake(ctx context.Context, repoStr string, push bool) (*conn, error) {
	repo, err := c.parseRepository(repoStr)
	if err != nil {
		return nil, err
	}
	auth, err := authn.Resolve(ctx, c.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	scope := repo.Scope(transport.PullScope)
	if push {
		scope = repo.Scope(transport.PushScope)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, c.base, []string{scope})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", repo.Name(), convertErr(err))
	}
	return &conn{
		repo: repo,
		rt:   rt,
		http: &http.Client{Transport: rt, CheckRedirect: checkRedirect},
	}, nil
}

// checkRedirect follows at most 10 redirects and refuses one from a host
// to a different host given as a private, loopback or link-local address
// (blob storage is a public host; a registry must not point us at a
// metadata service or the local network).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	from, to := via[0].URL.Hostname(), req.URL.Hostname()
	if from == to {
		return nil
	}
	if a, err := netip.ParseAddr(to); err == nil {
		a = a.Unmap()
		if a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
			if fa, err := netip.ParseAddr(from); err != nil || !(fa.Unmap().IsLoopback() || fa.Unmap().IsPrivate()) {
				return fmt.Errorf("redirect from %s to local address %s refused", from, to)
			}
		}
	}
	return nil
}
