package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrInvalidChange is wrapped by every error of Change.Apply.
var ErrInvalidChange = errors.New("invalid change")

// CommitConfig is the config docker commit gives the new image of a
// container made from an image with config image and the run flags opt:
// the container's own config as docker's daemon merged it at create. The
// command, entrypoint, working directory and user are the ones the
// container ran with; its environment is the user's entries then the
// image's others (the defaults runc adds, PATH, HOSTNAME, TERM and HOME,
// are not part of it); anonymous -v volumes join the image's VOLUMEs and
// -p's container ports its exposed ports. stopSignal is --stop-signal,
// empty for the image's.
func CommitConfig(image v1.ImageConfig, opt Options, ports []PortBinding, stopSignal string) (v1.ImageConfig, error) {
	cfg := image
	cfg.Env = slices.Clone(image.Env)
	cfg.Cmd = slices.Clone(image.Cmd)
	cfg.Entrypoint = slices.Clone(image.Entrypoint)
	cfg.Labels = maps.Clone(image.Labels)
	cfg.Volumes = maps.Clone(image.Volumes)
	cfg.ExposedPorts = maps.Clone(image.ExposedPorts)

	if opt.EntrypointSet {
		cfg.Entrypoint = slices.Clone(opt.Entrypoint)
		if len(cfg.Entrypoint) == 1 && cfg.Entrypoint[0] == "" {
			cfg.Entrypoint = nil
		}
		cfg.Cmd = slices.Clone(opt.Args)
	} else if len(opt.Args) > 0 {
		cfg.Cmd = slices.Clone(opt.Args)
	}
	if opt.WorkingDir != "" {
		cfg.WorkingDir = path.Clean(opt.WorkingDir)
	}
	if opt.User != "" {
		cfg.User = opt.User
	}
	if stopSignal != "" {
		cfg.StopSignal = stopSignal
	}

	user, err := UserEnv(opt.EnvFiles, opt.Env, nil)
	if err != nil {
		return v1.ImageConfig{}, err
	}
	cfg.Env = mergeEnv(user, image.Env)

	for _, s := range opt.Volumes {
		m, v, err := ParseVolume(s)
		if err != nil {
			return v1.ImageConfig{}, err
		}
		if m == nil {
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			cfg.Volumes[v] = struct{}{}
		}
	}
	for _, p := range ports {
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		cfg.ExposedPorts[strconv.Itoa(p.Port)+"/"+p.Proto] = struct{}{}
	}
	return cfg, nil
}

// mergeEnv is docker's daemon merge of a container's environment: the
// user's entries, then each image entry whose key the user did not name.
func mergeEnv(user, image []string) []string {
	merged := slices.Clone(user)
	for _, ie := range image {
		ik, _, _ := strings.Cut(ie, "=")
		if !slices.ContainsFunc(user, func(ue string) bool {
			uk, _, _ := strings.Cut(ue, "=")
			return uk == ik
		}) {
			merged = append(merged, ie)
		}
	}
	return merged
}

// Change is what the -c/--change options of docker commit can set beyond
// the OCI image config: ONBUILD triggers, which only Docker's config keeps.
type Change struct {
	Config  v1.ImageConfig
	OnBuild []string
	cmdSet  bool
}

// changeInstructions are the Dockerfile instructions docker commit --change
// accepts.
var changeInstructions = []string{"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}

// Apply applies one --change value, a Dockerfile instruction, to c as
// docker's builder dispatches it: CMD and ENTRYPOINT in JSON or shell form
// (an ENTRYPOINT drops the CMD unless a change set one before it), ENV and
// LABEL as key=value pairs (or ENV's legacy "key value"), EXPOSE with
// ports, ranges and protocols, VOLUME as a JSON array or words, WORKDIR
// relative to the previous one, and $VAR or ${VAR} expanded from the
// environment so far outside CMD, ENTRYPOINT and ONBUILD.
func (c *Change) Apply(change string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidChange, change, fmt.Sprintf(format, a...))
	}
	line := strings.TrimSpace(change)
	instr, rest := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		instr, rest = line[:i], strings.TrimSpace(line[i+1:])
	}
	instr = strings.ToUpper(instr)
	if instr == "" {
		return fail("empty instruction")
	}
	if !slices.Contains(changeInstructions, instr) {
		return fail("%s is not a valid change command (want one of %s)", instr, strings.Join(changeInstructions, ", "))
	}
	cfg := &c.Config
	// The maps may be shared with the config Change was made from.
	cfg.Labels, cfg.Volumes, cfg.ExposedPorts = maps.Clone(cfg.Labels), maps.Clone(cfg.Volumes), maps.Clone(cfg.ExposedPorts)

	switch instr {
	case "CMD", "ENTRYPOINT":
		args := commandForm(rest)
		if instr == "CMD" {
			cfg.Cmd, c.cmdSet = args, true
			return nil
		}
		cfg.Entrypoint = args
		if !c.cmdSet {
			cfg.Cmd = nil
		}
		return nil
	case "ONBUILD":
		trigger := strings.ToUpper(strings.Fields(rest + " x")[0])
		if rest == "" {
			return fail("ONBUILD requires an instruction")
		}
		if trigger == "ONBUILD" || trigger == "FROM" || trigger == "MAINTAINER" {
			return fail("%s isn't allowed as an ONBUILD trigger", trigger)
		}
		c.OnBuild = append(c.OnBuild, rest)
		return nil
	}

	words, err := splitWords(rest, true, cfg.Env)
	if err != nil {
		return fail("%v", err)
	}
	switch instr {
	case "ENV", "LABEL":
		pairs, err := keyValues(instr, rest, words, cfg.Env)
		if err != nil {
			return fail("%v", err)
		}
		for _, kv := range pairs {
			if instr == "ENV" {
				cfg.Env = setEnv(cfg.Env, kv[0], kv[1])
				continue
			}
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			cfg.Labels[kv[0]] = kv[1]
		}
	case "EXPOSE":
		if len(words) == 0 {
			return fail("EXPOSE requires at least one argument")
		}
		for _, w := range words {
			ports, err := exposedPorts(w)
			if err != nil {
				return fail("%v", err)
			}
			if cfg.ExposedPorts == nil {
				cfg.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				cfg.ExposedPorts[p] = struct{}{}
			}
		}
	case "VOLUME":
		vols := words
		if a, ok := jsonArray(rest); ok {
			vols = a
		}
		if len(vols) == 0 {
			return fail("VOLUME requires at least one argument")
		}
		for _, v := range vols {
			if strings.TrimSpace(v) == "" {
				return fail("VOLUME specified can not be an empty string")
			}
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			cfg.Volumes[v] = struct{}{}
		}
	case "STOPSIGNAL", "USER", "WORKDIR":
		if len(words) != 1 {
			return fail("%s requires exactly one argument", instr)
		}
		switch instr {
		case "STOPSIGNAL":
			cfg.StopSignal = words[0] // the caller checks it is a signal
		case "USER":
			cfg.User = words[0]
		case "WORKDIR":
			dir := words[0]
			if !path.IsAbs(dir) {
				dir = path.Join("/", cfg.WorkingDir, dir)
			}
			cfg.WorkingDir = path.Clean(dir)
		}
	}
	return nil
}

// commandForm is a CMD or ENTRYPOINT argument: a JSON array of strings as
// it is, anything else run by /bin/sh -c.
func commandForm(rest string) []string {
	if a, ok := jsonArray(rest); ok {
		return a
	}
	if rest == "" {
		return nil
	}
	return []string{"/bin/sh", "-c", rest}
}

// jsonArray reads s as the exec form: a JSON array of strings.
func jsonArray(s string) ([]string, bool) {
	if !strings.HasPrefix(s, "[") {
		return nil, false
	}
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, false
	}
	return a, true
}

// keyValues reads ENV's or LABEL's pairs: key=value words, or for ENV the
// legacy form "key the rest of the line".
func keyValues(instr, rest string, words, env []string) ([][2]string, error) {
	if len(words) == 0 {
		return nil, fmt.Errorf("%s requires at least one argument", instr)
	}
	var out [][2]string
	if !strings.Contains(words[0], "=") {
		if instr != "ENV" || len(words) < 2 {
			return nil, fmt.Errorf("%s names must be followed by =value", instr)
		}
		if words[0] == "" {
			return nil, fmt.Errorf("%s names can not be blank: %q", instr, rest)
		}
		_, value, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := splitWords(value, true, env)
		if err != nil {
			return nil, err
		}
		return [][2]string{{words[0], strings.Join(v, " ")}}, nil
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s names can not be blank: %q", instr, w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// setEnv sets key in env, in place when it is there.
func setEnv(env []string, key, value string) []string {
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env = slices.Clone(env)
			env[i] = key + "=" + value
			return env
		}
	}
	return append(slices.Clone(env), key+"="+value)
}

// exposedPorts reads one EXPOSE word: PORT, START-END, with /tcp, /udp or
// /sctp.
func exposedPorts(w string) ([]string, error) {
	ports, proto, hasProto := strings.Cut(w, "/")
	proto = strings.ToLower(proto)
	if !hasProto {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("invalid proto: %s", proto)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil || start == 0 {
		return nil, fmt.Errorf("invalid containerPort: %s", ports)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return nil, fmt.Errorf("invalid range specified for containerPort: %s", ports)
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, strconv.FormatUint(p, 10)+"/"+proto)
	}
	return out, nil
}

// splitWords splits s into words as the Dockerfile's shell lexer does:
// blanks separate words, single quotes keep everything, double quotes
// keep all but \" \\ \$ and variables, a backslash escapes the next
// character outside quotes, and with expand $VAR or ${VAR} take their
// value from env.
func splitWords(s string, expand bool, env []string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
			continue
		case ch == '\\':
			if i+1 < len(s) {
				i++
				w.WriteByte(s[i])
			}
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unexpected end of statement while looking for matching single-quote")
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`, s[i+1]) >= 0:
					i++
					w.WriteByte(s[i])
				case s[i] == '$' && expand:
					n, err := expandVar(&w, s[i:], env)
					if err != nil {
						return nil, err
					}
					i += n - 1
				default:
					w.WriteByte(s[i])
				}
			}
			if i >= len(s) {
				return nil, errors.New("unexpected end of statement while looking for matching double-quote")
			}
		case ch == '$' && expand:
			n, err := expandVar(&w, s[i:], env)
			if err != nil {
				return nil, err
			}
			i += n - 1
		default:
			w.WriteByte(ch)
		}
		inWord = true
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// expandVar writes the value of the variable s starts with ($NAME or
// ${NAME}) to w and says how many bytes of s it took; a lone $ is itself.
func expandVar(w *strings.Builder, s string, env []string) (int, error) {
	isName := func(c byte) bool {
		return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	var name string
	n := 1
	switch {
	case len(s) > 1 && s[1] == '{':
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return 0, errors.New("missing '}' in variable")
		}
		name, n = s[2:end], end+1
		if name == "" || strings.IndexFunc(name, func(r rune) bool { return r > 127 || !isName(byte(r)) }) >= 0 {
			return 0, fmt.Errorf("bad substitution: %s", s[:n])
		}
	default:
		for n < len(s) && isName(s[n]) {
			n++
		}
		name = s[1:n]
		if name == "" {
			w.WriteByte('$')
			return 1, nil
		}
	}
	if v, ok := lookupEnv(env, name); ok {
		w.WriteString(v)
	}
	return n, nil
}
