package spec

import (
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"512m", 512 << 20},
		{"512M", 512 << 20},
		{"512mb", 512 << 20},
		{"512MiB", 512 << 20},
		{"1g", 1 << 30},
		{"1.5g", 3 << 29},
		{"6m", MinMemory},
		{"1073741824", 1 << 30},
		{"1073741824b", 1 << 30},
		{"64 MiB", 64 << 20},
		{"2t", 2 << 40},
	} {
		if got, err := ParseMemory(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "invalid size"},
		{"lots", "invalid size"},
		{"12x", "invalid suffix"},
		{"-1", "invalid"},
		{"5m", "minimum memory limit allowed is 6MB"},
		{"1", "minimum memory limit allowed is 6MB"},
	} {
		if got, err := ParseMemory(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseMemory(%q) = %d, %v, want error %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		in            string
		nano          int64
		quota, period int64
	}{
		{"0", 0, 0, 0},
		{"0.5", 5e8, 50000, CPUPeriod},
		{"1", 1e9, 100000, CPUPeriod},
		{"1.5", 15e8, 150000, CPUPeriod},
		{"2", 2e9, 200000, CPUPeriod},
		{"0.01", 1e7, 1000, CPUPeriod},
		{"3/4", 75e7, 75000, CPUPeriod},
		{".25", 25e7, 25000, CPUPeriod},
	} {
		nano, err := parseCPUs(tc.in, 2)
		if err != nil || nano != tc.nano {
			t.Errorf("parseCPUs(%q, 2) = %d, %v, want %d", tc.in, nano, err, tc.nano)
			continue
		}
		if q, p := CPUQuota(nano); q != tc.quota || p != tc.period {
			t.Errorf("CPUQuota(%d) = %d, %d, want %d, %d", nano, q, p, tc.quota, tc.period)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "not a decimal number"},
		{"one", "not a decimal number"},
		{"0.0000000001", "too precise"},
		{"1/3", "too precise"},
		{"2.5", "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"},
		{"-1", "range of CPUs"},
		{"0.001", "range of CPUs"},
		{"1e30", "range of CPUs"},
	} {
		if got, err := parseCPUs(tc.in, 2); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseCPUs(%q, 2) = %d, %v, want error %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePidsLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"100", 100}, {"1", 1}, {"0", 0}, {"-1", 0}, {"-5", 0}} {
		if got, err := ParsePidsLimit(tc.in); err != nil || got != tc.want {
			t.Errorf("ParsePidsLimit(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "ten", "1.5", "99999999999999999999"} {
		if got, err := ParsePidsLimit(in); err == nil {
			t.Errorf("ParsePidsLimit(%q) = %d, want an error", in, got)
		}
	}
}
