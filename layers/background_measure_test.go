package layers

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

func TestMeasureBackground(t *testing.T) {
	if os.Getenv("LAZYFS_MEASURE_BG") == "" {
		t.Skip("a measurement for docs/architecture.md (Background fetch): set LAZYFS_MEASURE_BG=1, and LAZYFS_MEASURE_SHAPE=1 for a 100 Mbit/s, 20 ms link")
	}
	reg := testutil.StartRegistry(t)
	ls := testutil.DebianLayers(t, "python3")
	testutil.PushImage(t, reg.Addr, "test/py:v1", ls, testutil.ImageConfig{})
	addr := reg.Addr
	if os.Getenv("LAZYFS_MEASURE_SHAPE") != "" {
		addr = startShaper(t, reg.Addr, 100e6/8, 20*time.Millisecond).addr
	}
	client := fetch.New(fetch.Config{})
	is, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(Config{Client: client, Store: is, Build: index.BuildOptions{Span: 256 << 10}})
	img, err := client.Resolve(t.Context(), reg.Addr+"/test/py:v1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Layers(t.Context(), img)
	if err != nil {
		t.Fatal(err)
	}
	var xs []*index.Index
	for _, x := range l {
		xs = append(xs, x.Index)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	type variant struct {
		name string
		cfg  BackgroundConfig
	}
	for _, v := range []variant{
		{"off", BackgroundConfig{}},
		{"idle", BackgroundConfig{Mode: BackgroundIdle}},
		{"full", BackgroundConfig{Mode: BackgroundFull}},
		{"full-no-yield", BackgroundConfig{Mode: BackgroundFull, Pause: time.Nanosecond}},
	} {
		for run := range 2 {
			s, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache")})
			if err != nil {
				t.Fatal(err)
			}
			src := NewSource(client, addr+"/test/py", s, log)
			src.readahead = 0
			t0 := time.Now()
			v.cfg.Name = v.name
			b := src.StartBackground(xs, v.cfg)
			// A start-up: 60 misses of random frames, 5 ms apart.
			rng := rand.New(rand.NewPCG(3, 4))
			var lat []time.Duration
			for range 60 {
				x := xs[rng.IntN(len(xs))]
				k := rng.IntN(len(x.Frames))
				t1 := time.Now()
				if _, err := src.Frame(t.Context(), x, k); err != nil {
					t.Fatal(err)
				}
				lat = append(lat, time.Since(t1))
				time.Sleep(5 * time.Millisecond)
			}
			startup := time.Since(t0)
			slices.Sort(lat)
			<-b.Done()
			local := "-"
			if v.cfg.Mode != BackgroundOff {
				local = fmt.Sprint(time.Since(t0).Round(10 * time.Millisecond))
			}
			t.Logf("RESULT %s run %d: start-up %v, miss median %v p90 %v max %v; fully local after %s (%d requests)",
				v.name, run, startup.Round(time.Millisecond), lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*9/10].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond), local, b.Progress().Requests)
			src.Close()
			s.Close()
		}
	}
}
