package index

import (
	"os"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode and, since a checksum guards
// Decode's input, also straight to the body parser behind it. Neither may
// panic; whatever decodes must encode and decode again to an equal index.
func FuzzDecode(f *testing.F) {
	if data, err := os.ReadFile(goldenIndexFile); err == nil {
		f.Add(data)
	}
	for _, x := range encSamples() {
		if data, err := x.MarshalBinary(); err == nil && len(data) < 8<<10 {
			f.Add(data)
		}
		if body, _, _ := x.appendBody(nil, encVersion1, nil); len(body) < 8<<10 {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if x, err := Decode(data); err == nil && x.WindowsLoaded() {
			checkReencode(t, x) // (a version 2 toc alone cannot be re-encoded: FuzzDecodeTOC reads its windows)
		}
		if x, err := decodeBody(data, decodeLimit(len(data))); err == nil {
			checkReencode(t, x)
		}
	})
}

func checkReencode(t *testing.T, x *Index) {
	t.Helper()
	data, err := x.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary() of a decoded index: %v", err)
	}
	y, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode(MarshalBinary()) of a decoded index: %v", err)
	}
	if d := indexDiff(y, x); d != "" {
		t.Fatalf("Decode(MarshalBinary()) of a decoded index: %s", d)
	}
}
