package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// readRecords returns the records of a log file.
func readRecords(t *testing.T, path string) []logRecord {
	t.Helper()
	var recs []logRecord
	if err := readLogFile(path, func(r logRecord) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestCopyOutputSplitsLines(t *testing.T) {
	long := strings.Repeat("x", logMaxLine+10)
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"a\n", "b\n"}},
		{"line across reads", []string{"ab", "c\nd", "\n"}, []string{"abc\n", "d\n"}},
		{"no final newline", []string{"a\nrest"}, []string{"a\n", "rest"}},
		{"empty lines", []string{"\n\n"}, []string{"\n", "\n"}},
		{"long line cut", []string{long + "\n"}, []string{long[:logMaxLine], long[logMaxLine:] + "\n"}},
		{"nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			w, err := openLog(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			var attached bytes.Buffer
			copyOutput(&chunkReader{chunks: slices.Clone(tc.chunks)}, StreamStderr, w, &attached, func(err error) { t.Error(err) })
			w.Close()
			var got []string
			for _, r := range readRecords(t, path) {
				if r.Stream != StreamStderr || r.Time.IsZero() {
					t.Errorf("record %+v: want stream stderr and a time", r)
				}
				got = append(got, r.Log)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("records = %.80q, want %.80q", got, tc.want)
			}
			if attached.String() != strings.Join(tc.chunks, "") {
				t.Errorf("attached got %.80q, want everything as it came", attached.String())
			}
		})
	}
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks []string }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestLogRecordFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := openLog(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	if err := w.write(StreamStdout, []byte("<a & b>\n"), at); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// docker's json-file shape.
	want := `{"log":"<a & b>\n","stream":"stdout","time":"2025-01-02T03:04:05.123456789Z"}` + "\n"
	if string(b) != want {
		t.Errorf("log file = %s, want %s", b, want)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 3 {
		t.Errorf("record is not a 3-field JSON object: %v, %v", m, err)
	}
}

func TestLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := openLog(path, 400)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := w.write(StreamStdout, []byte(strings.Repeat("a", i)+"\n"), time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 400 {
			t.Errorf("%s: %v, %v; want at most 400 bytes", p, fi, err)
		}
	}
	old, cur := readRecords(t, path+".1"), readRecords(t, path)
	all := append(old, cur...)
	if len(all) == 0 || all[len(all)-1].Log != strings.Repeat("a", 19)+"\n" {
		t.Fatalf("records after rotation end with %v", all)
	}
	// What is kept is the newest, in order.
	for i := 1; i < len(all); i++ {
		if len(all[i].Log) != len(all[i-1].Log)+1 {
			t.Errorf("records out of order at %d: %q after %q", i, all[i].Log, all[i-1].Log)
		}
	}
}

// testContainer is a container record in a temporary root, enough for
// the log and lock functions.
func testContainer(t *testing.T) (*Runtime, *Container) {
	t.Helper()
	r := New(Config{Root: t.TempDir()})
	c := &Container{Name: "test", Image: "example.com/img:1"}
	if err := r.create(c); err != nil {
		t.Fatal(err)
	}
	return r, c
}

func TestLogsTailAndStreams(t *testing.T) {
	r, c := testContainer(t)
	w, err := openLog(c.LogPath(), 450) // rotates once: nothing is lost
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 10 {
		stream := StreamStdout
		if i%3 == 0 {
			stream = StreamStderr
		}
		w.write(stream, []byte{byte('0' + i), '\n'}, at)
	}
	w.Close()
	if _, err := os.Stat(c.LogPath() + ".1"); err != nil {
		t.Fatalf("the log did not rotate: %v", err)
	}
	for _, tc := range []struct {
		tail             int
		stdout, stderr   string
		timestamps, both bool
	}{
		{tail: -1, stdout: "1\n2\n4\n5\n7\n8\n", stderr: "0\n3\n6\n9\n"},
		{tail: 3, stdout: "7\n8\n", stderr: "9\n"},
		{tail: 0},
		{tail: 1, stderr: "2025-01-02T03:04:05Z 9\n", timestamps: true},
	} {
		var stdout, stderr bytes.Buffer
		err := r.Logs(context.Background(), c, LogsOptions{Tail: tc.tail, Timestamps: tc.timestamps, Stdout: &stdout, Stderr: &stderr})
		if err != nil || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
			t.Errorf("Logs(tail %d) = %q, %q, %v; want %q, %q", tc.tail, stdout.String(), stderr.String(), err, tc.stdout, tc.stderr)
		}
	}
}

// Logs with Follow goes on, across a rotation, while the lock is held, and
// ends once it is released.
func TestLogsFollow(t *testing.T) {
	r, c := testContainer(t)
	lock, err := c.lock() // as the supervisor holds it
	if err != nil {
		t.Fatal(err)
	}
	w, err := openLog(c.LogPath(), 300)
	if err != nil {
		t.Fatal(err)
	}
	w.write(StreamStdout, []byte("first\n"), time.Now())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- r.Logs(t.Context(), c, LogsOptions{Tail: -1, Follow: true, Stdout: pw, Stderr: pw})
		pw.Close()
	}()
	lines := make(chan string)
	go func() {
		b := make([]byte, 4096)
		var acc string
		for {
			n, err := pr.Read(b)
			acc += string(b[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("followed %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Logs did not print %q", want)
		}
	}
	expect("first")
	for i := range 10 { // rotates
		w.write(StreamStdout, []byte(strings.Repeat("x", 40)+string(rune('a'+i))+"\n"), time.Now())
		expect(strings.Repeat("x", 40) + string(rune('a'+i)))
	}
	if _, err := os.Stat(c.LogPath() + ".1"); err != nil {
		t.Fatalf("the log did not rotate: %v", err)
	}
	w.write(StreamStdout, []byte("last\n"), time.Now())
	w.Close()
	lock.Close()
	expect("last")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Logs = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Logs -f did not end when the lock was released")
	}
	if l, ok := <-lines; ok {
		t.Errorf("more after the end: %q", l)
	}
}
