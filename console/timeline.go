package console

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Timeline is a key's rotation timeline, laid out for an SVG picture:
// a row per generation (the newest few) with its spans in each state,
// a line at now, the next rotation's marks, and the window a relying
// party's cached JWK Set may lag by (now + the JWK Set's max-age).
type Timeline struct {
	Width, Height int
	Rows          []Row
	Now           int // x of now
	Marks         []Mark
	Window        *Span // the JWK Set cache window; nil for a key without one
	Ticks         []Mark
}

// Row is one generation's line.
type Row struct {
	Y, LabelY int
	Label     string
	Spans     []Span
}

// Span is a stretch of time drawn as a bar: its class says the state
// (pending, active, retiring, retired, revoked; "predicted" for what the
// schedule will do).
type Span struct {
	X, W, Y, H int
	Class      string
	Title      string
}

// Mark is an instant: a vertical line with a label, anchored at its
// start, or its end near the right edge.
type Mark struct {
	X      int
	Label  string
	Anchor string
}

// Layout of the picture, in SVG user units.
const (
	tlWidth   = 800
	tlLeft    = 70 // room for the row labels
	tlRowH    = 26
	tlBarH    = 16
	tlTop     = 28 // room for the marks' labels
	tlMaxRows = 6
)

// timelineOf lays out key k's timeline at now.
func timelineOf(k *sigilv1.Key, now time.Time) *Timeline {
	gens := k.GetGenerations()
	if len(gens) > tlMaxRows {
		gens = gens[len(gens)-tlMaxRows:]
	}
	var maxAge time.Duration
	if p := k.GetJwtPolicy(); p != nil {
		maxAge = p.GetJwksMaxAge().AsDuration()
	}
	start, end := now, now.Add(max(maxAge, time.Hour))
	for _, g := range gens {
		for _, t := range spanTimes(g) {
			start, end = minTime(start, t), maxTime(end, t)
		}
	}
	next := k.GetNextActivateTime()
	if next.IsValid() {
		end = maxTime(end, next.AsTime())
	}
	end = end.Add(end.Sub(start) / 20) // a margin after the last instant
	x := func(t time.Time) int {
		return tlLeft + int(float64(tlWidth-tlLeft-10)*float64(t.Sub(start))/float64(end.Sub(start)))
	}
	tl := &Timeline{Width: tlWidth, Height: tlTop + tlRowH*len(gens) + 24, Now: x(now)}
	for i, g := range gens {
		y := tlTop + i*tlRowH
		row := Row{Y: y, LabelY: y + tlBarH - 3, Label: fmt.Sprintf("g%d", g.GetGeneration())}
		for _, s := range spansOf(g, now, next) {
			s.from, s.to = maxTime(s.from, start), minTime(s.to, end)
			if !s.to.After(s.from) {
				continue
			}
			row.Spans = append(row.Spans, Span{X: x(s.from), W: max(1, x(s.to)-x(s.from)), Y: y, H: tlBarH, Class: s.class,
				Title: fmt.Sprintf("g%d %s %s – %s", g.GetGeneration(), s.class, stamp(s.from), stamp(s.to))})
		}
		tl.Rows = append(tl.Rows, row)
	}
	if p := k.GetNextPublishTime(); p.IsValid() {
		tl.Marks = append(tl.Marks, Mark{X: x(p.AsTime()), Label: "next published " + stamp(p.AsTime())})
	}
	if next.IsValid() {
		tl.Marks = append(tl.Marks, Mark{X: x(next.AsTime()), Label: "next signs " + stamp(next.AsTime())})
	}
	if maxAge > 0 {
		tl.Window = &Span{X: x(now), W: max(1, x(now.Add(maxAge))-x(now)), Y: tlTop - 4, H: tlRowH*len(gens) + 4, Class: "window",
			Title: fmt.Sprintf("JWK Set max-age %v: a relying party's cached set may lag until %s", maxAge, stamp(now.Add(maxAge)))}
	}
	tl.Ticks = []Mark{{X: tlLeft, Label: stamp(start), Anchor: "start"}, {X: tlWidth - 10, Label: stamp(end), Anchor: "end"}}
	for i := range tl.Marks {
		tl.Marks[i].Anchor = "start"
		if tl.Marks[i].X > tlWidth*2/3 {
			tl.Marks[i].Anchor = "end"
		}
	}
	return tl
}

// span is a generation's stretch of time in one state.
type span struct {
	class    string
	from, to time.Time
}

// spansOf are generation g's spans, from the times its record holds;
// one still going runs to the next rotation (an active generation's,
// predicted) or to now.
func spansOf(g *sigilv1.Generation, now time.Time, next *timestamppb.Timestamp) []span {
	t := func(ts *timestamppb.Timestamp) time.Time {
		if ts.IsValid() {
			return ts.AsTime()
		}
		return time.Time{}
	}
	published, activated, retiring, unpublish := t(g.GetPublishTime()), t(g.GetActivatedTime()), t(g.GetRetiringTime()), t(g.GetUnpublishTime())
	retired, revoked, destroy := t(g.GetRetiredTime()), t(g.GetRevokeTime()), t(g.GetDestroyTime())
	var out []span
	if !published.IsZero() {
		pendingEnd := firstSet(activated, revoked, t(g.GetActivateTime()), now)
		out = append(out, span{"pending", published, pendingEnd})
	}
	if !activated.IsZero() {
		activeEnd := firstSet(retiring, revoked)
		if activeEnd.IsZero() {
			out = append(out, span{"active", activated, now})
			if next.IsValid() {
				out = append(out, span{"predicted", now, next.AsTime()})
			}
		} else {
			out = append(out, span{"active", activated, activeEnd})
		}
	}
	if !retiring.IsZero() {
		out = append(out, span{"retiring", retiring, firstSet(retired, revoked, unpublish)})
	}
	if !retired.IsZero() {
		out = append(out, span{"retired", retired, firstSet(destroy, now)})
	}
	if !revoked.IsZero() {
		out = append(out, span{"revoked", revoked, firstSet(destroy, now)})
	}
	return out
}

// spanTimes are the instants of g's record.
func spanTimes(g *sigilv1.Generation) []time.Time {
	var out []time.Time
	for _, ts := range []*timestamppb.Timestamp{g.GetPublishTime(), g.GetActivatedTime(), g.GetActivateTime(), g.GetRetiringTime(), g.GetUnpublishTime(), g.GetRetiredTime(), g.GetRevokeTime()} {
		if ts.IsValid() {
			out = append(out, ts.AsTime())
		}
	}
	return out
}

// firstSet is the first of ts that is not zero.
func firstSet(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }
