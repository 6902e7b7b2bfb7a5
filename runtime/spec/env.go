package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultPath is the PATH a container gets when its image and the user set
// none: docker's.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// EnvFileError is a line of an --env-file that docker would refuse.
type EnvFileError struct {
	File string
	Line int // 1-based; 0 when the error is not about one line
	Msg  string
}

func (e *EnvFileError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("env file %s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("env file %s line %d: %s", e.File, e.Line, e.Msg)
}

// ReadEnvFile reads an --env-file as docker's CLI does: one KEY=VALUE per
// line, taken literally (no quotes removed, no expansion, trailing blanks
// kept); a leading UTF-8 BOM and leading white space are dropped; blank lines
// and lines starting with '#' are skipped; a bare KEY takes its value from
// lookup and is left out when lookup does not know it. A key that is empty
// or contains a space or tab, invalid UTF-8, or a line over 64 KiB is an
// *EnvFileError naming the file and line.
func ReadEnvFile(name string, lookup func(string) (string, bool)) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("env file: %w", err)
	}
	defer f.Close()
	return parseEnvFile(name, f, lookup)
}

func parseEnvFile(name string, r io.Reader, lookup func(string) (string, bool)) ([]string, error) {
	var out []string
	s := bufio.NewScanner(r) // lines up to bufio.MaxScanTokenSize, as docker's
	n := 0
	for s.Scan() {
		n++
		b := s.Bytes()
		if !utf8.Valid(b) {
			return nil, &EnvFileError{name, n, "invalid UTF-8"}
		}
		if n == 1 {
			b = bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF"))
		}
		line := strings.TrimLeftFunc(string(b), unicode.IsSpace)
		if line == "" || line[0] == '#' {
			continue
		}
		key, _, hasValue := strings.Cut(line, "=")
		if key == "" {
			return nil, &EnvFileError{name, n, fmt.Sprintf("no variable name in %q", line)}
		}
		if strings.ContainsAny(key, " \t") {
			return nil, &EnvFileError{name, n, fmt.Sprintf("variable %q contains white space", key)}
		}
		if hasValue {
			out = append(out, line)
			continue
		}
		if lookup != nil {
			if v, ok := lookup(key); ok {
				out = append(out, key+"="+v)
			}
		}
	}
	if err := s.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &EnvFileError{name, n + 1, fmt.Sprintf("line longer than %d bytes", bufio.MaxScanTokenSize)}
		}
		return nil, &EnvFileError{File: name, Msg: err.Error()}
	}
	return out, nil
}

// UserEnv is the environment the user asked for, as docker's CLI sends it
// to the daemon: the --env-file entries in file order, then the -e entries.
// A bare -e KEY takes its value from hostEnv; when hostEnv lacks KEY it stays
// bare, which removes KEY from the container's environment, even a value the
// image sets (docker does the same). A -e entry with an empty name is an
// error. Applied to its own output, UserEnv changes nothing.
func UserEnv(envFiles, env, hostEnv []string) ([]string, error) {
	lookup := func(k string) (string, bool) { return lookupEnv(hostEnv, k) }
	var out []string
	for _, name := range envFiles {
		vars, err := ReadEnvFile(name, lookup)
		if err != nil {
			return nil, err
		}
		out = append(out, vars...)
	}
	for _, e := range env {
		k, _, hasValue := strings.Cut(e, "=")
		if k == "" {
			return nil, fmt.Errorf("invalid environment variable: %s", e)
		}
		if !hasValue {
			if v, ok := lookup(k); ok {
				e = k + "=" + v
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// lookupEnv finds key in env as os.LookupEnv does in the process's own
// environment: the first entry wins.
func lookupEnv(env []string, key string) (string, bool) {
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// containerEnv computes the environment the container's program sees, as
// docker's daemon and then runc build it:
//
//  1. the user's entries, then each image entry whose key the user did not
//     name (daemon: merge);
//  2. those applied over PATH=DefaultPath, HOSTNAME=hostname and, with a
//     terminal, TERM=xterm: an entry replaces the default of its key in
//     place or is appended, a bare KEY deletes the default
//     (ReplaceOrAppendEnvValues);
//  3. duplicates dropped, keeping the last one at its position, and HOME
//     appended from home when unset or empty (runc: prepareEnv).
func containerEnv(image, user []string, hostname string, tty bool, home string) ([]string, error) {
	merged := mergeEnv(user, image)

	env := []string{"PATH=" + DefaultPath, "HOSTNAME=" + hostname}
	if tty {
		env = append(env, "TERM=xterm")
	}
	index := make(map[string]int, len(env)) // the defaults' keys only, as docker's
	for i, e := range env {
		k, _, _ := strings.Cut(e, "=")
		index[k] = i
	}
	for _, e := range merged {
		k, _, hasValue := strings.Cut(e, "=")
		i, isDefault := index[k]
		switch {
		case !hasValue && isDefault:
			env[i] = "" // deleted below
		case !hasValue:
		case isDefault:
			env[i] = e
		default:
			env = append(env, e)
		}
	}
	env = slices.DeleteFunc(env, func(e string) bool { return e == "" })

	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env)+1)
	homeSet := false
	for _, e := range slices.Backward(env) {
		k, v, _ := strings.Cut(e, "=")
		if k == "" {
			return nil, fmt.Errorf("invalid environment variable %q: name cannot be empty", e)
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if strings.IndexByte(e, 0) >= 0 {
			return nil, fmt.Errorf("invalid environment variable %q: contains nul byte (\\x00)", k)
		}
		if k == "HOME" {
			if v == "" {
				continue
			}
			homeSet = true
		}
		out = append(out, e)
	}
	slices.Reverse(out)
	if !homeSet {
		out = append(out, "HOME="+home)
	}
	return out, nil
}
