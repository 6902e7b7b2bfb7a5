package fetch

import "context"

// Meter is told of the registry traffic of the calls whose context carries
// it (WithMeter), so that a caller can count what one of its parts fetched
// while Stats counts the whole Client.
//
// Its methods are called concurrently, from inside the HTTP stack, and
// must return at once.
type Meter interface {
	// Request is called for every HTTP request sent: each attempt, and the
	// ping and token requests of a handshake made for the call.
	Request()
	// BodyBytes is called with the body bytes of blobs as they arrive
	// (ReadRange, OpenBlob, ReadBlob), from failed attempts too.
	BodyBytes(n int64)
}

type meterKey struct{}

// WithMeter returns a context whose calls report their traffic to m (as
// well as to the Client's Stats). A nil m reports nothing.
func WithMeter(ctx context.Context, m Meter) context.Context {
	return context.WithValue(ctx, meterKey{}, m)
}

// meterFrom returns the Meter ctx carries, or nil.
func meterFrom(ctx context.Context) Meter {
	m, _ := ctx.Value(meterKey{}).(Meter)
	return m
}
