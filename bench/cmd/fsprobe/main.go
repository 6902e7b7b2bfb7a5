// Command fsprobe is the file-system section's measuring tool (see
// bench/README.md): a static binary the benchmark bind-mounts into the
// container (and into the native chroot), so that every mode times the
// same code with the same clock. It prints one line
//
//	fsprobe-result {"Op":…,"Nanos":…,"Bytes":…,"Count":…}
//
// on standard output.
//
//	fsprobe seq FILE            read FILE from start to end in 1 MiB reads
//	fsprobe rand FILE N SEED    N reads of 4 KiB at random 4 KiB-aligned offsets (pread)
//	fsprobe exec CMD [ARG...]   run CMD; Count is the last integer it printed
//
// Busybox and Debian's minbase have no fio; python3 would need its own
// image layer in every mode and adds an interpreter to each read. A Go
// program without cgo is static and runs in any root.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Result is what fsprobe prints after "fsprobe-result ".
type Result struct {
	Op    string
	Nanos int64 // the operation's wall time
	Bytes int64 // bytes read (seq, rand)
	Count int64 // reads (rand), or the last integer the command printed (exec)
}

func main() {
	r, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fsprobe: %v\n", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(r)
	fmt.Printf("fsprobe-result %s\n", b)
}

func run(args []string) (Result, error) {
	if len(args) < 1 {
		return Result{}, errors.New("usage: fsprobe seq FILE | rand FILE N SEED | exec CMD [ARG...]")
	}
	r := Result{Op: args[0]}
	switch {
	case args[0] == "seq" && len(args) == 2:
		f, err := os.Open(args[1])
		if err != nil {
			return r, err
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		start := time.Now()
		for {
			n, err := f.Read(buf)
			r.Bytes += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return r, err
			}
		}
		r.Nanos = time.Since(start).Nanoseconds()
		return r, nil
	case args[0] == "rand" && len(args) == 4:
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return r, fmt.Errorf("reads: %w", err)
		}
		seed, err := strconv.ParseUint(args[3], 10, 64)
		if err != nil {
			return r, fmt.Errorf("seed: %w", err)
		}
		f, err := os.Open(args[1])
		if err != nil {
			return r, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return r, err
		}
		const block = 4096
		blocks := uint64(fi.Size() / block)
		if blocks == 0 {
			return r, fmt.Errorf("%s: smaller than %d bytes", args[1], block)
		}
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		offs := make([]int64, n)
		for i := range offs {
			offs[i] = int64(rng.Uint64N(blocks)) * block
		}
		buf := make([]byte, block)
		start := time.Now()
		for _, off := range offs {
			m, err := f.ReadAt(buf, off)
			if err != nil && !(err == io.EOF && m > 0) {
				return r, fmt.Errorf("read at %d: %w", off, err)
			}
			r.Bytes += int64(m)
		}
		r.Nanos = time.Since(start).Nanoseconds()
		r.Count = int64(n)
		return r, nil
	case args[0] == "exec" && len(args) >= 2:
		cmd := exec.Command(args[1], args[2:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, os.Stderr
		start := time.Now()
		err := cmd.Run()
		r.Nanos = time.Since(start).Nanoseconds()
		os.Stdout.Write(out.Bytes())
		if err != nil {
			return r, fmt.Errorf("%s: %w", args[1], err)
		}
		if f := strings.Fields(out.String()); len(f) > 0 {
			r.Count, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		}
		return r, nil
	}
	return r, fmt.Errorf("%q: want seq FILE, rand FILE N SEED or exec CMD [ARG...]", strings.Join(args, " "))
}
