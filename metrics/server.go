package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves a Registry over HTTP at /metrics. Close stops it.
type Server struct {
	srv  *http.Server
	addr string
	done chan struct{} // closed when Serve has returned
	once sync.Once     // Close
}

// shutdownGrace is how long Close lets a scrape in progress finish.
const shutdownGrace = 5 * time.Second

// Listen listens on addr (HOST:PORT; port 0 picks a free one, which
// Server.Addr tells) and serves the metrics at /metrics until Close. Other
// paths are 404.
func (r *Registry) Listen(addr string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Handler(log))
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		addr: l.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "path", s.addr, "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the Server listens on, with the port it got.
func (s *Server) Addr() string { return s.addr }

// Close stops listening, lets scrapes in progress finish for a few
// seconds, and waits for the server's goroutine. Idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = errors.Join(fmt.Errorf("metrics: shut down %s: %w", s.addr, err), s.srv.Close())
		}
		<-s.done
	})
	return err
}
