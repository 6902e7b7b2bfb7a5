package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/docker/go-units"
	"github.com/mattn/go-runewidth"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

// docker history's formats, with lazyfs's two columns at the end.
const (
	historyTableFormat         = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}\t{{.Lazy}}\t{{.Cached}}"
	historyNonHumanTableFormat = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}\t{{.Lazy}}\t{{.Cached}}"
	historyQuietFormat         = "{{.ID}}"
	createdByWidth             = 45 // docker truncates CREATED BY to this display width
)

// historyHeaders name the fields a --format template may use, as the
// header of a "table" format shows them.
var historyHeaders = map[string]string{
	"ID":           "IMAGE",
	"CreatedSince": "CREATED",
	"CreatedAt":    "CREATED AT",
	"CreatedBy":    "CREATED BY",
	"Size":         "SIZE",
	"Comment":      "COMMENT",
	"Lazy":         "LAZY",
	"Cached":       "CACHED",
}

func newHistoryCommand(g *cli.Globals) *cobra.Command {
	var (
		noTrunc, quiet, human bool
		format                string
	)
	cmd := &cobra.Command{
		Use:   "history [OPTIONS] IMAGE",
		Short: "Show how an image was made, layer by layer, and how lazily each layer is served",
		Long: `Lists the image's history, newest first, as docker history does: IMAGE is the
image ID on the top row and <missing> below it (as for any pulled image),
CREATED BY the command that made the entry, SIZE the layer's uncompressed
size (0B for an entry that made no layer; the compressed size of the blob
when no index of the layer is known).

Two columns are lazyfs's own. LAZY is "yes" when the layer has an index, here
or in the registry, so that its files are fetched as they are read; "pull"
when it has none (the first run streams the whole layer once to build one);
"no" when its format cannot be read in pieces (zstd); N/A when the registry
did not answer and there is no index here. CACHED is how much of the layer's
uncompressed bytes the cache holds.

With the registry away, an image this root has pulled or run is shown as
recorded. --format takes a Go template over .ID, .CreatedSince, .CreatedAt,
.CreatedBy, .Size, .Comment, .Lazy and .Cached; "table " before it adds a
header and aligns the columns.`,
		Args: cli.ExactArgs(1, "one image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if _, err := runtime.ParseImageName(ref); err != nil {
				return cli.UsageError{Err: err}
			}
			if format == "" || format == "table" {
				switch {
				case quiet:
					format = historyQuietFormat
				case human:
					format = historyTableFormat
				default:
					format = historyNonHumanTableFormat
				}
			}
			tmpl, table, err := parseHistoryFormat(format)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			h, err := rt.History(cmd.Context(), ref)
			if errors.Is(err, fetch.ErrNotFound) {
				return fmt.Errorf("no such image: %s", ref)
			}
			if err != nil {
				return err
			}
			rows := historyRows(h, historyOptions{noTrunc: noTrunc, human: human, since: timeSince})
			return writeHistory(g.Stdout, tmpl, table, rows)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&noTrunc, "no-trunc", false, "don't truncate output")
	f.BoolVarP(&human, "human", "H", true, "print sizes and dates in human readable format")
	f.BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	f.StringVar(&format, "format", "", "format output using a Go template (\"table\" for the default table)")
	return cmd
}

type historyOptions struct {
	noTrunc, human bool
	since          func(time.Time) time.Duration // time.Since, or a test's clock
}

// historyRows turns h into one row per history entry, newest first, each a
// map from field name to what the column shows.
func historyRows(h *runtime.ImageHistory, o historyOptions) []map[string]string {
	var rows []map[string]string
	for i := len(h.Entries) - 1; i >= 0; i-- {
		e := h.Entries[i]
		id := "<missing>"
		if i == len(h.Entries)-1 {
			id = historyID(h.Image.Manifest.Config.Digest, o.noTrunc)
		}
		createdBy := strings.ReplaceAll(e.CreatedBy, "\t", " ")
		if !o.noTrunc {
			createdBy = ellipsis(createdBy, createdByWidth)
		}
		row := map[string]string{
			"ID":        id,
			"CreatedAt": formatCreated(e.Created, 0, false),
			"CreatedBy": createdBy,
			"Comment":   e.Comment,
			"Size":      formatSize(0, o.human),
			"Lazy":      "-",
			"Cached":    "-",
		}
		row["CreatedSince"] = row["CreatedAt"]
		if o.human && !e.Created.IsZero() {
			row["CreatedSince"] = formatCreated(e.Created, o.since(e.Created), true)
		}
		if l := e.Layer; l != nil {
			row["Size"] = formatSize(l.Size, o.human)
			row["Lazy"] = formatLazy(l.Lazy)
			row["Cached"] = formatCached(l, o.human)
		}
		rows = append(rows, row)
	}
	return rows
}

// historyID is the image ID as docker shows it: 12 hex digits, or the
// whole digest with --no-trunc.
func historyID(d digest.Digest, noTrunc bool) string {
	if noTrunc {
		return d.String()
	}
	return cli.ShortDigest(d)
}

// formatCreated writes a creation time as docker history does: "2 hours
// ago" (age is how long ago) when human, else RFC 3339 in local time.
// An unknown time is "N/A".
func formatCreated(created time.Time, age time.Duration, human bool) string {
	switch {
	case created.IsZero():
		return "N/A"
	case human:
		return units.HumanDuration(age) + " ago"
	}
	return created.Local().Format(time.RFC3339)
}

// formatSize writes n as docker history does: decimal units with three
// significant digits ("4.26MB", "0B") when human, else bytes.
func formatSize(n int64, human bool) string {
	if human {
		return units.HumanSizeWithPrecision(float64(n), 3)
	}
	return strconv.FormatInt(n, 10)
}

// formatLazy writes a layer's laziness for the LAZY column.
func formatLazy(l runtime.Laziness) string {
	if l == runtime.LazyUnknown {
		return "N/A"
	}
	return string(l)
}

// formatCached writes how much of a layer the cache holds: bytes, and
// their share of the layer's uncompressed size, rounded down (so 100%
// means all of it), when that size is known.
func formatCached(l *runtime.HistoryLayer, human bool) string {
	if !l.Indexed {
		return formatSize(l.Cached, human)
	}
	pct := int64(100)
	if l.Size > 0 {
		pct = l.Cached * 100 / l.Size
	}
	return fmt.Sprintf("%s (%d%%)", formatSize(l.Cached, human), pct)
}

// ellipsis cuts s to at most width columns of display, the last being
// "…", as docker's formatter does.
func ellipsis(s string, width int) string {
	if runewidth.StringWidth(s) <= width {
		return s
	}
	var b strings.Builder
	w := 0
	for _, r := range s {
		rw := runewidth.RuneWidth(r)
		if w+rw > width-1 {
			break
		}
		b.WriteRune(r)
		w += rw
	}
	return b.String() + "…"
}

// parseHistoryFormat parses a --format value: "table " before a template
// asks for a header and aligned columns; `\t` and `\n` stand for a tab and
// a newline, as in docker's formats.
func parseHistoryFormat(format string) (tmpl *template.Template, table bool, err error) {
	if rest, ok := strings.CutPrefix(format, "table "); ok {
		format, table = rest, true
	}
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(strings.TrimSpace(format))
	tmpl, err = template.New("history").Option("missingkey=error").Parse(format)
	if err != nil {
		return nil, false, fmt.Errorf("--format: %w", err)
	}
	if err := tmpl.Execute(io.Discard, historyHeaders); err != nil {
		return nil, false, fmt.Errorf("--format: %w", err)
	}
	return tmpl, table, nil
}

// writeHistory writes one line per row through tmpl; a table gets the
// header line first and its columns aligned as docker aligns them.
func writeHistory(out io.Writer, tmpl *template.Template, table bool, rows []map[string]string) error {
	var buf bytes.Buffer
	lines := rows
	if table {
		lines = append([]map[string]string{historyHeaders}, rows...)
	}
	for _, r := range lines {
		if err := tmpl.Execute(&buf, r); err != nil {
			return err
		}
		buf.WriteByte('\n')
	}
	if !table {
		_, err := buf.WriteTo(out)
		return err
	}
	w := tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)
	if _, err := buf.WriteTo(w); err != nil {
		return err
	}
	return w.Flush()
}
