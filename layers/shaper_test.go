package layers

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// shaper is a TCP relay to upstream: every byte either way goes through
// one token bucket of rate bytes/s (a shared link), and data from the
// client is held delay (the whole round trip) before it is forwarded.
type shaper struct {
	addr  string
	rate  float64
	delay time.Duration

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func startShaper(t *testing.T, upstream string, rate float64, delay time.Duration) *shaper {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &shaper{addr: l.Addr().String(), rate: rate, delay: delay, last: time.Now()}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go s.pipe(u, c, true)
			go s.pipe(c, u, false)
		}
	}()
	return s
}

// take waits until n bytes may go.
func (s *shaper) take(n int) {
	s.mu.Lock()
	now := time.Now()
	s.tokens = min(s.tokens+now.Sub(s.last).Seconds()*s.rate, 64<<10)
	s.last = now
	s.tokens -= float64(n)
	wait := time.Duration(0)
	if s.tokens < 0 {
		wait = time.Duration(-s.tokens / s.rate * float64(time.Second))
	}
	s.mu.Unlock()
	time.Sleep(wait)
}

type chunk struct {
	b  []byte
	at time.Time
}

func (s *shaper) pipe(dst, src net.Conn, delayed bool) {
	defer dst.Close()
	defer src.Close()
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if delayed {
			time.Sleep(time.Until(c.at.Add(s.delay)))
		}
		s.take(len(c.b))
		if _, err := dst.Write(c.b); err != nil {
			go io.Copy(io.Discard, src)
			return
		}
	}
}
