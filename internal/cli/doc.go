// Package cli holds what the lazyfs and lazyrun commands share: the global
// flags (--root, --insecure, --log-level, registry and cache settings), the
// parts opened from them (registry client, frame cache, index resolver), usage
// errors, and small formatting helpers. Only cmd/* imports it.
package cli
