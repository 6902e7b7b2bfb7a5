package index

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"testing"
)

// GzipBlocks reports every block start, in order, the first of each
// member included, and refuses a corrupt stream.
func TestGzipBlocks(t *testing.T) {
	raw := bytes.Repeat([]byte("lazyfs frames and deflate blocks, "), 40000) // 1.3 MB
	var z bytes.Buffer
	for range 2 { // two members, as `cat a.gz b.gz` makes
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
		zw.Write(raw) //nolint:errcheck // a bytes.Buffer
		zw.Close()    //nolint:errcheck
	}
	bs, err := GzipBlocks(context.Background(), bytes.NewReader(z.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) < 4 || bs[0].Out != 0 || bs[0].In != 10 || bs[0].Bits != 0 {
		t.Fatalf("GzipBlocks = %d blocks starting %+v, want several, the first at byte 10 (after the header)", len(bs), bs[0])
	}
	member := false
	for i := 1; i < len(bs); i++ {
		if bs[i].Out <= bs[i-1].Out || bs[i].In < bs[i-1].In {
			t.Fatalf("block %d %+v after %+v: not in order", i, bs[i], bs[i-1])
		}
		member = member || bs[i].Out == int64(len(raw))
	}
	if !member {
		t.Errorf("no block starts the second member (output offset %d)", len(raw))
	}
	bad := bytes.Clone(z.Bytes())
	bad[len(bad)/3] ^= 0xff
	if _, err := GzipBlocks(context.Background(), bytes.NewReader(bad)); err == nil {
		t.Errorf("GzipBlocks(corrupt) = nil error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := GzipBlocks(ctx, bytes.NewReader(z.Bytes())); !errors.Is(err, context.Canceled) {
		t.Errorf("GzipBlocks(cancelled) = %v, want context.Canceled", err)
	}
}
