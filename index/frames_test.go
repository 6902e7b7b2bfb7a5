package index

import (
	"slices"
	"testing"
)

func TestFramesFor(t *testing.T) {
	// Three frames over a 10-byte stream: [0,3) [3,7) [7,10).
	x := &Index{TarSize: 10, Frames: []Frame{
		{Offset: 0, Size: 3}, {Offset: 3, Size: 4}, {Offset: 7, Size: 3},
	}}
	for _, tc := range []struct {
		name   string
		off, n int64
		want   []int
	}{
		{"first byte", 0, 1, []int{0}},
		{"whole first frame", 0, 3, []int{0}},
		{"straddles a boundary", 2, 2, []int{0, 1}},
		{"starts on a boundary", 3, 1, []int{1}},
		{"all", 0, 10, []int{0, 1, 2}},
		{"runs past EOF", 9, 100, []int{2}},
		{"at EOF", 10, 1, nil},
		{"empty read", 4, 0, nil},
		{"negative offset", -1, 4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, end := x.FramesFor(tc.off, tc.n)
			var got []int
			for i := first; i < end; i++ {
				got = append(got, i)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("FramesFor(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
			}
		})
	}
}
