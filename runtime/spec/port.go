package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalidPort is wrapped by every error of ParsePublish.
var ErrInvalidPort = errors.New("invalid port")

// ErrUnsupportedProto is wrapped (with ErrInvalidPort) when -p asks for a
// protocol other than tcp: docker's udp and sctp are valid there, but
// lazyrun's proxy carries tcp only.
var ErrUnsupportedProto = errors.New("only tcp is supported")

// PortBinding is one container port that -p publishes on the host.
type PortBinding struct {
	// HostIP is the host address to listen on; empty means every IPv4
	// address (0.0.0.0), as docker's default is shown.
	HostIP string `json:"hostIp,omitempty"`
	// HostPort is the host port; 0 takes a free one. With HostPortEnd
	// above it, the first free port of HostPort..HostPortEnd is taken,
	// as docker does for `-p 8000-8010:80`.
	HostPort    int    `json:"hostPort,omitempty"`
	HostPortEnd int    `json:"hostPortEnd,omitempty"`
	Port        int    `json:"port"`  // the container's port, 1-65535
	Proto       string `json:"proto"` // "tcp"
}

// String gives b back in -p's syntax, which ParsePublish reads again to b.
func (b PortBinding) String() string {
	var s strings.Builder
	if b.HostIP != "" {
		a, err := netip.ParseAddr(b.HostIP)
		if err == nil && a.Is6() && !a.Is4In6() {
			s.WriteString("[" + b.HostIP + "]")
		} else {
			s.WriteString(b.HostIP)
		}
		s.WriteString(":")
	}
	if b.HostPort != 0 || b.HostIP != "" {
		if b.HostPort != 0 {
			s.WriteString(strconv.Itoa(b.HostPort))
			if b.HostPortEnd > b.HostPort {
				s.WriteString("-" + strconv.Itoa(b.HostPortEnd))
			}
		}
		s.WriteString(":")
	}
	return s.String() + strconv.Itoa(b.Port) + "/" + b.Proto
}

// ParsePublish parses one -p (--publish) value as docker does:
// [IP:][HOSTPORT:]CONTAINERPORT[/PROTO], where an IPv6 IP may be written in
// brackets, either port may be a range (START-END), an empty or 0 host
// port takes a free one, and PROTO defaults to tcp. A container range
// gives one binding per port and needs a host range of the same length
// (or none); a host range with one container port is where to look for a
// free port. Only tcp is accepted (see ErrUnsupportedProto). Errors wrap
// ErrInvalidPort and name the value.
func ParsePublish(s string) ([]PortBinding, error) {
	bad := func(format string, args ...any) ([]PortBinding, error) {
		return nil, fmt.Errorf("%w %q: %s", ErrInvalidPort, s, fmt.Sprintf(format, args...))
	}
	ip, hostPort, ctrPort := splitPublish(s)
	ctrPort, proto, _ := strings.Cut(ctrPort, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	switch proto {
	case "tcp":
	case "udp", "sctp":
		return nil, fmt.Errorf("%w %q: protocol %s: %w", ErrInvalidPort, s, proto, ErrUnsupportedProto)
	default:
		return bad("invalid proto: %s", proto)
	}
	if strings.HasPrefix(ip, "[") {
		if !strings.HasSuffix(ip, "]") {
			return bad("invalid IP address: %s", ip)
		}
		ip = ip[1 : len(ip)-1]
	}
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return bad("invalid IP address: %s", ip)
		}
		ip = a.Unmap().String()
	}
	if ctrPort == "" {
		return bad("no port specified: %s<empty>", s)
	}
	start, end, err := parsePortRange(ctrPort)
	if err != nil || start == 0 {
		return bad("invalid containerPort: %s", ctrPort)
	}
	var hStart, hEnd int
	if hostPort != "" {
		if hStart, hEnd, err = parsePortRange(hostPort); err != nil {
			return bad("invalid hostPort: %s", hostPort)
		}
		if hStart == 0 && hEnd != 0 {
			return bad("invalid hostPort: %s", hostPort)
		}
	}
	if hostPort != "" && hEnd-hStart != end-start && end != start {
		return bad("invalid ranges specified for container and host Ports: %s and %s", ctrPort, hostPort)
	}
	var out []PortBinding
	for i := 0; start+i <= end; i++ {
		b := PortBinding{HostIP: ip, Port: start + i, Proto: proto}
		switch {
		case hStart == 0:
		case end != start:
			b.HostPort = hStart + i
		default:
			b.HostPort = hStart
			if hEnd > hStart {
				b.HostPortEnd = hEnd
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// splitPublish splits -p's value at its colons as docker's nat package
// does: the last part is the container's port, the one before it the host
// port, and whatever comes before those the IP (IPv6 holds colons).
func splitPublish(s string) (ip, hostPort, ctrPort string) {
	parts := strings.Split(s, ":")
	n := len(parts)
	switch n {
	case 1:
		return "", "", parts[0]
	case 2:
		return "", parts[0], parts[1]
	}
	return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
}

// parsePortRange parses N or N-M (N <= M), ports 0-65535.
func parsePortRange(s string) (start, end int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if start, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return start, start, nil
	}
	if end, err = parsePort(b); err != nil {
		return 0, 0, err
	}
	if end < start {
		return 0, 0, fmt.Errorf("invalid range %s", s)
	}
	return start, end, nil
}

func parsePort(s string) (int, error) {
	// Digits only: strconv would take a sign.
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return int(n), nil
}
