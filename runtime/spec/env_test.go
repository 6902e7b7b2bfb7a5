package spec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func hostLookup(k string) (string, bool) {
	return lookupEnv([]string{"FROM_HOST=host value"}, k)
}

func TestReadEnvFile(t *testing.T) {
	got, err := ReadEnvFile("testdata/envfile/good.env", hostLookup)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PLAIN=value",
		"INDENTED=kept",
		`QUOTED="not unquoted"`,
		"SINGLE='x'",
		"TRAILING=blank   ",
		"EQUALS=a=b=c",
		"EMPTY=",
		"CRLF=dos",
		"FROM_HOST=host value",
		"TABBED=1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ReadEnvFile(good.env) =\n%q\nwant\n%q", got, want)
	}
}

func TestReadEnvFileErrors(t *testing.T) {
	long := filepath.Join(t.TempDir(), "long.env")
	if err := os.WriteFile(long, []byte("A=1\nB="+strings.Repeat("x", 70000)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		line int
		msg  string
	}{
		{"testdata/envfile/space.env", 2, `variable "BAD KEY" contains white space`},
		{"testdata/envfile/nokey.env", 3, `no variable name in "=nokey"`},
		{"testdata/envfile/utf8.env", 1, "invalid UTF-8"},
		{long, 2, "line longer than 65536 bytes"},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			_, err := ReadEnvFile(tc.file, hostLookup)
			var ee *EnvFileError
			if !errors.As(err, &ee) || ee.File != tc.file || ee.Line != tc.line || ee.Msg != tc.msg {
				t.Fatalf("ReadEnvFile(%s) error %#v, want line %d: %s", tc.file, err, tc.line, tc.msg)
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	if _, err := ReadEnvFile("testdata/envfile/missing.env", nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadEnvFile(missing.env) error %v, want %v", err, os.ErrNotExist)
	}
}

// FuzzParseEnvFile checks that the parser never panics and that what it
// returns, written back one entry a line, reads back the same.
func FuzzParseEnvFile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/envfile/*.env")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("A=1\r\r\nB\n#C=3\n \xEF\xBB\xBFD=4"))
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, err := parseEnvFile("fuzz", strings.NewReader(string(data)), hostLookup)
		if err != nil {
			var ee *EnvFileError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v is not an *EnvFileError", err)
			}
			return
		}
		var b strings.Builder
		b.WriteString("\r\n") // so that an entry's leading BOM is not taken for the file's
		for _, v := range vars {
			k, _, ok := strings.Cut(v, "=")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				t.Fatalf("entry %q has no valid key", v)
			}
			b.WriteString(v + "\r\n") // the scanner drops exactly one \r before \n
		}
		again, err := parseEnvFile("fuzz", strings.NewReader(b.String()), nil)
		if err != nil || !slices.Equal(again, vars) {
			t.Fatalf("round trip of %q = %q, %v", vars, again, err)
		}
	})
}
