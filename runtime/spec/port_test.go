package spec

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	tcp := func(ip string, host, hostEnd, port int) PortBinding {
		return PortBinding{HostIP: ip, HostPort: host, HostPortEnd: hostEnd, Port: port, Proto: "tcp"}
	}
	for _, tc := range []struct {
		in   string
		want []PortBinding
	}{
		{"80", []PortBinding{tcp("", 0, 0, 80)}},
		{"80/tcp", []PortBinding{tcp("", 0, 0, 80)}},
		{"80/TCP", []PortBinding{tcp("", 0, 0, 80)}},
		{"8080:80", []PortBinding{tcp("", 8080, 0, 80)}},
		{"0:80", []PortBinding{tcp("", 0, 0, 80)}},
		{":80", []PortBinding{tcp("", 0, 0, 80)}},
		{"127.0.0.1:8080:80", []PortBinding{tcp("127.0.0.1", 8080, 0, 80)}},
		{"127.0.0.1::80", []PortBinding{tcp("127.0.0.1", 0, 0, 80)}},
		{"127.0.0.1:0:80/tcp", []PortBinding{tcp("127.0.0.1", 0, 0, 80)}},
		{"[::1]:8080:80", []PortBinding{tcp("::1", 8080, 0, 80)}},
		{"::1:8080:80", []PortBinding{tcp("::1", 8080, 0, 80)}},
		{"[::ffff:127.0.0.1]:1:2", []PortBinding{tcp("127.0.0.1", 1, 0, 2)}},
		{"0.0.0.0:65535:65535", []PortBinding{tcp("0.0.0.0", 65535, 0, 65535)}},
		{"8000-8001:80-81", []PortBinding{tcp("", 8000, 0, 80), tcp("", 8001, 0, 81)}},
		{"80-82", []PortBinding{tcp("", 0, 0, 80), tcp("", 0, 0, 81), tcp("", 0, 0, 82)}},
		{"8000-8010:80", []PortBinding{tcp("", 8000, 8010, 80)}},
		{"80-80", []PortBinding{tcp("", 0, 0, 80)}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePublish(tc.in)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParsePublish(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParsePublishErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: in the message, besides the value itself
	}{
		{"", "no port specified"},
		{"8080:", "no port specified"},
		{"abc", "invalid containerPort: abc"},
		{"0", "invalid containerPort: 0"},
		{"65536", "invalid containerPort: 65536"},
		{"-1", "invalid containerPort: -1"},
		{"+80", "invalid containerPort: +80"},
		{"81-80", "invalid containerPort: 81-80"},
		{"x:80", "invalid hostPort: x"},
		{"0-5:80", "invalid hostPort: 0-5"},
		{"1.2.3:80:80", "invalid IP address: 1.2.3"},
		{"localhost:80:80", "invalid IP address: localhost"},
		{"[::1:80:80", "invalid IP address: [::1"},
		{"fe80::1%eth0:80:80", "invalid IP address"},
		{"8000-8002:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8002"},
		{"53:53/udp", "protocol udp: only tcp is supported"},
		{"53/sctp", "protocol sctp: only tcp is supported"},
		{"53/icmp", "invalid proto: icmp"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePublish(tc.in)
			if err == nil {
				t.Fatalf("ParsePublish(%q) = %+v, want an error", tc.in, got)
			}
			if !errors.Is(err, ErrInvalidPort) || !strings.Contains(err.Error(), `"`+tc.in+`"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParsePublish(%q) error = %q, want ErrInvalidPort naming the value and %q", tc.in, err, tc.want)
			}
		})
	}
	if _, err := ParsePublish("53/udp"); !errors.Is(err, ErrUnsupportedProto) {
		t.Errorf("ParsePublish(53/udp) error = %v, want ErrUnsupportedProto", err)
	}
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"80", "8080:80", "127.0.0.1::80/tcp", "[::1]:1-2:3-4", "8000-8010:80", "1:2:3:4:5", "80/udp", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bs, err := ParsePublish(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidPort) {
				t.Fatalf("ParsePublish(%q) error %v does not wrap ErrInvalidPort", s, err)
			}
			return
		}
		if len(bs) == 0 {
			t.Fatalf("ParsePublish(%q) gave no binding", s)
		}
		for _, b := range bs {
			if b.Port < 1 || b.Port > 65535 || b.HostPort < 0 || b.HostPort > 65535 || b.Proto != "tcp" ||
				(b.HostPortEnd != 0 && (b.HostPortEnd <= b.HostPort || b.HostPort == 0)) {
				t.Fatalf("ParsePublish(%q) gave %+v", s, b)
			}
			again, err := ParsePublish(b.String())
			if err != nil || len(again) != 1 || again[0] != b {
				t.Fatalf("ParsePublish(%q) of %+v from %q = %+v, %v", b.String(), b, s, again, err)
			}
		}
	})
}
