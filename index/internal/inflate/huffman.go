package inflate

import "math/bits"

// A table entry packs everything the decode loop needs about one code so
// that a literal costs one lookup and a length or distance one more shift:
//
//	bits 0-3   code length in bits (for a link: the sub-table's index bits)
//	bits 4-7   number of extra bits that follow the code
//	bits 8-11  flags
//	bits 16-31 value: literal byte, length or distance base, code-length
//	           symbol, or a link's sub-table offset
const (
	flagLiteral = 1 << 8
	flagEOB     = 1 << 9
	flagLink    = 1 << 10
	flagInvalid = 1 << 11 // no code, or a code deflate reserves
)

const maxCodeLen = 15

// Primary table sizes. Longer codes go through one sub-table. Ten bits cover
// nearly all literal/length codes of real streams; distance codes are fewer
// and their tables are rebuilt with every dynamic block, so they get eight.
const (
	litBits  = 10
	distBits = 8
	clBits   = 7 // code length codes are at most 7 bits: no sub-tables
)

// Upper bounds of table sizes. A code is complete (or has no sub-tables), and
// a complete subtree k levels deep has at least k+1 leaves, so with n symbols
// the sub-tables of a p-bit primary table hold at most n/(16-p) * 2^(15-p)
// entries (rounded up to a whole sub-table).
const (
	maxLitEntries  = 1<<litBits + (288/(16-litBits)+1)<<(maxCodeLen-litBits)
	maxDistEntries = 1<<distBits + (32/(16-distBits)+1)<<(maxCodeLen-distBits)
	clEntries      = 1 << clBits
)

// Symbol kinds, which decide what a table entry's value means.
const (
	kindLitLen = iota
	kindDist
	kindCodeLen
)

// lengthBase and lengthExtra describe length symbols 257..285 (RFC 1951
// section 3.2.5); distBase and distExtra distance symbols 0..29.
var (
	lengthBase = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
		35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
		3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
		257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
		7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// symbolEntry returns a table entry for symbol sym of the given kind, without
// the code length.
func symbolEntry(kind, sym int) uint32 {
	switch kind {
	case kindLitLen:
		switch {
		case sym < 256:
			return flagLiteral | uint32(sym)<<16
		case sym == 256:
			return flagEOB
		case sym < 286:
			i := sym - 257
			return uint32(lengthBase[i])<<16 | uint32(lengthExtra[i])<<4
		}
	case kindDist:
		if sym < 30 {
			return uint32(distBase[sym])<<16 | uint32(distExtra[sym])<<4
		}
	case kindCodeLen:
		return uint32(sym) << 16
	}
	return flagInvalid
}

// table decodes one Huffman code: index e with the next bits of the stream
// (first bit lowest) masked to bits.
type table struct {
	bits uint
	mask uint64
	e    []uint32
}

// build makes t decode the canonical code given by lens (RFC 1951 section
// 3.2.2), lens[i] being the code length of symbol i or 0 for none. It reports
// false for an over-subscribed code or an incomplete one; like zlib and
// compress/flate it accepts an empty code (using it is an error later) and a
// single code of length 1.
func (t *table) build(lens []uint8, pbits uint, kind int, capacity int) bool {
	var count [maxCodeLen + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	left, codes := 1, 0
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return false
		}
		codes += count[l]
	}
	if left > 0 && codes > 0 && !(codes == 1 && count[1] == 1) {
		return false
	}

	var next [maxCodeLen + 1]int
	code := 0
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}

	size := 1 << pbits
	if cap(t.e) < capacity {
		t.e = make([]uint32, size, capacity)
	}
	t.bits, t.mask = pbits, uint64(size-1)
	t.e = t.e[:size]
	for i := range t.e {
		t.e[i] = flagInvalid
	}

	// Codes longer than pbits share a sub-table per primary index, sized for
	// the longest code under it.
	var sub [1 << litBits]uint8 // index bits of each primary index's sub-table
	nextLong := next
	for _, l := range lens {
		if uint(l) <= pbits {
			continue
		}
		c := nextLong[l]
		nextLong[l]++
		prefix := reverse(c>>(uint(l)-pbits), pbits)
		sub[prefix] = max(sub[prefix], uint8(uint(l)-pbits))
	}
	for i := 0; i < size; i++ {
		if sub[i] == 0 {
			continue
		}
		off := len(t.e)
		n := 1 << sub[i]
		if off+n > cap(t.e) || off > 0xffff {
			return false // cannot happen for a complete code; never index past the buffer
		}
		t.e = t.e[:off+n]
		for j := off; j < off+n; j++ {
			t.e[j] = flagInvalid
		}
		t.e[i] = flagLink | uint32(off)<<16 | uint32(sub[i])
	}

	for sym, l := range lens {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		rev := reverse(c, uint(l))
		v := symbolEntry(kind, sym) | uint32(l)
		if uint(l) <= pbits {
			for i := rev; i < size; i += 1 << l {
				t.e[i] = v
			}
			continue
		}
		link := t.e[rev&(size-1)]
		off, k := int(link>>16), link&15
		for i := rev >> pbits; i < 1<<k; i += 1 << (uint(l) - pbits) {
			t.e[off+i] = v
		}
	}
	return true
}

// reverse returns the n low bits of c in reverse order.
func reverse(c int, n uint) int {
	return int(bits.Reverse16(uint16(c)) >> (16 - n))
}
