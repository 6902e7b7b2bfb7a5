//go:build race

package index

// raceEnabled: the race detector slows the inflater about tenfold, so the
// largest inputs are cut down under it.
const raceEnabled = true
