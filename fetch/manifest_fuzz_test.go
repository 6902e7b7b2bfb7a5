package fetch

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"reflect"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const fuzzDigest = digest.Digest("sha256:0000000000000000000000000000000000000000000000000000000000000000")

// FuzzManifestMediaType checks how a manifest's media type is told from
// the Content-Type and the document: a known type as served is kept (its
// parameters dropped), anything else yields to a mediaType the document
// names, and telling it again from its own answer changes nothing.
func FuzzManifestMediaType(f *testing.F) {
	for _, s := range [][2]string{
		{ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"config":{}}`},
		{MediaTypeDockerManifestList + "; charset=utf-8", `{"manifests":[]}`},
		{"application/json", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}`},
		{"text/plain", `{"manifests":[{"digest":"x"}]}`},
		{"application/octet-stream", `{"config":null}`},
		{"", `[]`},
		{"application/json", `{"MEDIATYPE":"x/y","mediaType":""}`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, served string, raw []byte) {
		mt := manifestMediaType(served, raw)
		parsed := served
		if p, _, err := mime.ParseMediaType(served); err == nil {
			parsed = p
		}
		if (isIndex(parsed) || isKnownManifest(parsed)) && mt != parsed {
			t.Fatalf("manifestMediaType(%q) = %q; a known type as served must be kept as %q", served, mt, parsed)
		}
		sniffed := sniffMediaType(raw)
		if p, _, err := mime.ParseMediaType(sniffed); err == nil {
			sniffed = p
		}
		if mt != parsed && mt != sniffed {
			t.Fatalf("manifestMediaType(%q) = %q: neither the served type %q nor the document's %q", served, mt, parsed, sniffed)
		}
		if s := sniffMediaType(raw); s != "" {
			var probe struct {
				MediaType string `json:"mediaType"`
			}
			if err := json.Unmarshal(raw, &probe); err != nil || (probe.MediaType != "" && probe.MediaType != s) {
				t.Fatalf("sniffMediaType = %q, but the document's mediaType is %q (%v)", s, probe.MediaType, err)
			}
		}
		if again := manifestMediaType(mt, raw); again != mt {
			t.Fatalf("manifestMediaType(%q) = %q, but told again from that: %q", served, mt, again)
		}
	})
}

// FuzzParseImageManifest checks the manifest checks of Resolve: only OCI
// and Docker schema 2 manifests pass, with a config size in bounds, and
// what passes reads back the same after encoding it again.
func FuzzParseImageManifest(f *testing.F) {
	good := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":12},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":3,"annotations":{}}]}`
	for _, s := range [][2]string{
		{ocispec.MediaTypeImageManifest, good},
		{MediaTypeDockerManifest, good},
		{mediaTypeDockerSchema1Sig, `{"schemaVersion":1}`},
		{ocispec.MediaTypeImageIndex, `{"manifests":[]}`},
		{ocispec.MediaTypeImageManifest, `{"config":{"size":-1}}`},
		{ocispec.MediaTypeImageManifest, `{"config":{"size":16777217}}`},
		{ocispec.MediaTypeImageManifest, `{"layers":null,"subject":{"size":1}}`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, mt string, raw []byte) {
		m, err := parseImageManifest(raw, mt, fuzzDigest)
		manifest := mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
		if !manifest {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("parseImageManifest(media type %q) = %v; want ErrUnsupported", mt, err)
			}
			return
		}
		if err != nil {
			if errors.Is(err, ErrTooLarge) != (m.Config.Size < 0 || m.Config.Size > maxConfigSize) {
				t.Fatalf("parseImageManifest: %v, config size %d", err, m.Config.Size)
			}
			return
		}
		if m.Config.Size < 0 || m.Config.Size > maxConfigSize {
			t.Fatalf("parseImageManifest passed a config of %d bytes", m.Config.Size)
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("encode parsed manifest: %v", err)
		}
		m2, err := parseImageManifest(enc, mt, fuzzDigest)
		if err != nil {
			t.Fatalf("parseImageManifest(%s) again: %v", enc, err)
		}
		if enc2, _ := json.Marshal(m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("manifest does not read back:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzParseConfig checks that a config passes only at the size its
// descriptor gives, and reads back the same after encoding it again.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}`,
		`{"created":"2024-01-02T03:04:05.123456789Z","history":[{"empty_layer":true}]}`,
		`{"config":{"ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}}}}`,
		`null`, `{}`, `{"os":1}`,
	} {
		f.Add([]byte(s), int64(len(s)))
		f.Add([]byte(s), int64(len(s)+1))
	}
	f.Fuzz(func(t *testing.T, raw []byte, size int64) {
		cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: fuzzDigest, Size: size}
		cfg, err := parseConfig(cd, raw)
		if int64(len(raw)) != size {
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("parseConfig(%d bytes, descriptor says %d) = %v; want ErrDigestMismatch", len(raw), size, err)
			}
			return
		}
		if err != nil {
			return
		}
		enc, err := json.Marshal(cfg)
		if err != nil {
			// A created time outside years 0-9999 parses but does not encode.
			if cfg.Created != nil && (cfg.Created.Year() < 0 || cfg.Created.Year() > 9999) {
				return
			}
			t.Fatalf("encode parsed config: %v", err)
		}
		cfg2, err := parseConfig(ocispec.Descriptor{Digest: fuzzDigest, Size: int64(len(enc))}, enc)
		if err != nil {
			t.Fatalf("parseConfig(%s) again: %v", enc, err)
		}
		if enc2, _ := json.Marshal(cfg2); !bytes.Equal(enc, enc2) {
			t.Fatalf("config does not read back:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzPickFromIndex checks platform selection against a plain reference:
// the first entry whose OS, architecture, OS version and variant match
// exactly, else, when no variant is asked for, the first whose OS and
// architecture do; none gives ErrNoPlatform. Normalizing is idempotent.
func FuzzPickFromIndex(f *testing.F) {
	idx := `{"schemaVersion":2,"manifests":[` +
		`{"digest":"sha256:01","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},` +
		`{"digest":"sha256:02","platform":{"os":"linux","architecture":"amd64"}},` +
		`{"digest":"sha256:03","platform":{"os":"linux","architecture":"arm","variant":"v6"}},` +
		`{"digest":"sha256:04","platform":{"os":"windows","architecture":"amd64","os.version":"10.0.17763.1"}},` +
		`{"digest":"sha256:05","platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest"}},` +
		`{"digest":"sha256:06"}]}`
	for _, p := range [][4]string{
		{"linux", "amd64", "", ""}, {"linux", "x86_64", "v1", ""}, {"Linux", "AARCH64", "", ""},
		{"linux", "arm", "", ""}, {"linux", "armel", "", ""}, {"windows", "amd64", "", "10.0.17763.1"},
		{"linux", "s390x", "", ""}, {"unknown", "unknown", "", ""},
	} {
		f.Add([]byte(idx), p[0], p[1], p[2], p[3])
	}
	f.Fuzz(func(t *testing.T, raw []byte, os, arch, variant, osVersion string) {
		want := ocispec.Platform{OS: os, Architecture: arch, Variant: variant, OSVersion: osVersion}
		if n := normalizePlatform(want); !reflect.DeepEqual(normalizePlatform(n), n) {
			t.Fatalf("normalizePlatform not idempotent: %+v -> %+v -> %+v", want, n, normalizePlatform(n))
		}
		got, err := pickFromIndex(raw, fuzzDigest, want)
		var idx ocispec.Index
		if json.Unmarshal(raw, &idx) != nil {
			if err == nil || errors.Is(err, ErrNoPlatform) {
				t.Fatalf("pickFromIndex(unparseable) = %v", err)
			}
			return
		}
		ref := -1
		same := func(d ocispec.Descriptor, exact bool) bool {
			if d.Platform == nil {
				return false
			}
			h, w := *d.Platform, want
			if normalizePlatform(h).OS != normalizePlatform(w).OS || normalizePlatform(h).Architecture != normalizePlatform(w).Architecture {
				return false
			}
			if w.OSVersion != "" && w.OSVersion != h.OSVersion {
				return false
			}
			return !exact || normalizePlatform(h).Variant == normalizePlatform(w).Variant
		}
		for i, d := range idx.Manifests {
			if same(d, true) {
				ref = i
				break
			}
		}
		if ref < 0 && variant == "" {
			for i, d := range idx.Manifests {
				if same(d, false) {
					ref = i
					break
				}
			}
		}
		if ref < 0 {
			if !errors.Is(err, ErrNoPlatform) {
				t.Fatalf("pickFromIndex(%s) = %s, %v; the reference finds none", platformString(want), got.Digest, err)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(got, idx.Manifests[ref]) {
			t.Fatalf("pickFromIndex(%s) = %+v, %v; the reference picks #%d %+v", platformString(want), got, err, ref, idx.Manifests[ref])
		}
	})
}
