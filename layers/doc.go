// Package layers connects an image in a registry to the file system: it
// finds the index of every layer (in the local store, in the index artifact
// pushed beside the image, or by streaming the layer once and building it),
// publishes indexes as an OCI artifact whose subject is the image, and
// serves verified frames to fusefs through the shared cache.
//
// It is the one place that knows fetch, index and cache together; fusefs and
// the runtime see only its results.
package layers
