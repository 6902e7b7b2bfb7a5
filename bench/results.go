package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Results is everything one run measured, as results.json holds it.
type Results struct {
	Started, Finished time.Time
	Settings          Settings
	Machine           Machine
	Images            []ImageInfo
	Workloads         []*WorkloadResult
	Scale             []*ScaleResult
	Sharing           []*SharingResult
	FS                *FSResults  `json:",omitempty"` // the file-system section (fs.go)
	Mem               *MemSection `json:",omitempty"` // the memory section (mem.go)
	Notes             []string
}

// Settings are the run's parameters and the link as measured.
type Settings struct {
	Rate         int64 // bits per second; 0 = not shaped
	RTT          time.Duration
	Runs         int
	Modes        []string
	Scale        []int
	LoopFS       bool          // each cold run on a fresh loop-mounted ext4
	FS           bool          // the file-system section ran
	Registry     string        // the address clients use (the delaying proxy)
	MeasuredGet  time.Duration // median GET /v2/ on a new connection (≈ 2×RTT)
	MeasuredMbps float64       // one 50 MB blob GET
	Span         int64         // index checkpoint spacing asked for; 0 = lazyfs's default
	BlockSpan    int64         `json:",omitempty"` // spacing of frames without a window; 0 = lazyfs's default, -1 = none
}

// ImageInfo describes a pushed image.
type ImageInfo struct {
	Name, Ref, Digest string
	Packages          []string
	Env               []string `json:",omitempty"` // after PATH
	AddedFiles        []string `json:",omitempty"` // Image.Files: their own layer, the last
	Layers            []LayerInfo
	Files             int   // regular files in the unpacked root
	Content           int64 // their bytes
}

// LayerInfo is one layer of an image.
type LayerInfo struct {
	Digest string
	Size   int64
}

func layerInfos(b *builtImage) []LayerInfo {
	var out []LayerInfo
	for _, l := range b.Layers {
		out = append(out, LayerInfo{Digest: l.Digest.String(), Size: l.Size})
	}
	return out
}

// WorkloadResult holds a workload's samples per mode.
type WorkloadResult struct {
	Workload Workload
	Image    string
	Opened   Opened
	Need     Need
	Modes    []*ModeResult
}

// ModeResult is one mode's samples.
type ModeResult struct {
	Mode, Title string
	Samples     []Sample
	Skipped     string // why the mode was not measured
	// FetchedOverNeeded is the median bytes fetched over the workload's
	// Need.Blocks, and FetchedOverFrames over Need.Frames (0: not
	// measured, or a mode that fetches nothing lazily); set by Write.
	FetchedOverNeeded float64 `json:",omitempty"`
	FetchedOverFrames float64 `json:",omitempty"`
}

// Sample is one measurement.
type Sample struct {
	Wall    time.Duration            // start to exit (of every phase)
	Phases  map[string]time.Duration `json:",omitempty"`
	Traffic Traffic                  // what the registry served
	Proxy   ProxyStats               // what crossed the delaying proxy
	Shared  *int64                   `json:",omitempty"` // sharing: bytes of the shared layer that A fetched and B fetched again
	// SharedNew is, for sharing, the bytes of the shared layer B fetched
	// that A had not (files only B reads).
	SharedNew int64 `json:",omitempty"`
	// Split is where the fetched bytes went against the workload's Need
	// (lazy modes, when the need was measured).
	Split *Split `json:",omitempty"`
	Err   string `json:",omitempty"`
}

// ScaleResult is n containers of one image started at once.
type ScaleResult struct {
	Workload   string
	Containers int
	Samples    []Sample
}

// SharingResult is image B started after image A, which shares its base
// layer, in one root.
type SharingResult struct {
	Mode    string // ModeCold or ModePull
	A, B    string
	Samples []Sample
}

// stats summarizes the successful samples.
type stats struct {
	n, failed         int
	wall, min, max    time.Duration
	bytes, reqs, dup  int64
	phases            map[string]time.Duration
	shared, sharedMax int64
	sharedNew         int64
	layerBytes        int64 // median bytes of the image's layer blobs (the rest: manifests, configs, indexes)
	hasShared         bool
	firstErr          string
	split             *Split // medians of each kind; nil when no sample has one
}

// summarize summarizes samples; layers are the digests of the image's
// layer blobs (may be nil).
func summarize(ss []Sample, layers ...string) stats {
	var st stats
	var walls []time.Duration
	var bytes, reqs, dup, shared, sharedNew, layerBytes []int64
	var splits [5][]int64
	phases := map[string][]time.Duration{}
	for _, s := range ss {
		if s.Err != "" {
			st.failed++
			if st.firstErr == "" {
				st.firstErr = s.Err
			}
			continue
		}
		walls = append(walls, s.Wall)
		bytes = append(bytes, s.Traffic.Bytes)
		reqs = append(reqs, int64(s.Traffic.Requests))
		dup = append(dup, s.Traffic.Dup)
		for k, v := range s.Phases {
			phases[k] = append(phases[k], v)
		}
		if s.Shared != nil {
			shared = append(shared, *s.Shared)
			sharedNew = append(sharedNew, s.SharedNew)
			st.hasShared = true
		}
		var lb int64
		for _, d := range layers {
			lb += s.Traffic.Blobs[d]
		}
		layerBytes = append(layerBytes, lb)
		if sp := s.Split; sp != nil {
			for i, v := range []int64{sp.NeededFrames, sp.OtherFrames, sp.TOCs, sp.Windows, sp.Other} {
				splits[i] = append(splits[i], v)
			}
		}
	}
	st.n = len(walls)
	if st.n == 0 {
		return st
	}
	st.wall, st.min, st.max = median(walls), slices.Min(walls), slices.Max(walls)
	st.bytes, st.reqs, st.dup = median(bytes), median(reqs), median(dup)
	st.phases = map[string]time.Duration{}
	for k, v := range phases {
		st.phases[k] = median(v)
	}
	if st.hasShared {
		st.shared, st.sharedMax, st.sharedNew = median(shared), slices.Max(shared), median(sharedNew)
	}
	st.layerBytes = median(layerBytes)
	if len(splits[0]) > 0 {
		st.split = &Split{NeededFrames: median(splits[0]), OtherFrames: median(splits[1]), TOCs: median(splits[2]), Windows: median(splits[3]), Other: median(splits[4])}
	}
	return st
}

// median returns the median (the mean of the middle two for an even count).
func median[T int64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Write writes results.md, results.json, chart.png and machine.txt.
func (res *Results) Write(dir string) error {
	for _, wr := range res.Workloads {
		for _, mr := range wr.Modes {
			mr.FetchedOverNeeded, mr.FetchedOverFrames = 0, 0
			if st := summarize(mr.Samples); st.n > 0 && needRatio(st.bytes, wr.Need, mr.Mode) != "" {
				mr.FetchedOverNeeded = float64(st.bytes) / float64(wr.Need.Blocks)
				mr.FetchedOverFrames = float64(st.bytes) / float64(wr.Need.Frames)
			}
		}
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "machine.txt"), []byte(res.machineText()), 0o644); err != nil {
		return err
	}
	chartErr := res.chart(filepath.Join(dir, "chart.png"))
	if chartErr != nil {
		res.Notes = append(res.Notes, "chart: "+chartErr.Error())
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(res.Markdown()), 0o644)
}

// Markdown renders the tables.
func (res *Results) Markdown() string {
	var b strings.Builder
	set := res.Settings
	fmt.Fprintf(&b, "# lazyfs benchmark, %s\n\n", res.Started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Link: %s, RTT %v (asked); measured: GET /v2/ on a new connection %v (≈ 2×RTT), one %s blob at %.1f Mbit/s. ",
		rateString(set.Rate), set.RTT, set.MeasuredGet.Round(100*time.Microsecond), "50 MB", set.MeasuredMbps)
	fmt.Fprintf(&b, "Medians of %d runs (min–max). Machine and settings: machine.txt; raw samples: results.json.\n\n", set.Runs)
	if len(res.Workloads) > 0 {
		b.WriteString("Wall time is from the client's start to the command's exit (for the full pulls: pull + run). " +
			"Fetched is the body bytes the registry served (manifests, configs, lazyfs indexes, layer bytes; the notes split layer bytes from the rest), requests every HTTP request it answered. " +
			"\"vs full pull\" is the wall time against lazyrun's full pull + run of the same run. " +
			"\"lazyfs mount\" runs no command: its time is from lazyfs mount's start until the mount point is mounted. " +
			"logs/ has every command's output and, for each measurement, its requests on a timeline (NNNN-…-requests.log).\n\n")
	}
	for _, wr := range res.Workloads {
		res.workloadMarkdown(&b, wr)
	}
	if len(res.Scale) > 0 {
		b.WriteString("## Scale: containers of one image started at once, cold cache (one root)\n\n")
		b.WriteString("| containers | wall until all exited | per container (median) | fetched | requests | bytes fetched twice |\n|---|---|---|---|---|---|\n")
		for _, sr := range res.Scale {
			st := summarize(sr.Samples)
			if st.n == 0 {
				fmt.Fprintf(&b, "| %d × %s | failed: %s | | | | |\n", sr.Containers, sr.Workload, mdEscape(st.firstErr))
				continue
			}
			fmt.Fprintf(&b, "| %d × %s | %s | %s | %s | %d | %s |\n", sr.Containers, sr.Workload, wallRange(st),
				secs(st.phases["container median"]), mb(st.bytes), st.reqs, mb(st.dup))
		}
		b.WriteString("\n\"Bytes fetched twice\": blob bytes served again in a range that overlaps one served before in the same measurement; zero means each frame was fetched once.\n\n")
	}
	if len(res.Sharing) > 0 {
		b.WriteString("## Layer sharing: image B after image A, same base layer blob, one root\n\n")
		b.WriteString("| mode | B after A | wall of B | fetched by B | requests | shared layer: bytes A fetched that B fetched again (median, max) | shared layer: bytes only B needed |\n|---|---|---|---|---|---|---|\n")
		for _, sh := range res.Sharing {
			st := summarize(sh.Samples)
			what := fmt.Sprintf("%s after %s", sh.B, sh.A)
			if st.n == 0 {
				fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | |\n", modeTitles[sh.Mode], what, mdEscape(st.firstErr))
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s, %s | %s |\n", modeTitles[sh.Mode], what, wallRange(st), mb(st.bytes), st.reqs,
				bytesExact(st.shared), bytesExact(st.sharedMax), mb(st.sharedNew))
		}
		b.WriteString("\nThe shared layer must never be fetched twice: the bytes image A fetched of it must not be fetched again for B. " +
			"Lazily, B may still need other parts of it (files A did not read).\n\n")
	}
	if res.FS != nil {
		res.FS.markdown(&b, res.Settings.Runs)
	}
	if res.Mem != nil {
		res.Mem.markdown(&b)
	}
	if len(res.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (res *Results) image(name string) *ImageInfo {
	for i := range res.Images {
		if res.Images[i].Name == name {
			return &res.Images[i]
		}
	}
	return nil
}

func (res *Results) workloadMarkdown(b *strings.Builder, wr *WorkloadResult) {
	w := wr.Workload
	fmt.Fprintf(b, "## %s: `%s`\n\n", w.Name, shellJoin(w.Cmd))
	if im := res.image(wr.Image); im != nil {
		var comp int64
		for _, l := range im.Layers {
			comp += l.Size
		}
		fmt.Fprintf(b, "Image bench/%s: %d layers, %s compressed; %s in %d files unpacked.", im.Name, len(im.Layers), mb(comp), mb(im.Content), im.Files)
		if wr.Opened.Err == "" {
			fmt.Fprintf(b, " The command opened %d of its files, %s (%.1f%%).", wr.Opened.Files, mb(wr.Opened.Bytes),
				100*float64(wr.Opened.Bytes)/float64(max(im.Content, 1)))
		} else {
			fmt.Fprintf(b, " Bytes the command read: not measured (%s).", mdEscape(wr.Opened.Err))
		}
		if n := wr.Need; n.Err == "" && n.Blocks > 0 {
			fmt.Fprintf(b, " Needed: it read %s of %d files (pages cached after a native run), held by **%s compressed** (deflate blocks), %s at lazyfs's frames (pro rata estimate %s).",
				mb(n.Read), n.Files, mb(n.Blocks), mb(n.Frames), mb(n.Estimate))
			if n.Touched > 0 {
				fmt.Fprintf(b, " With read-ahead off it touched %s, held by %s compressed (%s at frames).", mb(n.Touched), mb(n.TouchedBlocks), mb(n.TouchedFrames))
			}
		} else if n.Err != "" {
			fmt.Fprintf(b, " Compressed bytes needed: not measured (%s).", mdEscape(n.Err))
		}
		b.WriteString("\n\n")
	}
	var layers []string
	if im := res.image(wr.Image); im != nil {
		for _, l := range im.Layers {
			layers = append(layers, l.Digest)
		}
	}
	var base time.Duration
	for _, mr := range wr.Modes {
		if mr.Mode == ModePull {
			if st := summarize(mr.Samples); st.n > 0 {
				base = st.wall
			}
		}
	}
	b.WriteString("| mode | wall median (min–max) | vs full pull | fetched | fetched / needed (frames × beyond) | requests | notes |\n|---|---|---|---|---|---|---|\n")
	for _, mr := range wr.Modes {
		if mr.Skipped != "" && len(mr.Samples) == 0 {
			fmt.Fprintf(b, "| %s | not measured | | | | | %s |\n", mr.Title, mdEscape(mr.Skipped))
			continue
		}
		st := summarize(mr.Samples, layers...)
		if st.n == 0 {
			fmt.Fprintf(b, "| %s | failed | | | | | %s |\n", mr.Title, mdEscape(st.firstErr))
			continue
		}
		ratio := ""
		if base > 0 && mr.Mode != ModeMount { // mount runs no command: no like for like
			ratio = ratioString(st.wall.Seconds() / base.Seconds())
		}
		fetched, reqs := mb(st.bytes), fmt.Sprint(st.reqs)
		if mr.Mode == ModeNative {
			fetched, reqs = "–", "–"
		}
		var notes []string
		if mr.Mode == ModeMount {
			n := 0
			if im := res.image(wr.Image); im != nil {
				n = len(im.Layers)
			}
			layers := fmt.Sprintf("%d layers", n)
			if n == 1 {
				layers = "1 layer"
			}
			notes = append(notes, layers+": manifest, config, indexes, FUSE up (bar: < 0.5 s for two layers at 20 ms RTT)")
		}
		if p, ok := st.phases["pull"]; ok {
			notes = append(notes, fmt.Sprintf("pull %s + run %s", secs(p), secs(st.phases["run"])))
		}
		if mr.Mode != ModeNative && st.bytes > 0 {
			notes = append(notes, fmt.Sprintf("layers %s, the rest %s", mb(st.layerBytes), mb(st.bytes-st.layerBytes)))
		}
		if sp := st.split; sp != nil {
			notes = append(notes, fmt.Sprintf("in frames read %s, in other frames %s, index tocs %s, windows %s, other %s",
				mb(sp.NeededFrames), mb(sp.OtherFrames), mb(sp.TOCs), mb(sp.Windows), mb(sp.Other)))
		}
		if st.dup > 0 {
			notes = append(notes, fmt.Sprintf("%s fetched twice", mb(st.dup)))
		}
		if st.failed > 0 {
			notes = append(notes, fmt.Sprintf("%d of %d runs failed: %s", st.failed, st.failed+st.n, mdEscape(st.firstErr)))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", mr.Title, wallRange(st), ratio, fetched, needRatio(st.bytes, wr.Need, mr.Mode), reqs, strings.Join(notes, "; "))
	}
	b.WriteString("\n")
}

func wallRange(st stats) string {
	return fmt.Sprintf("%s (%s–%s)", secs(st.wall), secs(st.min), secs(st.max))
}

func secs(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func mb(n int64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func bytesExact(n int64) string {
	if n == 0 {
		return "0 B"
	}
	return fmt.Sprintf("%s (%d B)", mb(n), n)
}

func rateString(bps int64) string {
	switch {
	case bps <= 0:
		return "not shaped"
	case bps%1e9 == 0:
		return fmt.Sprintf("%d Gbit/s", bps/1e9)
	case bps%1e6 == 0:
		return fmt.Sprintf("%d Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%d bit/s", bps)
	}
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// shellJoin quotes args as a shell would need them.
func shellJoin(args []string) string {
	var out []string
	for _, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' ||
				r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) < 0 {
			out = append(out, a)
			continue
		}
		out = append(out, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	s := strings.Join(out, " ")
	return strings.ReplaceAll(strings.ReplaceAll(s, "\n", `\n`), "`", "'")
}

// ratioString shows a ratio with two significant digits below 0.1.
func ratioString(x float64) string {
	if x < 0.1 {
		return fmt.Sprintf("%.2g", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// needRatio is "fetched / needed (frames × beyond)": the bytes fetched
// over the compressed bytes the command needs, split into what whole
// frames cost (needed at frames over needed) and what was fetched beyond
// the frames read (fetched over needed at frames). Empty for modes that
// fetch nothing lazily or when the need was not measured.
func needRatio(fetched int64, n Need, mode string) string {
	if n.Err != "" || n.Blocks <= 0 || n.Frames <= 0 || fetched <= 0 || mode == ModeNative || mode == ModeRootfs || mode == ModeWarm || mode == ModeMount {
		return ""
	}
	return fmt.Sprintf("%.2f (%.2f × %.2f)", float64(fetched)/float64(n.Blocks), float64(n.Frames)/float64(n.Blocks), float64(fetched)/float64(n.Frames))
}
