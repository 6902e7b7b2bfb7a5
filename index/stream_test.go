package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// streamTestTar is a tar of a few files, some of them larger than the
// spans the tests use, with compressible pseudo-random content.
func streamTestTar(t *testing.T) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, size := range []int{0, 100, 300 << 10, 5 << 10, 200 << 10} {
		data := make([]byte, size)
		for j := range data {
			data[j] = "abcdefgh\n"[rng.IntN(9)]
		}
		hdr := &tar.Header{Name: string(rune('a'+i)) + ".txt", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func streamGzip(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, p := range parts {
		zw := gzip.NewWriter(&out)
		if _, err := zw.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func TestDecodeAll(t *testing.T) {
	data := streamTestTar(t)
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zblob := zw.EncodeAll(data, nil)
	zw.Close()
	half := len(data) / 2
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"tar", data},
		{"gzip", streamGzip(t, data)},
		{"gzip members", streamGzip(t, data[:half], data[half:])},
		{"zstd", zblob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := Build(t.Context(), digest.FromBytes(tc.blob), bytes.NewReader(tc.blob), BuildOptions{Span: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(x.Frames) < 3 {
				t.Fatalf("Build gave %d frames, want several", len(x.Frames))
			}
			next := 0
			var got []byte
			err = x.DecodeAll(t.Context(), bytes.NewReader(tc.blob), func(i int, b []byte) error {
				if i != next {
					t.Errorf("DecodeAll gave frame %d, want %d", i, next)
				}
				next++
				if d := digest.FromBytes(b); d != x.Frames[i].Digest {
					t.Errorf("frame %d: digest %s, want %s", i, d, x.Frames[i].Digest)
				}
				f := &x.Frames[i]
				single, err := x.DecodeFrameWith(i, tc.blob[f.CompressedOffset:f.CompressedOffset+f.CompressedSize], x.WindowFrom(i, got[len(got)-int(x.frameSize(i-1)):]))
				if err != nil || !bytes.Equal(single, b) {
					t.Errorf("frame %d: DecodeFrame = %d bytes, %v; DecodeAll gave %d bytes", i, len(single), err, len(b))
				}
				got = append(got, b...)
				return nil
			})
			if err != nil {
				t.Fatalf("DecodeAll() = %v", err)
			}
			if next != len(x.Frames) || !bytes.Equal(got, data) {
				t.Errorf("DecodeAll gave %d frames, %d bytes; want %d frames, the %d bytes of the tar", next, len(got), len(x.Frames), len(data))
			}

			t.Run("short blob", func(t *testing.T) {
				err := x.DecodeAll(t.Context(), bytes.NewReader(tc.blob[:len(tc.blob)*2/3]), func(int, []byte) error { return nil })
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("DecodeAll(two thirds of the blob) = %v, want ErrCorrupt", err)
				}
			})
			t.Run("stream longer than the index", func(t *testing.T) {
				y := *x
				y.Frames = x.Frames[:len(x.Frames)-1]
				y.TarSize = x.Frames[len(x.Frames)-1].Offset
				err := y.DecodeAll(t.Context(), bytes.NewReader(tc.blob), func(int, []byte) error { return nil })
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("DecodeAll(index without its last frame) = %v, want ErrCorrupt", err)
				}
			})
			t.Run("fn error", func(t *testing.T) {
				stop := errors.New("stop here")
				calls := 0
				err := x.DecodeAll(t.Context(), bytes.NewReader(tc.blob), func(i int, _ []byte) error {
					calls++
					if i == 1 {
						return stop
					}
					return nil
				})
				if !errors.Is(err, stop) || calls != 2 {
					t.Errorf("DecodeAll with fn failing at frame 1 = %v after %d calls, want %v after 2", err, calls, stop)
				}
			})
			t.Run("cancelled", func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				err := x.DecodeAll(ctx, bytes.NewReader(tc.blob), func(int, []byte) error { return nil })
				if !errors.Is(err, context.Canceled) {
					t.Errorf("DecodeAll(cancelled ctx) = %v, want context.Canceled", err)
				}
			})
		})
	}
}
