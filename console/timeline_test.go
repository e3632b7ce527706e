package console

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// A scheduled JWT key's timeline: each generation's spans in the order
// its life took them, inside the picture; now, the next rotation's
// marks and the JWK Set cache window where the clock puts them.
func TestTimelineLayout(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(h int) *timestamppb.Timestamp { return timestamppb.New(now.Add(time.Duration(h) * time.Hour)) }
	k := &sigilv1.Key{Id: "auth", JwtPolicy: &sigilv1.JWTPolicy{JwksMaxAge: durationpb.New(2 * time.Hour)},
		NextPublishTime: at(20), NextActivateTime: at(44),
		Generations: []*sigilv1.Generation{
			{Generation: 1, State: "retired", PublishTime: at(-200), ActivatedTime: at(-200), RetiringTime: at(-32), UnpublishTime: at(-30), RetiredTime: at(-30), DestroyTime: at(130)},
			{Generation: 2, State: "active", PublishTime: at(-56), ActivatedTime: at(-32)},
		}}
	tl := timelineOf(k, now)
	if len(tl.Rows) != 2 || tl.Window == nil || len(tl.Marks) != 2 {
		t.Fatalf("timeline %+v", tl)
	}
	classes := func(r Row) (out []string) {
		for _, s := range r.Spans {
			if s.X < tlLeft || s.X+s.W > tlWidth || s.W < 1 {
				t.Errorf("%s: span %+v outside the picture", r.Label, s)
			}
			out = append(out, s.Class)
		}
		return out
	}
	if got := classes(tl.Rows[0]); len(got) != 3 || got[0] != "active" || got[1] != "retiring" || got[2] != "retired" {
		t.Errorf("g1's spans %v", got)
	}
	if got := classes(tl.Rows[1]); len(got) != 3 || got[0] != "pending" || got[1] != "active" || got[2] != "predicted" {
		t.Errorf("g2's spans %v", got)
	}
	g2 := tl.Rows[1].Spans
	if g2[1].X+g2[1].W != tl.Now || g2[2].X != tl.Now || tl.Window.X != tl.Now || !(tl.Marks[0].X < tl.Marks[1].X) || tl.Marks[1].X != g2[2].X+g2[2].W {
		t.Errorf("now at %d, g2 %+v, window %+v, marks %+v", tl.Now, g2, tl.Window, tl.Marks)
	}
}
