package fusefs

import "sync"

// plusPolicy decides, for each listing of a lower directory (read-only
// mount: each READDIRPLUS reply; writable mount: each listing of a
// directory with no upper part), whether READDIRPLUS gives the kernel the
// attributes of the directory's files (the kernel then makes an inode and
// a dentry for each, and a later stat needs no LOOKUP) or of its
// subdirectories alone (a file's entry then has node ID 0, which the
// kernel takes as "no attributes", not as absence). Subdirectories always
// get theirs: a walk descends into them.
//
// Both are right; what differs is the cost. A find(1) that stats none of
// 57 000 entries took 230-260 ms on the read-only mount with every file's
// attributes and 100-130 ms without (kernel overlayfs on top: 180-260 and
// 80-130 ms; the writable mount, where every entry given attributes also
// registers an Inode with go-fuse: 380-400 and 150-180 ms), while a stat
// walk of 50 000 files that has to LOOKUP each one takes 4-6 times longer.
//
// So listings start without the files' attributes, and the first LOOKUP
// of a file of such a listing (a "miss": someone wants what the listing
// could have carried) grants the next listings all of them: 128 after the
// first miss, twice as many after each later one (a stat walk over many
// directories pays a few directories of LOOKUPs, not one per directory),
// at most maxPlusCredit. The stat walk above then costs about the same as
// with every attribute (180-300 ms, ~300 LOOKUPs). The read-only mount's
// listings stay in the kernel (FOPEN_CACHE_DIR), so there a miss also has
// the kernel drop those it keeps without attributes (roFS.relist): a stat
// walk after a walk of names then lists its directories again (one more
// READDIRPLUS and a GETATTR each) instead of looking up every file; under
// overlayfs that sequence took ~12 % longer than with every attribute
// (410-430 ms against 370-380). The kernel's own adaptive
// readdirplus (FUSE_READDIRPLUS_AUTO) cannot make this choice: it asks for
// the attributes of a listing's first reply always, which is a directory's
// only reply unless it is large.
//
// Safe for concurrent use.
type plusPolicy struct {
	mu     sync.Mutex // guards credit and grant
	credit int        // listings still to be made with every entry's attributes
	grant  int        // credit the next miss gives; 0 = firstPlusCredit
}

const (
	firstPlusCredit = 128
	maxPlusCredit   = 1 << 14
)

// bare reports whether a listing starting now leaves out the attributes
// of files.
func (p *plusPolicy) bare() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.credit > 0 {
		p.credit--
		return false
	}
	return true
}

// miss records the first LOOKUP of a file of a listing that left out the
// files' attributes.
func (p *plusPolicy) miss() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.grant == 0 {
		p.grant = firstPlusCredit
	}
	p.credit = max(p.credit, p.grant)
	p.grant = min(2*p.grant, maxPlusCredit)
}
