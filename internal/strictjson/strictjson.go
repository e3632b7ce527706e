// Package strictjson parses the JSON objects clients send (JWT claims and
// headers, Ethereum transactions) the strict way: bounded size, an object
// and nothing else, and no member name twice. encoding/json silently keeps
// the last of two members of one name; parsers disagree on that, and a
// signing service must sign exactly what it checked. Encode writes such
// members back as one object, copying the checked values.
package strictjson

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Object parses a JSON object of at most max bytes. Duplicate member
// names are refused: parsers disagree on which one wins, and a verifier
// must see the claims Sigil checked.
func Object(what string, data []byte, max int) (map[string]json.RawMessage, error) {
	if len(data) > max {
		return nil, errs.New(errs.InvalidArgument, "%s: %d bytes, at most %d", what, len(data), max)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(data, &out); err != nil || out == nil {
		return nil, errs.New(errs.InvalidArgument, "%s: must be a JSON object", what)
	}
	if len(out) > 0 && topLevelCommas(data)+1 != len(out) {
		return nil, errs.New(errs.InvalidArgument, "%s: a member name appears twice", what)
	}
	return out, nil
}

// topLevelCommas counts the commas between the members of a valid JSON
// object, so that members lost to duplicate names can be noticed
// (encoding/json keeps the last one silently). Hand-written because no
// library in use reports duplicates; data has already been validated.
func topLevelCommas(data []byte) int {
	n, depth, inString, escaped := 0, 0, false, false
	for _, c := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString:
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ',' && depth == 1:
			n++
		}
	}
	return n
}

// Encode writes an object of members in name order. The values must be
// valid JSON, as Object returns them: they are copied, not re-encoded as
// json.Marshal would (which costs as much again as the parse).
func Encode(members map[string]json.RawMessage) []byte {
	names := slices.Sorted(maps.Keys(members))
	out := make([]byte, 0, 256)
	out = append(out, '{')
	for i, name := range names {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, String(name)...)
		out = append(out, ':')
		out = append(out, bytes.TrimSpace(members[name])...)
	}
	return append(out, '}')
}

// String is s as a JSON string. Member names are almost always
// printable ASCII with nothing to escape (RFC 8259 §7), which are
// quoted as they are; json.Marshal, for the rest, was a quarter of the
// CPU that minting a JWT adds to its signature.
func String(s string) json.RawMessage {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return quoted
		}
	}
	return json.RawMessage(`"` + s + `"`)
}
