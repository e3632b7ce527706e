package audit

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// encodeEntry is e as encoding/json writes it (HTML not escaped), without
// the newline: for an entry that is a record alone, the common one, it is
// written out by hand, byte for byte as encoding/json would (a test holds
// the two to that), at a fraction of reflection's cost, which every
// request pays; Sigil's own entries go through encoding/json.
func encodeEntry(e entry) ([]byte, error) {
	r := e.Record
	if r == nil || e.FileStart != nil || e.Checkpoint != nil || e.Evidence != nil || e.Tamper != nil {
		return marshalEntry(e)
	}
	b := make([]byte, 0, 512)
	b = strconv.AppendUint(append(b, `{"seq":`...), e.Seq, 10)
	b = appendJSONString(append(b, `,"prev":`...), e.Prev)
	b = append(b, `,"time":`...)
	t, err := r.Time.MarshalJSON()
	if err != nil {
		return nil, err
	}
	b = append(b, t...)
	b = optString(b, "request_id", r.RequestID)
	b = optString(b, "identity", r.Identity)
	b = optStrings(b, "identities", r.Identities)
	b = appendJSONString(append(b, `,"operation":`...), r.Operation)
	b = optString(b, "method", r.Method)
	b = optString(b, "key_id", r.KeyID)
	b = optString(b, "namespace", r.Namespace)
	if d := r.InvalidKeyID; d != nil {
		b = strconv.AppendInt(append(b, `,"invalid_key_id":{"length":`...), int64(d.Length), 10)
		b = append(appendJSONString(append(b, `,"sha256":`...), d.SHA256), '}')
	}
	b = optInt(b, "generation", r.Generation)
	b = appendJSONString(append(b, `,"outcome":`...), r.Outcome)
	b = appendJSONString(append(b, `,"code":`...), r.Code)
	b = optString(b, "reason", r.Reason)
	if r.LatencyMS != 0 {
		if math.IsNaN(r.LatencyMS) || math.IsInf(r.LatencyMS, 0) {
			return marshalEntry(e) // which refuses it, as it always did
		}
		b = appendJSONFloat(append(b, `,"latency_ms":`...), r.LatencyMS)
	}
	b = optString(b, "payload_sha256", r.PayloadSHA256)
	b = optInt(b, "request_bytes", r.RequestBytes)
	b = optString(b, "peer", r.Peer)
	b = optString(b, "approval_id", r.ApprovalID)
	b = optString(b, "trace_id", r.TraceID)
	b = optStrings(b, "approved_by", r.ApprovedBy)
	b = optString(b, "request_sha256", r.RequestSHA256)
	b = optInt(b, "identities_total", r.IdentitiesTotal)
	if len(r.Details) > 0 {
		b = append(b, `,"details":{`...)
		for i, k := range slices.Sorted(maps.Keys(r.Details)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(append(appendJSONString(b, k), ':'), r.Details[k])
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// marshalEntry is encoding/json's encoding of e, HTML not escaped.
func marshalEntry(e entry) ([]byte, error) {
	var buf jsonBuffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return buf.b[:len(buf.b)-1], nil // the encoder's newline
}

type jsonBuffer struct{ b []byte }

func (w *jsonBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func optString(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(append(append(b, ',', '"'), name...), '"', ':'), v)
}

func optInt(b []byte, name string, v int) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(append(append(b, ',', '"'), name...), '"', ':'), int64(v), 10)
}

func optStrings(b []byte, name string, vs []string) []byte {
	if len(vs) == 0 {
		return b
	}
	b = append(append(append(b, ',', '"'), name...), '"', ':', '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v)
	}
	return append(b, ']')
}

// appendJSONFloat writes f as encoding/json does: the shortest decimal,
// in exponent form below 1e-6 and from 1e21, with a two-digit exponent
// cleaned of its padding zero.
func appendJSONFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s quoted as encoding/json does with HTML not
// escaped: quote and backslash escaped, \b \f \n \r \t by name, other
// control characters, U+2028 and U+2029 as \u, invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(append(b, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(b, s[start:]...), '"')
}
