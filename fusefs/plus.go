package fusefs

import "sync"

// plusPolicy decides, for each listing of a writable mount's lower-only
// directory, whether READDIRPLUS gives the kernel the attributes of the
// directory's files (the kernel then makes an inode and a dentry for each,
// and a later stat needs no LOOKUP) or of its subdirectories alone (a file
// entry then has node ID 0, which the kernel takes as "no attributes", not
// as absence).
//
// Both are right; what differs is the cost. Through go-fuse's node API
// every entry given attributes registers an Inode (a LOOKUP in all but
// name): a find(1) of 57 000 entries that stats none of them took 380 ms
// with every file's attributes and 110 ms with the subdirectories' alone,
// while a stat walk of 50 000 files that had to LOOKUP each took 1.2 s
// against 0.29 s. Subdirectories always get theirs: a walk descends into
// them.
//
// So listings start without the files' attributes, and the first LOOKUP
// of a file of such a listing (a "miss": someone wants what the listing
// could have carried) grants the next listings all of them: 64 listings
// after the first miss, twice as many after each later one (a stat walk
// over many directories pays a few directories of LOOKUPs, not one per
// directory), at most maxPlusCredit. The kernel's own adaptive readdirplus
// (FUSE_READDIRPLUS_AUTO) cannot do this: it always asks for the
// attributes of a listing's first reply, which is a directory's only one
// unless it is large.
//
// Safe for concurrent use.
type plusPolicy struct {
	mu     sync.Mutex // guards credit and grant
	credit int        // listings still to be made with every entry's attributes
	grant  int        // credit the next miss gives; 0 = firstPlusCredit
}

const (
	firstPlusCredit = 64
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
