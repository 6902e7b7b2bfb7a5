package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// A container's output is kept in ROOT/containers/ID/container.log, in the
// shape of docker's json-file log driver: one JSON object per line,
//
//	{"log":"started\n","stream":"stdout","time":"2025-01-02T03:04:05.123456789Z"}
//
// "log" is one line of output with its newline; a line longer than
// logMaxLine is cut into several records, the last of which ends with the
// newline, and output that ends without one is kept as it is. "stream" is
// "stdout" or "stderr" (a terminal's output is "stdout"). Invalid UTF-8 is
// replaced by U+FFFD, as docker's driver does. When the file would grow
// past Config.LogMaxSize it is renamed to container.log.1 (replacing the
// one before) and a new one is begun, so a container keeps at most twice
// that. The supervisor writes it whether or not anyone is attached.
const (
	logName    = "container.log"
	logMaxLine = 16 << 10 // docker's buffer size: longer lines are split
	// DefaultLogMaxSize is Config.LogMaxSize's default.
	DefaultLogMaxSize = 4 << 20
)

// Stream names in log records.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// LogPath is the container's current log file.
func (c *Container) LogPath() string { return filepath.Join(c.dir, logName) }

// logRecord is one line of a container's log.
type logRecord struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// logWriter appends records to a container's log and rotates it.
// Safe for concurrent use.
type logWriter struct {
	path string
	max  int64

	mu     sync.Mutex // guards the fields below
	f      *os.File
	size   int64
	closed bool
	err    error // the first write error, logged once by the owner
}

// openLog opens path for appending; max is the size at which it rotates.
func openLog(path string, max int64) (*logWriter, error) {
	if max <= 0 {
		max = DefaultLogMaxSize
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logWriter{path: path, max: max, f: f, size: fi.Size()}, nil
}

// write appends one record. Records written after Close are dropped.
func (w *logWriter) write(stream string, line []byte, now time.Time) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(logRecord{Log: string(line), Stream: stream, Time: now.UTC()}); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.err != nil {
		return w.err
	}
	if w.size > 0 && w.size+int64(b.Len()) > w.max {
		if err := w.rotate(); err != nil {
			w.err = fmt.Errorf("rotate %s: %w", w.path, err)
			return w.err
		}
	}
	n, err := w.f.Write(b.Bytes())
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write %s: %w", w.path, err)
	}
	return w.err
}

func (w *logWriter) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	w.f, w.size = f, 0
	return nil
}

// Close closes the file; later writes are dropped.
func (w *logWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.f.Close()
}

// copyOutput copies one of a container's output streams into the log, a
// record per line, and to attached (when not nil) as it comes. It returns
// at src's end or error. A failing attached writer is dropped; a failing
// log is reported once through logErr.
func copyOutput(src io.Reader, stream string, w *logWriter, attached io.Writer, logErr func(error)) {
	buf := make([]byte, 32<<10)
	var line []byte
	put := func(b []byte) {
		if err := w.write(stream, b, time.Now()); err != nil && logErr != nil {
			logErr(err)
			logErr = nil
		}
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if attached != nil {
				if _, err := attached.Write(chunk); err != nil {
					attached = nil // the attached client went away; the log goes on
				}
			}
			line = append(line, chunk...)
			rest := line
		split:
			for {
				// A line is a record, cut every logMaxLine bytes; the end
				// of one without its newline waits for more.
				switch i := bytes.IndexByte(rest, '\n'); {
				case i >= 0 && i < logMaxLine:
					put(rest[:i+1])
					rest = rest[i+1:]
				case len(rest) >= logMaxLine:
					put(rest[:logMaxLine])
					rest = rest[logMaxLine:]
				default:
					break split
				}
			}
			line = append(line[:0], rest...)
		}
		if err != nil {
			if len(line) > 0 {
				put(line)
			}
			return
		}
	}
}

// LogsOptions are docker logs' flags.
type LogsOptions struct {
	Follow     bool // -f: keep printing new output while the container has a supervisor
	Tail       int  // --tail: print only the last Tail records; < 0 prints all
	Timestamps bool // -t: prefix each record with its time, RFC 3339 with nanoseconds
	Stdout     io.Writer
	Stderr     io.Writer
}

// logPollInterval is how often Logs with Follow looks for new output.
const logPollInterval = 100 * time.Millisecond

// Logs prints c's kept output: each stdout record to opt.Stdout, each stderr
// record to opt.Stderr. With Follow it goes on until the container's
// supervisor exits, or ctx ends (then it returns nil).
func (r *Runtime) Logs(ctx context.Context, c *Container, opt LogsOptions) error {
	var tail []logRecord
	keep := func(rec logRecord) error {
		if opt.Tail < 0 {
			return printRecord(rec, opt)
		}
		if opt.Tail == 0 {
			return nil
		}
		if len(tail) == opt.Tail {
			tail = append(tail[:0], tail[1:]...)
		}
		tail = append(tail, rec)
		return nil
	}
	if err := readLogFile(c.LogPath()+".1", keep); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.Open(c.LogPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var lr *logReader
	if f != nil {
		defer func() { f.Close() }()
		lr = &logReader{r: bufio.NewReader(f)}
		if err := lr.each(keep); err != nil {
			return err
		}
	}
	for _, rec := range tail {
		if err := printRecord(rec, opt); err != nil {
			return err
		}
	}
	if !opt.Follow {
		return nil
	}
	print := func(rec logRecord) error { return printRecord(rec, opt) }
	t := time.NewTicker(logPollInterval)
	defer t.Stop()
	for {
		// Look at the supervisor before reading, so that what it wrote
		// before it exited is read below.
		alive := c.locked()
		if lr != nil {
			if err := lr.each(print); err != nil {
				return err
			}
		}
		// A rotation renamed our file: it is complete, go on with the new one.
		if nf, err := os.Open(c.LogPath()); err == nil {
			if f == nil || !sameFile(f, nf) {
				if f != nil {
					f.Close()
				}
				f, lr = nf, &logReader{r: bufio.NewReader(nf)}
				continue
			}
			nf.Close()
		}
		if !alive {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func sameFile(a, b *os.File) bool {
	ai, err1 := a.Stat()
	bi, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}

func printRecord(rec logRecord, opt LogsOptions) error {
	w := opt.Stdout
	if rec.Stream == StreamStderr {
		w = opt.Stderr
	}
	if opt.Timestamps {
		if _, err := io.WriteString(w, rec.Time.Format(time.RFC3339Nano)+" "); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, rec.Log)
	return err
}

// logReader reads the records of a log file that may still grow: a line
// without its newline yet is kept until the rest is written.
type logReader struct {
	r       *bufio.Reader
	partial []byte
}

// each calls fn with every complete record up to the end of the file now.
func (lr *logReader) each(fn func(logRecord) error) error {
	for {
		b, err := lr.r.ReadBytes('\n')
		lr.partial = append(lr.partial, b...)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		line := lr.partial
		lr.partial = lr.partial[:0]
		var rec logRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			continue // a record torn by a crash: skip it, as docker does
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

func readLogFile(path string, fn func(logRecord) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return (&logReader{r: bufio.NewReader(f)}).each(fn)
}
