package inflate

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
)

// genStream turns an arbitrary program (fuzz input) into a valid gzip stream
// and the output it decodes to. Unlike a real compressor it reaches every
// corner of the format on purpose: all three block types in any order, empty
// stored blocks, dynamic codes of any shape up to 15 bits, degenerate and empty
// distance codes, code length runs, matches reaching to the farthest byte of
// the member's history, several members with optional header fields, and zero
// padding at the end (pad bytes, which compress/gzip does not accept).
func genStream(prog []byte) (gz, out []byte, pad int) {
	g := &gen{prog: prog}
	members := 1 + int(g.next()%3)
	for m := 0; m < members; m++ {
		start := len(g.out)
		flags := g.next() & (flagExtra | flagName | flagComment | flagHCRC)
		h := []byte{0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 255}
		if flags&flagExtra != 0 {
			h = append(h, 3, 0, 'x', 'y', 'z')
		}
		if flags&flagName != 0 {
			h = append(h, "name\x00"...)
		}
		if flags&flagComment != 0 {
			h = append(h, "comment\x00"...)
		}
		if flags&flagHCRC != 0 {
			h = binary.LittleEndian.AppendUint16(h, uint16(crc32.ChecksumIEEE(h)))
		}
		var w bitWriter
		for {
			final := g.done() || g.next()&1 != 0
			g.block(&w, final, start)
			if final {
				break
			}
		}
		gz = append(gz, h...)
		gz = append(gz, w.bytes()...)
		gz = binary.LittleEndian.AppendUint32(gz, crc32.ChecksumIEEE(g.out[start:]))
		gz = binary.LittleEndian.AppendUint32(gz, uint32(len(g.out)-start))
	}
	pad = int(g.next() % 4)
	return append(gz, make([]byte, pad)...), g.out, pad
}

type gen struct {
	prog []byte
	out  []byte // everything decoded so far
}

func (g *gen) done() bool { return len(g.prog) == 0 }

// next returns the next program byte, or 0 once the program has ended.
func (g *gen) next() byte {
	if len(g.prog) == 0 {
		return 0
	}
	c := g.prog[0]
	g.prog = g.prog[1:]
	return c
}

// op is one deflate symbol: a literal (dist 0) or a match.
type op struct {
	lit          byte
	length, dist int
}

// ops reads a block's symbols from the program and appends their output.
func (g *gen) ops(memberStart int, stored bool) []op {
	var ops []op
	n := int(g.next())
	size := 0
	for i := 0; i < n && !g.done(); i++ {
		c := g.next()
		hist := min(len(g.out)-memberStart, windowSize)
		switch {
		case c&3 == 2 && hist > 0:
			length := 3 + int(g.next())
			if c&4 != 0 {
				length = 258
			}
			var dist int
			switch c >> 3 & 3 {
			case 0:
				dist = hist // as far as it goes
			case 1:
				dist = 1 // a run
			default:
				dist = 1 + int(binary.BigEndian.Uint16([]byte{g.next(), g.next()}))%hist
			}
			if stored && size+length > 65535 {
				return ops
			}
			for k := 0; k < length; k++ {
				g.out = append(g.out, g.out[len(g.out)-dist])
			}
			ops = append(ops, op{length: length, dist: dist})
			size += length
		case c&3 == 3:
			for k, lit := 0, g.next(); k < int(c>>2); k++ {
				g.out = append(g.out, lit)
				ops = append(ops, op{lit: lit})
			}
			size += int(c >> 2)
		default:
			lit := g.next()
			g.out = append(g.out, lit)
			ops = append(ops, op{lit: lit})
			size++
		}
		if stored && size > 65535-258 {
			break
		}
	}
	return ops
}

func (g *gen) block(w *bitWriter, final bool, memberStart int) {
	typ := g.next() % 3
	before := len(g.out)
	ops := g.ops(memberStart, typ == 0)
	switch typ {
	case 0:
		w.stored(final, g.out[before:])
	case 1:
		w.bits(b2u(final), 1)
		w.bits(1, 2)
		for _, o := range ops {
			if o.dist == 0 {
				w.fixedLit(int(o.lit))
				continue
			}
			ls, lx, lxn := lengthCode(o.length)
			w.fixedLit(ls)
			w.bits(lx, lxn)
			ds, dx, dxn := distCode(o.dist)
			w.code(uint64(ds), 5)
			w.bits(dx, dxn)
		}
		w.fixedLit(256)
	case 2:
		g.dynamic(w, final, ops)
	}
}

// dynamic writes ops as a dynamic block with codes shaped by the program.
func (g *gen) dynamic(w *bitWriter, final bool, ops []op) {
	usedLit, usedDist := map[int]bool{256: true}, map[int]bool{}
	for _, o := range ops {
		if o.dist == 0 {
			usedLit[int(o.lit)] = true
			continue
		}
		ls, _, _ := lengthCode(o.length)
		ds, _, _ := distCode(o.dist)
		usedLit[ls], usedDist[ds] = true, true
	}
	litLens := g.shape(usedLit, 286, 15)
	var distLens []uint8
	switch {
	case len(usedDist) == 0:
		distLens = []uint8{0} // no distance codes at all
	case len(usedDist) == 1 && g.next()&1 == 0:
		// A single one-bit code, which zlib and compress/flate accept.
		for d := range usedDist {
			distLens = make([]uint8, d+1)
			distLens[d] = 1
		}
	default:
		distLens = g.shape(usedDist, 30, 15)
	}
	litCodes, distCodes := canonical(litLens), canonical(distLens)

	// Code lengths, run-length coded where the program says so.
	all := slices.Concat(litLens, distLens)
	type clSym struct {
		sym   int
		extra uint64
		n     uint
	}
	var cls []clSym
	for i := 0; i < len(all); {
		run := 1
		for i+run < len(all) && all[i+run] == all[i] {
			run++
		}
		c := g.next()
		switch {
		case all[i] == 0 && run >= 11 && c&1 == 0:
			k := min(run, 138)
			cls = append(cls, clSym{18, uint64(k - 11), 7})
			i += k
		case all[i] == 0 && run >= 3 && c&2 == 0:
			k := min(run, 10)
			cls = append(cls, clSym{17, uint64(k - 3), 3})
			i += k
		case i > 0 && all[i-1] == all[i] && run >= 3 && c&4 == 0:
			k := min(run, 6)
			cls = append(cls, clSym{16, uint64(k - 3), 2})
			i += k
		default:
			cls = append(cls, clSym{int(all[i]), 0, 0})
			i++
		}
	}
	usedCL := map[int]bool{}
	for _, c := range cls {
		usedCL[c.sym] = true
	}
	clLens := g.shape(usedCL, 19, 7)
	clCodes := canonical(clLens)
	nclen := 4
	for i, sym := range codeLenOrder {
		if int(sym) < len(clLens) && clLens[sym] > 0 {
			nclen = max(nclen, i+1)
		}
	}

	w.bits(b2u(final), 1)
	w.bits(2, 2)
	w.bits(uint64(len(litLens)-257), 5)
	w.bits(uint64(len(distLens)-1), 5)
	w.bits(uint64(nclen-4), 4)
	for _, sym := range codeLenOrder[:nclen] {
		l := uint8(0)
		if int(sym) < len(clLens) {
			l = clLens[sym]
		}
		w.bits(uint64(l), 3)
	}
	for _, c := range cls {
		w.code(uint64(clCodes[c.sym]), uint(clLens[c.sym]))
		w.bits(c.extra, c.n)
	}
	for _, o := range ops {
		if o.dist == 0 {
			w.code(uint64(litCodes[o.lit]), uint(litLens[o.lit]))
			continue
		}
		ls, lx, lxn := lengthCode(o.length)
		w.code(uint64(litCodes[ls]), uint(litLens[ls]))
		w.bits(lx, lxn)
		ds, dx, dxn := distCode(o.dist)
		w.code(uint64(distCodes[ds]), uint(distLens[ds]))
		w.bits(dx, dxn)
	}
	w.code(uint64(litCodes[256]), uint(litLens[256]))
}

// shape returns code lengths, at most maxLen, of a complete prefix code for
// the used symbols (below limit), shaped by the program: starting from a
// single leaf it splits leaves the program picks until there is one per
// symbol. Unused symbols fill up leaves if fewer than two symbols are used.
func (g *gen) shape(used map[int]bool, limit int, maxLen uint8) []uint8 {
	syms := make([]int, 0, len(used)+2)
	for s := range used {
		syms = append(syms, s)
	}
	for s := 0; len(syms) < 2; s++ {
		if !used[s] {
			syms = append(syms, s)
		}
	}
	slices.Sort(syms)
	depths := []uint8{0}
	for len(depths) < len(syms) {
		i := int(g.next()) % len(depths)
		for depths[i] == maxLen {
			i = (i + 1) % len(depths)
		}
		depths[i]++
		depths = append(depths, depths[i])
	}
	n := syms[len(syms)-1] + 1
	if limit == maxLit {
		n = max(n, 257) // HLIT counts from 257
	}
	lens := make([]uint8, n)
	for i, s := range syms {
		lens[s] = depths[i]
	}
	return lens
}

// lengthCode returns the length symbol and extra bits for a match length.
func lengthCode(length int) (sym int, extra uint64, n uint) {
	if length == 258 {
		return 285, 0, 0
	}
	for i := len(lengthBase) - 2; ; i-- {
		if int(lengthBase[i]) <= length {
			return 257 + i, uint64(length - int(lengthBase[i])), uint(lengthExtra[i])
		}
	}
}

// distCode returns the distance symbol and extra bits for a distance.
func distCode(dist int) (sym int, extra uint64, n uint) {
	for i := len(distBase) - 1; ; i-- {
		if int(distBase[i]) <= dist {
			return i, uint64(dist - int(distBase[i])), uint(distExtra[i])
		}
	}
}
