package testutil

import (
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
)

func TestRelayForwardsUntilStopped(t *testing.T) {
	addr, blob, d := fakeUpstream(t)
	r := StartRelay(t, addr)
	client := &http.Client{Transport: &http.Transport{}}
	get := func() ([]byte, error) {
		resp, err := client.Get("http://" + r.Addr + "/v2/test/blobs/" + d.String())
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	if b, err := get(); err != nil || len(b) != len(blob) {
		t.Fatalf("GET through the relay = %d bytes, %v; want %d", len(b), err, len(blob))
	}
	r.Stop()
	if _, err := get(); !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, io.EOF) {
		t.Errorf("GET after Stop = %v, want connection refused (or the kept-alive connection closed)", err)
	}
	if _, err := get(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("second GET after Stop = %v, want connection refused", err)
	}
	r.Stop() // idempotent
	r.Restart(t)
	if b, err := get(); err != nil || len(b) != len(blob) {
		t.Fatalf("GET after Restart = %d bytes, %v; want %d", len(b), err, len(blob))
	}
}
