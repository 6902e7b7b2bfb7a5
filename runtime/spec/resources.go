package spec

import (
	"fmt"
	"math/big"
	goruntime "runtime"
	"strconv"

	units "github.com/docker/go-units"
)

// MinMemory is the smallest --memory docker accepts: 6 MiB.
const MinMemory = 6 << 20

// CPUPeriod is the CFS period, in microseconds, that --cpus is expressed in:
// docker's 100 ms.
const CPUPeriod = 100000

// minCPUQuota is the smallest CFS quota the kernel accepts: 1 ms.
const minCPUQuota = 1000

// ParseMemory parses --memory as docker does: a number of bytes with an
// optional binary unit (b, k, m, g, t, p; any case; an optional "b" or "ib"
// after it), so "512m" and "1g" and "1.5g" and "1073741824". 0 means no
// limit; anything else below MinMemory is refused as docker's daemon does.
func ParseMemory(s string) (int64, error) {
	n, err := units.RAMInBytes(s)
	if err != nil {
		return 0, fmt.Errorf("invalid memory %q: %w", s, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("invalid memory %q: negative", s)
	}
	if n != 0 && n < MinMemory {
		return 0, fmt.Errorf("invalid memory %q: minimum memory limit allowed is 6MB", s)
	}
	return n, nil
}

// ParseCPUs parses --cpus as docker does: a decimal (or a ratio, "1/3" is
// too precise but "3/4" is fine) number of CPUs with at most nine decimals,
// returned in billionths of a CPU. 0 means no limit; otherwise it must be
// between 0.01 and the number of CPUs this process may run on.
func ParseCPUs(s string) (int64, error) {
	return parseCPUs(s, goruntime.NumCPU())
}

func parseCPUs(s string, ncpu int) (int64, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, fmt.Errorf("invalid cpus %q: not a decimal number", s)
	}
	nano := r.Mul(r, big.NewRat(1e9, 1))
	if !nano.IsInt() {
		return 0, fmt.Errorf("invalid cpus %q: value is too precise", s)
	}
	rangeErr := fmt.Errorf("invalid cpus %q: range of CPUs is from 0.01 to %d.00, as there are only %d CPUs available", s, ncpu, ncpu)
	n := nano.Num()
	if !n.IsInt64() || n.Sign() < 0 || n.Int64() > int64(ncpu)*1e9 {
		return 0, rangeErr
	}
	if q, _ := CPUQuota(n.Int64()); n.Sign() > 0 && q < minCPUQuota {
		return 0, rangeErr // the kernel refuses a quota under 1 ms
	}
	return n.Int64(), nil
}

// CPUQuota converts billionths of a CPU (ParseCPUs) to a CFS quota per
// CPUPeriod, both in microseconds, as docker does. 0 gives 0, 0: no limit.
func CPUQuota(nanoCPUs int64) (quota, period int64) {
	if nanoCPUs <= 0 {
		return 0, 0
	}
	return nanoCPUs * CPUPeriod / 1e9, CPUPeriod
}

// ParsePidsLimit parses --pids-limit: an integer; 0 and negative values
// mean no limit, as docker's daemon reads them, and give 0.
func ParsePidsLimit(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid pids limit %q: %w", s, err)
	}
	return max(n, 0), nil
}
