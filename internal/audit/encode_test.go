package audit

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The hand-written encoding of a record's line is encoding/json's, byte
// for byte (the chain's hashes are over those bytes, and every reader
// parses them with encoding/json): over records of every field set and
// unset, strings holding quotes, HTML, control characters, U+2028,
// invalid UTF-8 and other scripts, and latencies of every magnitude.
func TestEncodeEntryIsEncodingJSONs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", `"`, `\`, "<a&b>", "\x00", "\x1f", "\b\f\n\r\t", "\u2028", "\u2029", "\xff", "\xe2\x80", "é", "日本", "\U0001F600", "spiffe://example.org/x", "0x3535"}
	str := func() string {
		var b []byte
		for range rng.IntN(4) {
			b = append(b, pieces[rng.IntN(len(pieces))]...)
		}
		return string(b)
	}
	strs := func() []string {
		if rng.IntN(3) == 0 {
			return nil
		}
		out := make([]string, rng.IntN(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	floats := []float64{0, 0.001, 0.25, 1, 12.5, 1e-7, 3.4e-9, 1e21, 1.5e300, -2.5, 123456.789, math.SmallestNonzeroFloat64}
	for i := range 20000 {
		r := &Record{Time: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("z", rng.IntN(3)*3600)), RequestID: str(), Identity: str(),
			Identities: strs(), Operation: str(), Method: str(), KeyID: str(), Namespace: str(), Generation: rng.IntN(3) - 1,
			Outcome: str(), Code: str(), Reason: str(), LatencyMS: floats[rng.IntN(len(floats))], PayloadSHA256: str(),
			RequestBytes: rng.IntN(2) * rng.IntN(1<<20), Peer: str(), ApprovalID: str(), TraceID: str(), ApprovedBy: strs(),
			RequestSHA256: str(), IdentitiesTotal: rng.IntN(2) * 7}
		if rng.IntN(3) == 0 {
			r.InvalidKeyID = &Digest{Length: rng.IntN(300), SHA256: str()}
		}
		if rng.IntN(3) == 0 {
			r.Details = map[string]string{}
			for range rng.IntN(4) {
				r.Details[str()] = str()
			}
		}
		e := entry{Seq: rng.Uint64(), Prev: str(), Record: r}
		got, err := encodeEntry(e)
		want, werr := marshalEntry(e)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := encodeEntry(entry{Record: &Record{LatencyMS: f}}); err == nil {
			t.Errorf("a latency of %v was encoded", f)
		}
	}
	own := entry{Seq: 1, Record: &Record{Operation: opCheckpoint}, Checkpoint: &Checkpoint{}}
	got, _ := encodeEntry(own)
	want, _ := marshalEntry(own)
	if !bytes.Equal(got, want) {
		t.Fatalf("Sigil's own entry: %s, want %s", got, want)
	}
}
