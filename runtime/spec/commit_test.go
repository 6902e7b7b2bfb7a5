package spec

import (
	"errors"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCommitConfig(t *testing.T) {
	image := v1.ImageConfig{
		Env:          []string{"PATH=/usr/bin", "A=image"},
		Entrypoint:   []string{"/entry"},
		Cmd:          []string{"serve"},
		WorkingDir:   "/srv",
		User:         "www",
		Volumes:      map[string]struct{}{"/data": {}},
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
		StopSignal:   "SIGQUIT",
	}
	tests := []struct {
		name  string
		opt   Options
		ports []PortBinding
		stop  string
		want  func(*v1.ImageConfig)
	}{
		{name: "as the image", want: func(*v1.ImageConfig) {}},
		{name: "args replace cmd", opt: Options{Args: []string{"sh", "-c", "x"}},
			want: func(c *v1.ImageConfig) { c.Cmd = []string{"sh", "-c", "x"} }},
		{name: "entrypoint drops cmd", opt: Options{Entrypoint: []string{"/bin/sh"}, EntrypointSet: true},
			want: func(c *v1.ImageConfig) { c.Entrypoint, c.Cmd = []string{"/bin/sh"}, nil }},
		{name: "empty entrypoint", opt: Options{Entrypoint: []string{""}, EntrypointSet: true, Args: []string{"ls"}},
			want: func(c *v1.ImageConfig) { c.Entrypoint, c.Cmd = nil, []string{"ls"} }},
		{name: "env: user first, then the image's others", opt: Options{Env: []string{"B=1", "A=user", "GONE"}},
			want: func(c *v1.ImageConfig) { c.Env = []string{"B=1", "A=user", "GONE", "PATH=/usr/bin"} }},
		{name: "workdir user signal", opt: Options{WorkingDir: "/tmp/../w", User: "0:0"}, stop: "9",
			want: func(c *v1.ImageConfig) { c.WorkingDir, c.User, c.StopSignal = "/w", "0:0", "9" }},
		{name: "anonymous volumes and ports join", opt: Options{Volumes: []string{"/cache", "/host:/bound", "named:/n"}},
			ports: []PortBinding{{HostPort: 8080, Port: 8000, Proto: "tcp"}},
			want: func(c *v1.ImageConfig) {
				c.Volumes = map[string]struct{}{"/data": {}, "/cache": {}}
				c.ExposedPorts = map[string]struct{}{"80/tcp": {}, "8000/tcp": {}}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CommitConfig(image, tt.opt, tt.ports, tt.stop)
			if err != nil {
				t.Fatal(err)
			}
			want := image
			want.Env, want.Cmd, want.Entrypoint = slices.Clone(image.Env), slices.Clone(image.Cmd), slices.Clone(image.Entrypoint)
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("CommitConfig =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
	if _, ok := image.Volumes["/cache"]; ok {
		t.Error("CommitConfig changed the image's config")
	}
	if _, err := CommitConfig(image, Options{Volumes: []string{"rel"}}, nil, ""); err == nil {
		t.Error("CommitConfig accepted -v rel")
	}
}

func TestChangeApply(t *testing.T) {
	base := v1.ImageConfig{Env: []string{"HOME=/root", "V=x y"}, Cmd: []string{"old"}, WorkingDir: "/app"}
	tests := []struct {
		changes []string
		want    func(*v1.ImageConfig)
		onBuild []string
		err     string
	}{
		{changes: []string{`CMD ["a", "b c"]`}, want: func(c *v1.ImageConfig) { c.Cmd = []string{"a", "b c"} }},
		{changes: []string{`cmd echo $HOME`}, want: func(c *v1.ImageConfig) { c.Cmd = []string{"/bin/sh", "-c", "echo $HOME"} }},
		{changes: []string{`CMD [not json`}, want: func(c *v1.ImageConfig) { c.Cmd = []string{"/bin/sh", "-c", "[not json"} }},
		{changes: []string{`ENTRYPOINT ["/e"]`}, want: func(c *v1.ImageConfig) { c.Entrypoint, c.Cmd = []string{"/e"}, nil }},
		{changes: []string{`CMD ["c"]`, `ENTRYPOINT ["/e"]`}, want: func(c *v1.ImageConfig) { c.Entrypoint, c.Cmd = []string{"/e"}, []string{"c"} }},
		{changes: []string{`ENV A=1 B="two words" C=$HOME/x D='$HOME' E=\$F`},
			want: func(c *v1.ImageConfig) {
				c.Env = append(c.Env, "A=1", "B=two words", "C=/root/x", "D=$HOME", "E=$F")
			}},
		{changes: []string{`ENV HOME /home/u`, `ENV P=${HOME}/bin`},
			want: func(c *v1.ImageConfig) { c.Env = []string{"HOME=/home/u", "V=x y", "P=/home/u/bin"} }},
		{changes: []string{`ENV LEGACY a  b`}, want: func(c *v1.ImageConfig) { c.Env = append(c.Env, "LEGACY=a b") }},
		{changes: []string{`ENV W="$V"`}, want: func(c *v1.ImageConfig) { c.Env = append(c.Env, "W=x y") }},
		{changes: []string{`LABEL a=b "c d"=e`}, want: func(c *v1.ImageConfig) { c.Labels = map[string]string{"a": "b", "c d": "e"} }},
		{changes: []string{`EXPOSE 80 53/UDP 8000-8002/tcp`}, want: func(c *v1.ImageConfig) {
			c.ExposedPorts = map[string]struct{}{"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}}
		}},
		{changes: []string{`VOLUME ["/a", "/b c"]`, `VOLUME /d /e`}, want: func(c *v1.ImageConfig) {
			c.Volumes = map[string]struct{}{"/a": {}, "/b c": {}, "/d": {}, "/e": {}}
		}},
		{changes: []string{`WORKDIR sub`, `WORKDIR ../other`}, want: func(c *v1.ImageConfig) { c.WorkingDir = "/app/other" }},
		{changes: []string{`WORKDIR /abs`}, want: func(c *v1.ImageConfig) { c.WorkingDir = "/abs" }},
		{changes: []string{"USER\tnobody:nogroup", "STOPSIGNAL SIGINT"}, want: func(c *v1.ImageConfig) { c.User, c.StopSignal = "nobody:nogroup", "SIGINT" }},
		{changes: []string{`ONBUILD RUN make`}, want: func(*v1.ImageConfig) {}, onBuild: []string{"RUN make"}},
		{changes: []string{`FROM scratch`}, err: "FROM is not a valid change command"},
		{changes: []string{`RUN true`}, err: "RUN is not a valid change command"},
		{changes: []string{``}, err: "empty instruction"},
		{changes: []string{`ONBUILD ONBUILD RUN x`}, err: "isn't allowed as an ONBUILD trigger"},
		{changes: []string{`ONBUILD`}, err: "requires an instruction"},
		{changes: []string{`ENV`}, err: "requires at least one argument"},
		{changes: []string{`ENV =v`}, err: "can not be blank"},
		{changes: []string{`LABEL k`}, err: "must be followed by =value"},
		{changes: []string{`ENV A="open`}, err: "double-quote"},
		{changes: []string{`ENV A='open`}, err: "single-quote"},
		{changes: []string{`ENV A=${B`}, err: "missing '}'"},
		{changes: []string{`ENV A=${B-c}`}, err: "bad substitution"},
		{changes: []string{`EXPOSE 0`}, err: "invalid containerPort"},
		{changes: []string{`EXPOSE 90-80`}, err: "invalid range"},
		{changes: []string{`EXPOSE 80/icmp`}, err: "invalid proto"},
		{changes: []string{`EXPOSE`}, err: "requires at least one argument"},
		{changes: []string{`VOLUME [""]`}, err: "can not be an empty string"},
		{changes: []string{`USER a b`}, err: "exactly one argument"},
		{changes: []string{`WORKDIR`}, err: "exactly one argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.changes, ";"), func(t *testing.T) {
			c := &Change{Config: base}
			c.Config.Env = slices.Clone(base.Env)
			var err error
			for _, ch := range tt.changes {
				if err = c.Apply(ch); err != nil {
					break
				}
			}
			if tt.err != "" {
				if err == nil || !errors.Is(err, ErrInvalidChange) || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("Apply = %v, want an ErrInvalidChange with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := base
			want.Env = slices.Clone(base.Env)
			tt.want(&want)
			if !reflect.DeepEqual(c.Config, want) || !slices.Equal(c.OnBuild, tt.onBuild) {
				t.Errorf("Apply =\n%+v %q\nwant\n%+v %q", c.Config, c.OnBuild, want, tt.onBuild)
			}
		})
	}
	if !slices.Equal(base.Env, []string{"HOME=/root", "V=x y"}) {
		t.Errorf("Apply changed the caller's Env: %q", base.Env)
	}
}

// FuzzChangeApply: any --change value is applied or refused with
// ErrInvalidChange, never half-applied to what the caller holds, and what
// it sets is well-formed.
func FuzzChangeApply(f *testing.F) {
	for _, s := range []string{`CMD ["a"]`, `ENV A=$B C="d e" F='g'`, `ENV K v w`, `LABEL a=b`, `EXPOSE 80 1-3/udp`,
		`VOLUME ["/v"]`, `WORKDIR ../x`, `USER u`, `STOPSIGNAL 9`, `ONBUILD RUN x`, `ENTRYPOINT e`, `ENV A=${B}\ c`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		base := v1.ImageConfig{Env: []string{"B=1"}, WorkingDir: "/w", Labels: map[string]string{"l": "1"},
			Volumes: map[string]struct{}{"/v": {}}, ExposedPorts: map[string]struct{}{"1/tcp": {}}}
		c := &Change{Config: base}
		err := c.Apply(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidChange) {
				t.Fatalf("Apply(%q) = %v, not an ErrInvalidChange", s, err)
			}
			return
		}
		if len(base.Env) != 1 || len(base.Labels) != 1 || len(base.Volumes) != 1 || len(base.ExposedPorts) != 1 {
			t.Fatalf("Apply(%q) changed the base: %+v", s, base)
		}
		for _, e := range c.Config.Env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				t.Fatalf("Apply(%q): Env entry %q", s, e)
			}
		}
		if w := c.Config.WorkingDir; !path.IsAbs(w) || path.Clean(w) != w {
			t.Fatalf("Apply(%q): WorkingDir %q", s, w)
		}
		for p := range c.Config.ExposedPorts {
			if ports, err := exposedPorts(p); err != nil || len(ports) != 1 || ports[0] != p {
				t.Fatalf("Apply(%q): exposed port %q", s, p)
			}
		}
		again := &Change{Config: base}
		if err := again.Apply(s); err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("Apply(%q) twice differs: %v", s, err)
		}
	})
}
