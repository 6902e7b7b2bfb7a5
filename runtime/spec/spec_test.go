package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// file is one entry of a test root: a regular file with content, or a
// symbolic link when link is set, or a directory when dir is set.
type file struct {
	path, content, link string
	dir                 bool
}

// makeRoot builds a container root file system in a temporary directory.
func makeRoot(t *testing.T, files ...file) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case f.dir:
			err = os.Mkdir(p, 0o755)
		case f.link != "":
			err = os.Symlink(f.link, p)
		default:
			err = os.WriteFile(p, []byte(f.content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
alias:x:1000:1000:same uid as alice:/home/alias:/bin/sh
nohome:x:1001:1001::/nonexistent:/bin/sh
`

const group = `root:x:0:
daemon:x:1:
audio:x:29:alice
video:x:44:alice,daemon
staff:x:50:
alice:x:1000:
wheel:x:10:root
`

// debianRoot has the files that decide users and the environment.
func debianRoot(t *testing.T) string {
	return makeRoot(t,
		file{path: "etc/passwd", content: passwd},
		file{path: "etc/group", content: group},
	)
}

func TestCommand(t *testing.T) {
	img := v1.ImageConfig{Entrypoint: []string{"/ep", "-x"}, Cmd: []string{"cmd", "arg"}}
	cmdOnly := v1.ImageConfig{Cmd: []string{"sh"}}
	for _, tc := range []struct {
		name string
		cfg  v1.ImageConfig
		opt  Options
		want []string
	}{
		{"image entrypoint and cmd", img, Options{}, []string{"/ep", "-x", "cmd", "arg"}},
		{"args replace cmd", img, Options{Args: []string{"a", "b"}}, []string{"/ep", "-x", "a", "b"}},
		{"entrypoint drops image cmd", img, Options{Entrypoint: []string{"/bin/true"}, EntrypointSet: true}, []string{"/bin/true"}},
		{"entrypoint with args", img, Options{Entrypoint: []string{"/bin/echo"}, EntrypointSet: true, Args: []string{"hi"}}, []string{"/bin/echo", "hi"}},
		{"entrypoint is one word", img, Options{Entrypoint: []string{"sh -c"}, EntrypointSet: true}, []string{"sh -c"}},
		{"empty entrypoint runs args", img, Options{Entrypoint: []string{""}, EntrypointSet: true, Args: []string{"ls", "/"}}, []string{"ls", "/"}},
		{"empty list entrypoint runs args", img, Options{EntrypointSet: true, Args: []string{"ls"}}, []string{"ls"}},
		{"cmd only", cmdOnly, Options{}, []string{"sh"}},
		{"cmd only, args", cmdOnly, Options{Args: []string{"ls", "-l"}}, []string{"ls", "-l"}},
		{"image entrypoint [\"\"] is none", v1.ImageConfig{Entrypoint: []string{""}, Cmd: []string{"sh"}}, Options{}, []string{"sh"}},
		{"empty argument kept", cmdOnly, Options{Args: []string{""}}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := command(tc.cfg, tc.opt)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("command() = %q, %v, want %q", got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  v1.ImageConfig
		opt  Options
	}{
		{"nothing at all", v1.ImageConfig{}, Options{}},
		{"empty entrypoint drops image cmd", img, Options{Entrypoint: []string{""}, EntrypointSet: true}},
		{"image entrypoint [\"\"] alone", v1.ImageConfig{Entrypoint: []string{""}}, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := command(tc.cfg, tc.opt); !errors.Is(err, ErrNoCommand) || err.Error() != "no command specified" {
				t.Errorf("command() = %q, %v, want %v", got, err, ErrNoCommand)
			}
		})
	}
}

func TestResolveEnv(t *testing.T) {
	root := debianRoot(t)
	envFile := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(envFile, []byte("# comment\nFROMFILE=1\nSHARED=file\nHOSTVAR\nUNSETVAR\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host := []string{"HOSTVAR=from host", "HOSTVAR=second", "EMPTY="}
	imgEnv := []string{"PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "FOO=image", "BARE"}
	const defPath = "PATH=" + DefaultPath
	for _, tc := range []struct {
		name   string
		imgEnv []string
		opt    Options
		want   []string
	}{
		{"defaults", nil, Options{Hostname: "0123456789ab"},
			[]string{defPath, "HOSTNAME=0123456789ab", "HOME=/root"}},
		{"image env, PATH replaced in place", imgEnv, Options{Hostname: "h"},
			[]string{"PATH=/opt/bin:/usr/bin", "HOSTNAME=h", "LANG=C.UTF-8", "FOO=image", "HOME=/root"}},
		{"user before image, user wins", imgEnv, Options{Hostname: "h", Env: []string{"FOO=user", "X=1"}},
			[]string{"PATH=/opt/bin:/usr/bin", "HOSTNAME=h", "FOO=user", "X=1", "LANG=C.UTF-8", "HOME=/root"}},
		{"tty", nil, Options{Hostname: "h", TTY: true},
			[]string{defPath, "HOSTNAME=h", "TERM=xterm", "HOME=/root"}},
		{"user TERM and HOSTNAME", nil, Options{Hostname: "h", TTY: true, Env: []string{"TERM=dumb", "HOSTNAME=mine"}},
			[]string{defPath, "HOSTNAME=mine", "TERM=dumb", "HOME=/root"}},
		{"bare -e from host, first entry wins", nil, Options{Hostname: "h", Env: []string{"HOSTVAR", "EMPTY"}},
			[]string{defPath, "HOSTNAME=h", "HOSTVAR=from host", "EMPTY=", "HOME=/root"}},
		{"bare -e unset on host removes the image's", imgEnv, Options{Hostname: "h", Env: []string{"FOO"}},
			[]string{"PATH=/opt/bin:/usr/bin", "HOSTNAME=h", "LANG=C.UTF-8", "HOME=/root"}},
		{"bare -e PATH unset on host removes PATH", nil, Options{Hostname: "h", Env: []string{"PATH"}},
			[]string{"HOSTNAME=h", "HOME=/root"}},
		{"duplicates keep the last at its place", nil, Options{Hostname: "h", Env: []string{"A=1", "B=2", "A=3"}},
			[]string{defPath, "HOSTNAME=h", "B=2", "A=3", "HOME=/root"}},
		{"user HOME kept", nil, Options{Hostname: "h", Env: []string{"HOME=/work"}},
			[]string{defPath, "HOSTNAME=h", "HOME=/work"}},
		{"empty HOME replaced", nil, Options{Hostname: "h", Env: []string{"HOME="}},
			[]string{defPath, "HOSTNAME=h", "HOME=/root"}},
		{"HOME of the user", nil, Options{Hostname: "h", User: "alice"},
			[]string{defPath, "HOSTNAME=h", "HOME=/home/alice"}},
		{"HOME by uid: first entry with it", nil, Options{Hostname: "h", User: "alias"},
			[]string{defPath, "HOSTNAME=h", "HOME=/home/alice"}},
		{"HOME of an unknown uid", nil, Options{Hostname: "h", User: "4242"},
			[]string{defPath, "HOSTNAME=h", "HOME=/"}},
		{"env file then -e", imgEnv, Options{Hostname: "h", EnvFiles: []string{envFile}, Env: []string{"SHARED=flag"}},
			[]string{"PATH=/opt/bin:/usr/bin", "HOSTNAME=h", "FROMFILE=1", "HOSTVAR=from host", "SHARED=flag", "LANG=C.UTF-8", "FOO=image", "HOME=/root"}},
		{"value with = and spaces", nil, Options{Hostname: "h", Env: []string{"Q=a=b c "}},
			[]string{defPath, "HOSTNAME=h", "Q=a=b c ", "HOME=/root"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(t.Context(), root, v1.ImageConfig{Env: tc.imgEnv, Cmd: []string{"sh"}}, tc.opt, host)
			if err != nil {
				t.Fatalf("Resolve() error %v", err)
			}
			if !slices.Equal(p.Env, tc.want) {
				t.Errorf("Resolve().Env =\n%q\nwant\n%q", p.Env, tc.want)
			}
		})
	}
}

func TestResolveEnvErrors(t *testing.T) {
	root := debianRoot(t)
	for _, tc := range []struct {
		name string
		img  []string
		opt  Options
		want string
	}{
		{"empty name", nil, Options{Env: []string{"=x"}}, "invalid environment variable: =x"},
		{"nul byte", nil, Options{Env: []string{"A=a\x00b"}}, `invalid environment variable "A": contains nul byte`},
		{"image empty name", []string{"=x"}, Options{}, "name cannot be empty"},
		{"missing env file", nil, Options{EnvFiles: []string{"/nonexistent/env"}}, "/nonexistent/env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(t.Context(), root, v1.ImageConfig{Env: tc.img, Cmd: []string{"sh"}}, tc.opt, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Resolve() error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestUserEnvIdempotent(t *testing.T) {
	host := []string{"A=host"}
	first, err := UserEnv(nil, []string{"A", "B", "C=3"}, host)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=host", "B", "C=3"}; !slices.Equal(first, want) {
		t.Fatalf("UserEnv() = %q, want %q", first, want)
	}
	again, err := UserEnv(nil, first, nil)
	if err != nil || !slices.Equal(again, first) {
		t.Errorf("UserEnv(UserEnv()) = %q, %v, want %q", again, err, first)
	}
}

func TestResolveCwd(t *testing.T) {
	root := debianRoot(t)
	for _, tc := range []struct {
		name   string
		imgDir string
		opt    string
		want   string
	}{
		{"default", "", "", "/"},
		{"image", "/app/", "", "/app"},
		{"flag wins", "/app", "/srv", "/srv"},
		{"dot-dot stays inside", "", "/../../etc/./x/..", "/etc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(t.Context(), root, v1.ImageConfig{WorkingDir: tc.imgDir, Cmd: []string{"sh"}}, Options{WorkingDir: tc.opt}, nil)
			if err != nil || p.Cwd != tc.want {
				t.Errorf("Resolve().Cwd = %v, %v, want %q", p, err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, imgDir, opt, want string }{
		{"relative flag", "", "app", "the working directory 'app' is invalid, it needs to be an absolute path"},
		{"relative image", "app", "", "the image's working directory 'app' is invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(t.Context(), root, v1.ImageConfig{WorkingDir: tc.imgDir, Cmd: []string{"sh"}}, Options{WorkingDir: tc.opt}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Resolve() error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestResolveVolumes(t *testing.T) {
	root := makeRoot(t,
		file{path: "data", dir: true},
		file{path: "etc/config", content: "x"},
		file{path: "linked", link: "/data"},
	)
	cfg := v1.ImageConfig{Cmd: []string{"sh"}, Volumes: map[string]struct{}{"/data": {}, "/var/lib/db/": {}, "/cache": {}, "/linked": {}}}
	p, err := Resolve(t.Context(), root, cfg, Options{Volumes: []string{"/host/db:/var/lib/db:ro", "/extra", "named:/srv"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantMounts := []Mount{
		{Type: Bind, Source: "/host/db", Target: "/var/lib/db", ReadOnly: true, Propagation: "rprivate", Options: "ro"},
		{Type: Volume, Source: "named", Target: "/srv"},
	}
	if !slices.Equal(p.Mounts, wantMounts) {
		t.Errorf("Resolve().Mounts = %+v, want %+v", p.Mounts, wantMounts)
	}
	if want := []string{"/cache", "/data", "/extra", "/linked"}; !slices.Equal(p.Volumes, want) {
		t.Errorf("Resolve().Volumes = %q, want %q", p.Volumes, want)
	}

	for _, tc := range []struct {
		name string
		cfg  v1.ImageConfig
		opt  Options
		want string
	}{
		{"duplicate mount point", v1.ImageConfig{}, Options{Volumes: []string{"/a:/x", "/b:/x/"}}, "duplicate mount point: /x"},
		{"volume over a file", v1.ImageConfig{Volumes: map[string]struct{}{"/etc/config": {}}}, Options{}, "cannot mount volume over existing file, file exists /etc/config"},
		{"anonymous -v over a file", v1.ImageConfig{}, Options{Volumes: []string{"/etc/config"}}, "cannot mount volume over existing file"},
		{"relative image volume", v1.ImageConfig{Volumes: map[string]struct{}{"data": {}}}, Options{}, "image VOLUME 'data' is invalid"},
		{"bad -v", v1.ImageConfig{}, Options{Volumes: []string{"/a:b"}}, "mount path must be absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Cmd = []string{"sh"}
			_, err := Resolve(t.Context(), root, tc.cfg, tc.opt, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Resolve() error %v, want %q", err, tc.want)
			}
		})
	}

	// A bind mount over a file is fine: only anonymous volumes need a directory.
	if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{Volumes: []string{"/h:/etc/config"}}, nil); err != nil {
		t.Errorf("Resolve(bind over a file) error %v", err)
	}
}

func TestResolveContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Resolve(ctx, debianRoot(t), v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Resolve(cancelled context) error %v, want %v", err, context.Canceled)
	}
}
