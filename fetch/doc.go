// Package fetch is lazyfs's registry client (OCI distribution spec).
//
// It owns: resolving a reference to a platform's manifest and config
// (image indexes, Docker schema 2 and OCI media types), reading blob byte
// ranges with HTTP Range requests, streaming and verifying whole blobs,
// finding artifacts that refer to an image (referrers API, with the OCI 1.1
// tag-schema fallback) and pushing such artifacts; with retries, backoff,
// per-request deadlines and request accounting.
//
// Protocol and authentication come from go-containerregistry: the
// WWW-Authenticate challenge, basic and bearer tokens, credentials from the
// Docker config (authn.DefaultKeychain), the plain-HTTP fallback for
// loopback registries. Range reads, their retries and the digest checks are
// ours, sent on ggcr's authenticated transport.
//
// It knows nothing of layer formats, indexes, caches, FUSE or containers:
// it moves bytes named by digests and never interprets a layer.
package fetch
