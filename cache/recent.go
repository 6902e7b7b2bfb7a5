package cache

import (
	"container/list"
	"sync"
)

// recentFrames keeps the frames used last, exactly, up to a byte budget.
// It sits in front of ristretto because ristretto's admission policy turns
// away a new frame when the cache is full of frames read more often (a
// large file read in 128 KiB pieces touches each of its frames eight
// times), and every small file of the new frame then costs a disk read
// and a digest check. Readers mostly come back to the frame they just used.
type recentFrames struct {
	mu     sync.Mutex // guards everything below
	budget int64
	used   int64
	order  *list.List // of *recentFrame, most recent first
	byHex  map[string]*list.Element
}

type recentFrame struct {
	hex  string
	data []byte
}

func newRecentFrames(budget int64) *recentFrames {
	return &recentFrames{budget: budget, order: list.New(), byHex: map[string]*list.Element{}}
}

func (r *recentFrames) get(h string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byHex[h]
	if !ok {
		return nil, false
	}
	r.order.MoveToFront(e)
	return e.Value.(*recentFrame).data, true
}

func (r *recentFrames) put(h string, b []byte) {
	if int64(len(b)) > r.budget {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byHex[h]; ok {
		r.order.MoveToFront(e)
		return
	}
	r.byHex[h] = r.order.PushFront(&recentFrame{hex: h, data: b})
	r.used += int64(len(b))
	for r.used > r.budget {
		last := r.order.Back()
		f := last.Value.(*recentFrame)
		r.order.Remove(last)
		delete(r.byHex, f.hex)
		r.used -= int64(len(f.data))
	}
}
