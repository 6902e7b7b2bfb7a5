package bench

import (
	"fmt"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chartColors are the modes' bar colours.
var chartColors = map[string]color.Color{
	ModePull:    color.RGBA{R: 0x44, G: 0x44, B: 0x44, A: 0xff},
	ModePodman:  color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff},
	ModeCold:    color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	ModeProfile: color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	ModeWarm:    color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	ModeNative:  color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	ModeMount:   color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
}

// chart draws the median wall time per workload and mode as grouped bars,
// each labelled with its value, into a PNG.
func (res *Results) chart(path string) error {
	if len(res.Workloads) == 0 {
		return nil
	}
	p := plot.New()
	title := "Time to the command's exit"
	if slices.Contains(res.Settings.Modes, ModeMount) {
		title += " (mount: until mounted)"
	}
	p.Title.Text = fmt.Sprintf("%s (median of %d; link %s, RTT %v)", title, res.Settings.Runs, rateString(res.Settings.Rate), res.Settings.RTT)
	p.Y.Label.Text = "seconds"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	var names []string
	for _, wr := range res.Workloads {
		names = append(names, wr.Workload.Name)
	}
	modes := res.Settings.Modes
	w := vg.Points(min(14, 300/float64(len(modes)*len(names))))
	for i, m := range modes {
		vals := make(plotter.Values, len(res.Workloads))
		var xys plotter.XYs
		var labels []string
		for j, wr := range res.Workloads {
			for _, mr := range wr.Modes {
				if mr.Mode != m {
					continue
				}
				if st := summarize(mr.Samples); st.n > 0 {
					vals[j] = st.wall.Seconds()
					xys = append(xys, plotter.XY{X: float64(j), Y: st.wall.Seconds()})
					labels = append(labels, shortSecs(st.wall.Seconds()))
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = chartColors[m]
		bars.LineStyle.Width = 0
		off := (float64(i) - float64(len(modes)-1)/2) * float64(w)
		bars.Offset = vg.Length(off)
		p.Add(bars)
		p.Legend.Add(modeTitles[m], bars)
		if len(xys) > 0 {
			lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
			if err != nil {
				return err
			}
			for k := range lab.TextStyle {
				lab.TextStyle[k].Font.Size = vg.Points(7)
				lab.TextStyle[k].XAlign = -0.5
			}
			lab.Offset = vg.Point{X: vg.Length(off), Y: vg.Points(2)}
			p.Add(lab)
		}
	}
	p.NominalX(names...)
	p.Y.Max *= 1.08 // room for the labels
	return p.Save(11*vg.Inch, 5.5*vg.Inch, path)
}

func shortSecs(s float64) string {
	switch {
	case s >= 10:
		return fmt.Sprintf("%.0f", s)
	case s >= 1:
		return fmt.Sprintf("%.1f", s)
	default:
		return fmt.Sprintf("%.2f", s)
	}
}
