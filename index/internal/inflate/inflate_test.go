package inflate

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// stride is how far apart exhaustive loops sample: every case normally, a
// seventh of them with -short (the race detector makes them slow).
func stride() int {
	if testing.Short() {
		return 7
	}
	return 1
}

func datasets(tb testing.TB) []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte("x")},
		{"short text", []byte("hello, hello, hello world\n")},
		{"text", textLike(300<<10, 1)},
		{"tar", tarLike(tb, 1<<20, 2)},
		{"zeros", make([]byte, 200<<10)},
		{"random", randomBytes(150<<10, 3)},
		{"skewed", skewed(200<<10, 4)},
	}
}

func TestRoundTrip(t *testing.T) {
	sets := datasets(t)
	maxLen := map[string]int{"pigz-11": 512 << 10} // zopfli is slow
	if testing.Short() {
		maxLen["pigz-11"] = 0
	}
	for _, c := range compressors() {
		t.Run(c.name, func(t *testing.T) {
			for _, ds := range sets {
				t.Run(ds.name, func(t *testing.T) {
					if n, ok := maxLen[c.name]; ok && len(ds.data) > n {
						t.Skipf("%d bytes take %s too long", len(ds.data), c.name)
					}
					gz := c.gz(t, ds.data)
					for _, spacing := range []int64{0, 64 << 10} {
						out, cps, err := scanAll(gz, spacing)
						if err != nil {
							t.Fatalf("Scan(spacing %d) = %v", spacing, err)
						}
						if !bytes.Equal(out, ds.data) {
							t.Fatalf("Scan(spacing %d) wrote %d bytes, want the %d input bytes", spacing, len(out), len(ds.data))
						}
						checkResume(t, gz, ds.data, cps, false)
					}
				})
			}
		})
	}
}

func TestMultiMember(t *testing.T) {
	text := textLike(100<<10, 5)
	tarData := tarLike(t, 300<<10, 6)
	for _, tc := range []struct {
		name    string
		members [][]byte // uncompressed members
		level   []int
		pad     int // trailing zero bytes
	}{
		{"two", [][]byte{text, tarData}, []int{6, 9}, 0},
		{"empty members", [][]byte{nil, text, nil, nil, []byte("x")}, []int{6, 1, 0, 9, 6}, 0},
		{"stored and huffman-only", [][]byte{text, text, tarData}, []int{0, -2, 1}, 0},
		{"zero padding", [][]byte{text, []byte("tail")}, []int{6, 6}, 1000},
		{"one zero", [][]byte{text}, []int{6}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gz, want []byte
			var starts []int64 // Out of each member
			for i, m := range tc.members {
				starts = append(starts, int64(len(want)))
				gz = append(gz, stdGzip(tc.level[i])(t, m)...)
				want = append(want, m...)
			}
			gz = append(gz, make([]byte, tc.pad)...)
			for _, spacing := range []int64{0, 1 << 40} {
				out, cps, err := scanAll(gz, spacing)
				if err != nil {
					t.Fatalf("Scan(spacing %d) = %v", spacing, err)
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("Scan(spacing %d) wrote %d bytes, want %d", spacing, len(out), len(want))
				}
				if spacing > 1<<30 {
					// Only member starts.
					if got := outs(cps); !slices.Equal(got, starts) {
						t.Errorf("Scan(spacing %d) checkpoints at %v, want member starts %v", spacing, got, starts)
					}
				}
				checkResume(t, gz, want, cps, false)
			}
		})
	}
}

func outs(cps []Checkpoint) []int64 {
	var o []int64
	for _, cp := range cps {
		o = append(o, cp.Out)
	}
	return o
}

// TestSpacing checks which block starts Scan picks, against all of them.
func TestSpacing(t *testing.T) {
	data := tarLike(t, 2<<20, 7)
	gz := stdGzip(1)(t, data)
	_, all, err := scanAll(gz, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 20 {
		t.Fatalf("only %d blocks: test data too small", len(all))
	}
	for _, tc := range []struct {
		name    string
		spacing int64
	}{
		{"negative", -1},
		{"every block", 1},
		{"64k", 64 << 10},
		{"256k", 256 << 10},
		{"1m", 1 << 20},
		{"bigger than the stream", 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []int64
			for _, cp := range all {
				if len(want) == 0 || cp.Out-want[len(want)-1] >= tc.spacing {
					want = append(want, cp.Out)
				}
			}
			_, cps, err := scanAll(gz, tc.spacing)
			if err != nil {
				t.Fatal(err)
			}
			if got := outs(cps); !slices.Equal(got, want) {
				t.Errorf("Scan(spacing %d) checkpoints at %v, want %v", tc.spacing, got, want)
			}
		})
	}
}

// TestHeaderFields covers the optional header fields, the header CRC among them.
func TestHeaderFields(t *testing.T) {
	data := textLike(50<<10, 8)
	body := rawDeflate(t, data, 6)
	build := func(flags byte, fields []byte, badHCRC bool) []byte {
		h := []byte{0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3}
		h = append(h, fields...)
		if flags&flagHCRC != 0 {
			c := uint16(crc32.ChecksumIEEE(h))
			if badHCRC {
				c++
			}
			h = binary.LittleEndian.AppendUint16(h, c)
		}
		h = append(h, body...)
		h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(data))
		return binary.LittleEndian.AppendUint32(h, uint32(len(data)))
	}
	extra := append([]byte{5, 0}, "abcde"...)
	bigExtra := binary.LittleEndian.AppendUint16(nil, 65535)
	bigExtra = append(bigExtra, bytes.Repeat([]byte{7}, 65535)...)
	longName := append(bytes.Repeat([]byte("n"), 5000), 0)
	for _, tc := range []struct {
		name    string
		gz      []byte
		wantErr bool
	}{
		{"none", build(0, nil, false), false},
		{"extra", build(flagExtra, extra, false), false},
		{"big extra", build(flagExtra, bigExtra, false), false},
		{"name", build(flagName, []byte("file.tar\x00"), false), false},
		{"long name", build(flagName, longName, false), false},
		{"comment", build(flagComment, []byte("a comment\x00"), false), false},
		{"all", build(flagExtra|flagName|flagComment|flagHCRC, append(append(slices.Clone(extra), "n\x00"...), "c\x00"...), false), false},
		{"header crc", build(flagHCRC, nil, false), false},
		{"bad header crc", build(flagHCRC|flagName, []byte("x\x00"), true), true},
		{"reserved flags ignored", build(0xe0, nil, false), false},
		{"from gzip.Writer", func() []byte {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Name, zw.Comment, zw.Extra = "name", "comment", []byte("extra")
			zw.Write(data)
			zw.Close()
			return buf.Bytes()
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, cps, err := scanAll(tc.gz, 8<<10)
			if tc.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Scan() = %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan() = %v", err)
			}
			if !bytes.Equal(out, data) {
				t.Fatalf("Scan() output differs")
			}
			checkResume(t, tc.gz, data, cps, false)
		})
	}
}

// TestHandmade runs streams written bit by bit, valid and not.
func TestHandmade(t *testing.T) {
	type stream struct {
		deflate []byte
		data    []byte // the output, for the trailer
	}
	fixed := func(final bool, f func(w *bitWriter)) func(w *bitWriter) {
		return func(w *bitWriter) {
			w.bits(b2u(final), 1)
			w.bits(1, 2)
			f(w)
			w.fixedLit(256)
		}
	}
	mk := func(data string, blocks ...func(w *bitWriter)) stream {
		var w bitWriter
		for _, b := range blocks {
			b(&w)
		}
		return stream{w.bytes(), []byte(data)}
	}
	lits := func(s string) func(w *bitWriter) {
		return func(w *bitWriter) {
			for _, c := range []byte(s) {
				w.fixedLit(int(c))
			}
		}
	}
	// match writes a fixed-code match with length symbol ls (+ extra) and
	// distance code dc (+ extra).
	match := func(ls int, lx uint64, lxn uint, dc int, dx uint64, dxn uint) func(w *bitWriter) {
		return func(w *bitWriter) {
			w.fixedLit(ls)
			w.bits(lx, lxn)
			w.code(uint64(dc), 5)
			w.bits(dx, dxn)
		}
	}
	seq := func(fs ...func(w *bitWriter)) func(w *bitWriter) {
		return func(w *bitWriter) {
			for _, f := range fs {
				f(w)
			}
		}
	}
	raw := func(v uint64, n uint) func(w *bitWriter) {
		return func(w *bitWriter) { w.bits(v, n) }
	}
	stored := func(final bool, p string) func(w *bitWriter) {
		return func(w *bitWriter) { w.stored(final, []byte(p)) }
	}
	// dyn writes a dynamic block with literal/length code lengths litLens
	// (symbol to length) and distance code lengths distLens, then the
	// literal/length symbols syms.
	dyn := func(final bool, litLens map[int]uint8, distLens []uint8, syms ...int) func(w *bitWriter) {
		return func(w *bitWriter) {
			ll := make([]uint8, 257)
			for s, l := range litLens {
				for s >= len(ll) {
					ll = append(ll, 0)
				}
				ll[s] = l
			}
			lc, _ := w.dynamicHeader(final, ll, distLens)
			for _, s := range syms {
				w.code(uint64(lc[s]), uint(ll[s]))
			}
		}
	}
	// A complete literal code with lengths up to 15: 'a' 1, 'b' 2, ... and
	// two codes of 15 bits, one of them EOB.
	long := map[int]uint8{}
	for i := range 14 {
		long['a'+i] = uint8(i + 1)
	}
	long['z'], long[256] = 15, 15
	tooLongLens := map[int]uint8{'a': 1, 'b': 2, 256: 2, 'c': 2}

	stored32k := strings.Repeat("0123456789abcdef", 2048)
	for _, tc := range []struct {
		name    string
		s       stream
		wantErr string // substring of the error; "" for none
	}{
		{"empty fixed block", mk("", fixed(true, lits(""))), ""},
		{"literals", mk("abc", fixed(true, lits("abc"))), ""},
		{"match at full history", mk("ababa", fixed(true, seq(lits("ab"), match(257, 0, 0, 1, 0, 0)))), ""},
		{"distance past history", mk("a", fixed(true, seq(lits("a"), match(257, 0, 0, 1, 0, 0)))), "distance 2 reaches past the 1 bytes"},
		{"match with no history", mk("", fixed(true, match(257, 0, 0, 0, 0, 0))), "distance 1 reaches past the 0 bytes"},
		{"longest overlapping match", mk("x"+strings.Repeat("x", 258), fixed(true, seq(lits("x"), match(285, 0, 0, 0, 0, 0)))), ""},
		{"length 258 via 284 extra", mk("x"+strings.Repeat("x", 258), fixed(true, seq(lits("x"), match(284, 31, 5, 0, 0, 0)))), ""},
		{"farthest distance", mk(stored32k+stored32k[:3],
			stored(false, stored32k), fixed(true, match(257, 0, 0, 29, 8191, 13))), ""},
		{"distance one past window", mk(stored32k[:3],
			stored(false, stored32k[:32767]), fixed(true, match(257, 0, 0, 29, 8191, 13))), "distance 32768 reaches past the 32767 bytes"},
		{"literal/length 286", mk("", fixed(true, func(w *bitWriter) { w.fixedLit(286) })), "invalid literal/length code"},
		{"distance code 30", mk("a", fixed(true, seq(lits("a"), func(w *bitWriter) { w.fixedLit(257); w.code(30, 5) }))), "invalid distance code"},
		{"block type 3", mk("", raw(0b111, 3)), "reserved block type 3"},
		{"stored lengths disagree", mk("", raw(1, 3), func(w *bitWriter) { w.align(); w.bits(5, 16); w.bits(5, 16) }), "stored block length"},
		{"empty stored blocks", mk("ab", stored(false, ""), stored(false, "a"), stored(false, ""), stored(true, "b")), ""},
		{"stored then fixed then stored", mk("xyzxyz!", stored(false, "xyz"), fixed(false, match(257, 0, 0, 2, 0, 0)), stored(true, "!")), ""},
		{"dynamic, 15-bit codes", mk("abz"+strings.Repeat("n", 3),
			dyn(true, long, []uint8{1, 1}, 'a', 'b', 'z', 'n', 'n', 'n', 256)), ""},
		{"dynamic, single distance code", mk("aaaa", func(w *bitWriter) {
			ll := make([]uint8, 258)
			ll['a'], ll[256], ll[257] = 1, 2, 2
			lc, dc := w.dynamicHeader(true, ll, []uint8{1})
			w.code(uint64(lc['a']), 1)
			w.code(uint64(lc[257]), 2)
			w.code(uint64(dc[0]), 1)
			w.code(uint64(lc[256]), 2)
		}), ""},
		{"dynamic, no distance codes", mk("a", dyn(true, map[int]uint8{'a': 1, 256: 1}, []uint8{0}, 'a', 256)), ""},
		{"dynamic, oversubscribed", mk("", dyn(true, tooLongLens, []uint8{1, 1}, 256)), "invalid literal/length code"},
		{"dynamic, incomplete", mk("", dyn(true, map[int]uint8{'a': 2, 256: 2}, []uint8{1, 1}, 256)), "invalid literal/length code"},
		{"dynamic, incomplete distance", mk("", dyn(true, map[int]uint8{'a': 1, 256: 1}, []uint8{2, 2, 2}, 256)), "invalid distance code"},
		{"dynamic, no end of block", mk("", dyn(true, map[int]uint8{'a': 1, 'b': 1}, []uint8{1, 1})), "without an end-of-block code"},
		{"dynamic, 287 literal codes", mk("", raw(1|2<<1|30<<3, 8), raw(0, 7)), "287 literal/length codes"},
		{"dynamic, 31 distance codes", mk("", raw(1|2<<1|0<<3, 8), raw(30, 5), raw(0, 4)), "31 distance codes"},
		{"dynamic, repeat first", mk("", func(w *bitWriter) {
			w.bits(1, 1)
			w.bits(2, 2)
			w.bits(0, 5)
			w.bits(0, 5)
			w.bits(19-4, 4)
			for _, sym := range codeLenOrder {
				w.bits(b2u(sym == 16 || sym == 1), 3) // one bit each: 1 gets code 0, 16 code 1
			}
			w.code(1, 1)
			w.bits(0, 2)
		}), "code length repeat with nothing to repeat"},
		{"dynamic, repeat past the end", mk("", func(w *bitWriter) {
			w.bits(1, 1)
			w.bits(2, 2)
			w.bits(0, 5)
			w.bits(0, 5)
			w.bits(19-4, 4)
			for _, sym := range codeLenOrder {
				w.bits(b2u(sym == 18 || sym == 1), 3)
			}
			// 257 + 1 lengths: 18 twice (138 zeros each) overflows.
			w.code(1, 1)
			w.bits(127, 7)
			w.code(1, 1)
			w.bits(127, 7)
		}), "code length repeat runs past 258 lengths"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gz := member(tc.s.deflate, tc.s.data)
			ref, refErr := stdlibGunzip(gz)
			out, cps, err := scanAll(gz, 0)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Scan() = %v, want ErrCorrupt with %q", err, tc.wantErr)
				}
				if refErr == nil {
					t.Errorf("compress/gzip accepts what Scan rejects with %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan() = %v", err)
			}
			if !bytes.Equal(out, tc.s.data) {
				t.Fatalf("Scan() = %q, want %q", out, tc.s.data)
			}
			if refErr != nil || !bytes.Equal(ref, tc.s.data) {
				t.Errorf("compress/gzip gives %q, %v", ref, refErr)
			}
			checkResume(t, gz, tc.s.data, cps, false)
		})
	}
}

func TestCorrupt(t *testing.T) {
	data := textLike(40<<10, 9)
	good := stdGzip(6)(t, data)
	edit := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	for _, tc := range []struct {
		name    string
		gz      []byte
		wantErr string
	}{
		{"empty", nil, "ends early"},
		{"zeros only", make([]byte, 100), "not the gzip magic"},
		{"bad magic", edit(func(b []byte) []byte { b[1] = 0x8c; return b }), "not the gzip magic"},
		{"bad method", edit(func(b []byte) []byte { b[2] = 7; return b }), "compression method 7"},
		{"bad crc", edit(func(b []byte) []byte { b[len(b)-8]++; return b }), "member CRC-32"},
		{"bad size", edit(func(b []byte) []byte { b[len(b)-4]++; return b }), "member ISIZE"},
		{"trailing garbage", append(slices.Clone(good), "junk after the stream"...), "not the gzip magic"},
		{"short trailing garbage", append(slices.Clone(good), "junk"...), "ends early"},
		{"garbage after zeros", append(slices.Clone(good), 0, 0, 0, 1), "trailing garbage"},
		{"partial second header", append(slices.Clone(good), 0x1f, 0x8b, 8), "ends early"},
		{"no trailer", good[:len(good)-8], "ends early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := scanAll(tc.gz, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Scan() = %v, want ErrCorrupt with %q", err, tc.wantErr)
			}
		})
	}
}

// TestTruncated cuts a stream at every length: Scan must fail with
// ErrCorrupt and io.ErrUnexpectedEOF.
func TestTruncated(t *testing.T) {
	data := textLike(20<<10, 10)
	for _, c := range []compressor{{"stdlib-6", stdGzip(6)}, {"stdlib-0", stdGzip(0)}, {"sync-flush", flushingGzip}} {
		t.Run(c.name, func(t *testing.T) {
			gz := c.gz(t, data)
			for n := 0; n < len(gz); n += stride() {
				_, _, err := scanAll(gz[:n], 0)
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("Scan(first %d of %d bytes) = %v, want ErrCorrupt and io.ErrUnexpectedEOF", n, len(gz), err)
				}
			}
		})
	}
}

// TestBitFlips flips every bit of a small stream: Scan must return an error
// or (for a flip in a header field nobody checks) the original output.
func TestBitFlips(t *testing.T) {
	data := textLike(1500, 11)
	for _, c := range []compressor{{"stdlib-6", stdGzip(6)}, {"stdlib-1", stdGzip(1)}, {"huffman-only", stdGzip(-2)}, {"stored", stdGzip(0)}} {
		t.Run(c.name, func(t *testing.T) {
			gz := c.gz(t, data)
			for i := 0; i < len(gz)*8; i += stride() {
				b := slices.Clone(gz)
				b[i/8] ^= 1 << (i % 8)
				out, cps, err := scanAll(b, 0)
				if err == nil && !bytes.Equal(out, data) {
					t.Fatalf("flip bit %d: Scan() accepted different output", i)
				}
				if err != nil && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("flip bit %d: Scan() = %v, want ErrCorrupt", i, err)
				}
				// Resuming into flipped bits must not panic either.
				for _, cp := range cps {
					io.Copy(io.Discard, NewReader(bytes.NewReader(b[cp.In:]), cp))
				}
			}
		})
	}
}

// TestResumePrefix feeds NewReader ever longer prefixes of the compressed
// bytes after a checkpoint: it must return a growing prefix of the output and
// then io.ErrUnexpectedEOF, and never an error before the output it could
// decode.
func TestResumePrefix(t *testing.T) {
	data := tarLike(t, 300<<10, 12)
	for _, c := range []compressor{{"stdlib-6", stdGzip(6)}, {"stdlib-0", stdGzip(0)}, {"sync-flush", flushingGzip}, {"klauspost-1", klauspostGzip(1)}} {
		t.Run(c.name, func(t *testing.T) {
			gz := c.gz(t, data)
			gz = append(gz, stdGzip(6)(t, []byte("second member"))...)
			want := append(slices.Clone(data), "second member"...)
			_, cps, err := scanAll(gz, 100<<10)
			if err != nil {
				t.Fatal(err)
			}
			cp := cps[1]
			total := len(gz) - int(cp.In)
			boundary := len(gz) - len(stdGzip(6)(t, []byte("second member"))) - int(cp.In) // where the first member ends
			var ns []int
			for n := 0; n < total; n += max(1, total/1000) * stride() {
				ns = append(ns, n)
			}
			ns = append(ns, boundary, total)
			slices.Sort(ns)
			prev := 0
			for _, n := range ns {
				got, err := io.ReadAll(NewReader(bytes.NewReader(gz[cp.In:cp.In+int64(n)]), cp))
				switch {
				case n == total || n == boundary:
					if err != nil {
						t.Fatalf("NewReader(first %d bytes, ending at a member end) = %v", n, err)
					}
				case !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCorrupt):
					t.Fatalf("NewReader(first %d bytes) = %v, want io.ErrUnexpectedEOF", n, err)
				}
				if !bytes.Equal(got, want[cp.Out:cp.Out+int64(len(got))]) {
					t.Fatalf("NewReader(first %d bytes) output is not a prefix of the stream", n)
				}
				if len(got) < prev {
					t.Fatalf("NewReader(first %d bytes) gave %d bytes, fewer than %d from a shorter input", n, len(got), prev)
				}
				prev = len(got)
			}
			if prev != len(want)-int(cp.Out) {
				t.Fatalf("NewReader(everything) gave %d bytes, want %d", prev, len(want)-int(cp.Out))
			}
		})
	}
}

// TestResumeWindow checks that back-references are checked against the
// window a resumed reader gets.
func TestResumeWindow(t *testing.T) {
	data := textLike(200<<10, 13)
	gz := stdGzip(6)(t, data)
	_, cps, err := scanAll(gz, 50<<10)
	if err != nil {
		t.Fatal(err)
	}
	cp := cps[1]
	if len(cp.Window) != 32768 {
		t.Fatalf("window is %d bytes, want 32768", len(cp.Window))
	}
	for _, tc := range []struct {
		name    string
		window  []byte
		wantErr error
	}{
		{"full", cp.Window, nil},
		{"longer than 32k", append(make([]byte, 1000), cp.Window...), nil},
		{"none", nil, ErrCorrupt},
		{"last 100 bytes", cp.Window[len(cp.Window)-100:], ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cp
			c.Window = tc.window
			got, err := io.ReadAll(NewReader(bytes.NewReader(gz[c.In:]), c))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("read = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && !strings.Contains(err.Error(), "reaches past") {
				t.Errorf("read = %v, want a distance error", err)
			}
			if err == nil && !bytes.Equal(got, data[c.Out:]) {
				t.Fatalf("read gave different output")
			}
		})
	}
	t.Run("bad bits", func(t *testing.T) {
		c := cp
		c.Bits = 8
		if _, err := io.ReadAll(NewReader(bytes.NewReader(gz[c.In:]), c)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read with Bits 8 = %v, want ErrCorrupt", err)
		}
	})
}

// TestResumeAcrossMembers reads on from a checkpoint through later members,
// whose checksums a resumed reader does check.
func TestResumeAcrossMembers(t *testing.T) {
	a, b := textLike(100<<10, 14), textLike(70<<10, 15)
	gzA, gzB := stdGzip(6)(t, a), stdGzip(9)(t, b)
	want := append(slices.Clone(a), b...)
	_, cps, err := scanAll(gzA, 30<<10)
	if err != nil {
		t.Fatal(err)
	}
	cp := cps[1]
	badCRC := slices.Clone(gzB)
	badCRC[len(badCRC)-8]++
	badCRCinA := slices.Clone(gzA)
	badCRCinA[len(badCRCinA)-8]++
	for _, tc := range []struct {
		name    string
		gz      []byte
		wantErr string
	}{
		{"two members", slices.Concat(gzA, gzB), ""},
		{"zero padding", slices.Concat(gzA, gzB, make([]byte, 512)), ""},
		{"garbage after padding", slices.Concat(gzA, gzB, []byte{0, 0, 3}), "trailing garbage"},
		{"bad crc in a later member", slices.Concat(gzA, badCRC), "member CRC-32"},
		{"bad crc in the resumed member is not seen", slices.Concat(badCRCinA, gzB), ""},
		{"no trailer", gzA[:len(gzA)-3], "ends early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := io.ReadAll(NewReader(bytes.NewReader(tc.gz[cp.In:]), cp))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("read = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("read = %v", err)
			}
			if !bytes.Equal(got, want[cp.Out:]) {
				t.Fatalf("read gave %d bytes, want %d", len(got), len(want)-int(cp.Out))
			}
		})
	}
}

// TestReaders runs Scan and NewReader over readers that return little at a
// time, or data together with io.EOF.
func TestReaders(t *testing.T) {
	data := tarLike(t, 200<<10, 16)
	gz := stdGzip(6)(t, data)
	_, cps, err := scanAll(gz, 40<<10)
	if err != nil {
		t.Fatal(err)
	}
	cp := cps[2]
	for _, tc := range []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data with eof", iotest.DataErrReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Scan(tc.wrap(bytes.NewReader(gz)), &out, 1<<20, nil); err != nil {
				t.Fatalf("Scan() = %v", err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("Scan() output differs")
			}
			got, err := io.ReadAll(NewReader(tc.wrap(bytes.NewReader(gz[cp.In:])), cp))
			if err != nil || !bytes.Equal(got, data[cp.Out:]) {
				t.Fatalf("NewReader: read %d bytes, %v; want %d bytes", len(got), err, len(data)-int(cp.Out))
			}
		})
	}
	t.Run("iotest.TestReader", func(t *testing.T) {
		if err := iotest.TestReader(NewReader(bytes.NewReader(gz[cp.In:]), cp), data[cp.Out:]); err != nil {
			t.Fatal(err)
		}
	})
}

func TestErrorsPropagate(t *testing.T) {
	data := textLike(300<<10, 17)
	gz := stdGzip(6)(t, data)
	t.Run("read error", func(t *testing.T) {
		err := Scan(&errorReader{gz[:1000], errTest}, io.Discard, 0, nil)
		if !errors.Is(err, errTest) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Scan() = %v, want the reader's error", err)
		}
		_, cps, _ := scanAll(gz, 0)
		cp := cps[1]
		_, err = io.ReadAll(NewReader(&errorReader{gz[cp.In : cp.In+100], errTest}, cp))
		if !errors.Is(err, errTest) {
			t.Fatalf("NewReader read = %v, want the reader's error", err)
		}
	})
	t.Run("no progress", func(t *testing.T) {
		err := Scan(&errorReader{gz[:1000], nil}, io.Discard, 0, nil)
		if err == nil || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Scan() = %v, want an error about the reader", err)
		}
	})
	t.Run("write error", func(t *testing.T) {
		err := Scan(bytes.NewReader(gz), &errorWriter{100 << 10, errTest}, 0, nil)
		if !errors.Is(err, errTest) {
			t.Fatalf("Scan() = %v, want the writer's error", err)
		}
	})
	t.Run("short write", func(t *testing.T) {
		err := Scan(bytes.NewReader(gz), &errorWriter{100 << 10, nil}, 0, nil)
		if !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("Scan() = %v, want io.ErrShortWrite", err)
		}
	})
	t.Run("checkpoint error", func(t *testing.T) {
		n := 0
		err := Scan(bytes.NewReader(gz), io.Discard, 0, func(Checkpoint) error {
			if n++; n == 3 {
				return errTest
			}
			return nil
		})
		if !errors.Is(err, errTest) || n != 3 {
			t.Fatalf("Scan() = %v after %d checkpoints, want the callback's error after 3", err, n)
		}
	})
}
