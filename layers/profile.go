package layers

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// A prefetch profile says which parts of an image's layers a start-up
// read, in the order it first read them. `lazyrun run --record-prefetch`
// records one and pushes it beside the image as an OCI artifact (subject =
// the image's manifest, like the index artifact); a later cold start finds
// it and fetches those parts first (Source.Prefetch).
//
// It names ranges of each layer's uncompressed tar stream, not frame
// numbers, so it stays valid for an index built with another span.
const (
	// ProfileArtifactType marks the artifact that carries a profile.
	ProfileArtifactType = "application/vnd.lazyfs.prefetch.v1"
	// ProfileMediaType is the media type of its one blob, a Profile as JSON.
	ProfileMediaType = "application/vnd.lazyfs.prefetch.v1+json"

	profileVersion = 1
	// maxProfileBytes and maxProfileRanges bound what a profile from a
	// registry may make us hold: a recorded one has a few thousand ranges.
	maxProfileBytes  = 16 << 20
	maxProfileRanges = 1 << 20
)

// Profile is a recorded start-up's reads.
type Profile struct {
	Version int            `json:"version"`
	Image   digest.Digest  `json:"image"` // the manifest it was recorded on
	Created time.Time      `json:"created"`
	Command []string       `json:"command,omitempty"` // what ran, for people
	Layers  []ProfileLayer `json:"layers"`
}

// ProfileLayer is what was read of one layer.
type ProfileLayer struct {
	Digest digest.Digest `json:"digest"`
	// Ranges are [offset, length] pieces of the layer's uncompressed
	// stream, in the order they were first read.
	Ranges [][2]int64 `json:"ranges"`
}

// Bytes is how many uncompressed bytes the profile names.
func (p *Profile) Bytes() int64 {
	var n int64
	for _, l := range p.Layers {
		for _, r := range l.Ranges {
			n += r[1]
		}
	}
	return n
}

// DecodeProfile parses and checks a profile.
func DecodeProfile(data []byte) (*Profile, error) {
	if len(data) > maxProfileBytes {
		return nil, fmt.Errorf("prefetch profile: %d bytes, at most %d", len(data), maxProfileBytes)
	}
	var p Profile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("prefetch profile: %w", err)
	}
	if p.Version != profileVersion {
		return nil, fmt.Errorf("prefetch profile: version %d, want %d", p.Version, profileVersion)
	}
	if err := p.Image.Validate(); err != nil {
		return nil, fmt.Errorf("prefetch profile: image: %w", err)
	}
	ranges := 0
	for _, l := range p.Layers {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("prefetch profile: layer: %w", err)
		}
		for _, r := range l.Ranges {
			if r[0] < 0 || r[1] <= 0 || r[0] > (1<<62)-r[1] {
				return nil, fmt.Errorf("prefetch profile: layer %s: bad range [%d, %d]", l.Digest, r[0], r[1])
			}
		}
		if ranges += len(l.Ranges); ranges > maxProfileRanges {
			return nil, fmt.Errorf("prefetch profile: more than %d ranges", maxProfileRanges)
		}
	}
	return &p, nil
}

// Encode is the profile's JSON form.
func (p *Profile) Encode() ([]byte, error) { return json.Marshal(p) }

// frames returns the frames of x that the profile's ranges of that layer
// touch, in the order first read, each once; nil if the profile does not
// name the layer. Ranges past the end of the layer are ignored.
func (p *Profile) frames(x *index.Index) []int {
	for _, l := range p.Layers {
		if l.Digest != x.Layer {
			continue
		}
		seen := map[int]bool{}
		var out []int
		for _, r := range l.Ranges {
			first, end := x.FramesFor(r[0], r[1])
			for i := first; i < end; i++ {
				if !seen[i] {
					seen[i] = true
					out = append(out, i)
				}
			}
		}
		return out
	}
	return nil
}

// Recorder notes the frames a Source serves to readers (not read-ahead),
// for a Profile. Safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	seen   map[digest.Digest]map[int]bool
	ranges map[digest.Digest][][2]int64
	order  []digest.Digest // layers in the order first read
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{seen: map[digest.Digest]map[int]bool{}, ranges: map[digest.Digest][][2]int64{}}
}

func (rec *Recorder) note(x *index.Index, i int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := rec.seen[x.Layer]
	if s == nil {
		s = map[int]bool{}
		rec.seen[x.Layer] = s
		rec.order = append(rec.order, x.Layer)
	}
	if s[i] {
		return
	}
	s[i] = true
	f := &x.Frames[i]
	rs := rec.ranges[x.Layer]
	if n := len(rs); n > 0 && rs[n-1][0]+rs[n-1][1] == f.Offset {
		rs[n-1][1] += f.Size // the next frame of a sequential read
	} else {
		rs = append(rs, [2]int64{f.Offset, f.Size})
	}
	rec.ranges[x.Layer] = rs
}

// Profile is what was recorded so far, for the image with manifest digest
// image.
func (rec *Recorder) Profile(image digest.Digest, command []string) *Profile {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	p := &Profile{Version: profileVersion, Image: image, Created: time.Now().UTC(), Command: command}
	for _, d := range rec.order {
		p.Layers = append(p.Layers, ProfileLayer{Digest: d, Ranges: slices.Clone(rec.ranges[d])})
	}
	return p
}

// PushProfile publishes p as an artifact whose subject is img.
func (r *Resolver) PushProfile(ctx context.Context, img *fetch.Image, p *Profile) (ocispec.Descriptor, error) {
	data, err := p.Encode()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, err := r.cfg.Client.PushArtifact(ctx, img, ProfileArtifactType, []fetch.ArtifactBlob{{MediaType: ProfileMediaType, Data: data}},
		map[string]string{ocispec.AnnotationCreated: p.Created.Format(time.RFC3339Nano)})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push prefetch profile for %s: %w", img.Digest, err)
	}
	return desc, nil
}

// ErrNoProfile is FindProfile's answer for an image without a profile.
var ErrNoProfile = errors.New("no prefetch profile")

// FindProfile fetches the newest prefetch profile pushed for img.
func (r *Resolver) FindProfile(ctx context.Context, img *fetch.Image) (*Profile, error) {
	refs, err := r.cfg.Client.Referrers(ctx, img, ProfileArtifactType)
	if err != nil {
		return nil, fmt.Errorf("find prefetch profile of %s: %w", img.Digest, err)
	}
	if len(refs) == 0 {
		return nil, ErrNoProfile
	}
	art := newest(refs)
	m, err := r.cfg.Client.Manifest(ctx, img.Repo, art.Digest)
	if err != nil {
		return nil, fmt.Errorf("read prefetch profile artifact %s: %w", art.Digest, err)
	}
	i := slices.IndexFunc(m.Layers, func(d ocispec.Descriptor) bool { return d.MediaType == ProfileMediaType })
	if i < 0 {
		return nil, fmt.Errorf("prefetch profile artifact %s: no %s blob", art.Digest, ProfileMediaType)
	}
	data, err := r.cfg.Client.ReadBlob(ctx, img.Repo, m.Layers[i].Digest, maxProfileBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch prefetch profile %s: %w", m.Layers[i].Digest, err)
	}
	p, err := DecodeProfile(data)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", m.Layers[i].Digest, err)
	}
	if p.Image != img.Digest {
		return nil, fmt.Errorf("prefetch profile %s was recorded on %s, not %s", m.Layers[i].Digest, p.Image, img.Digest)
	}
	return p, nil
}

// byFirstUse orders runs of frames by the earliest use of any frame in
// them; rank maps a frame to its position in the profile.
func byFirstUse(runs [][]int, rank map[int]int) {
	first := func(run []int) int {
		best := len(rank)
		for _, k := range run {
			if r, ok := rank[k]; ok {
				best = min(best, r)
			}
		}
		return best
	}
	slices.SortStableFunc(runs, func(a, b []int) int { return cmp.Compare(first(a), first(b)) })
}
