package bench

import (
	"strings"
	"testing"
)

func TestParseProcStatus(t *testing.T) {
	st, err := parseProcStatus("Name:\tlazyfs\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nRssAnon:\t   30720 kB\nThreads:\t12\n")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]int64{"VmHWM": 50 << 20, "VmRSS": 40 << 20, "RssAnon": 30 << 20} {
		if st[k] != want {
			t.Errorf("parseProcStatus()[%s] = %d, want %d", k, st[k], want)
		}
	}
	if _, ok := st["Threads"]; ok {
		t.Errorf("parseProcStatus() kept Threads, not a kB field")
	}
	if _, err := parseProcStatus("Name:\tx\n"); err == nil {
		t.Errorf("parseProcStatus(no VmRSS) = nil error")
	}
}

func TestMemMarkdown(t *testing.T) {
	ms := &MemSection{Ref: "bench/many:latest", Files: memFiles, LayerBytes: 30e6, Walk: "find MOUNT",
		Samples: []MemResult{
			{What: "lazyfs mount", Mounted: 40 << 20, Walked: 90 << 20, Peak: 100 << 20, Entries: 101001},
			{What: "lazyrun supervisor", Err: "no supervisor PID"},
		}}
	var b strings.Builder
	ms.markdown(&b)
	for _, want := range []string{
		"| lazyfs mount | 40.0 MiB (0.0 MiB) | 90.0 MiB (0.0 MiB) | 100.0 MiB | 101001 | met |",
		"| lazyrun supervisor | failed: no supervisor PID |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}
