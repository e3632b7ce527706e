// Package strictjson parses the JSON documents clients send (JWT claims
// and headers, Ethereum transactions, EIP-712 typed data) the strict way:
// bounded size and nesting, exactly one value, valid UTF-8 throughout
// (raw bytes and escaped surrogates alike), and no member name twice in
// any object, nor two that differ only by case. encoding/json silently keeps the last of two members of one
// name and passes invalid UTF-8 inside raw values through; parsers
// disagree on both, and a signing service must sign exactly what it
// checked. The checks are go-json-experiment's jsontext (the design behind
// Go's encoding/json/v2), which applies them by default. Encode writes
// checked members back as one object, copying the values.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// MaxDepth bounds the nesting of objects and arrays in a document.
const MaxDepth = 32

// Check validates one whole JSON document of at most max bytes: see the
// package comment. Its errors are InvalidArgument, prefixed with what.
func Check(what string, data []byte, max int) error {
	if len(data) > max {
		return errs.New(errs.InvalidArgument, "%s: %d bytes, at most %d", what, len(data), max)
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	var names []map[string]bool // per open object: its member names, case-folded
	for done := false; ; {
		tok, err := dec.ReadToken()
		if err == nil {
			if names, err = foldedNames(dec, tok, names); err != nil {
				return errs.New(errs.InvalidArgument, "%s: %v", what, err)
			}
		}
		switch {
		case errors.Is(err, io.EOF) && done:
			return nil
		case errors.Is(err, io.EOF):
			return errs.New(errs.InvalidArgument, "%s: no JSON value", what)
		case err != nil:
			return errs.New(errs.InvalidArgument, "%s: %s", what, strings.TrimPrefix(err.Error(), "jsontext: "))
		case done:
			return errs.New(errs.InvalidArgument, "%s: more than one JSON value", what)
		case dec.StackDepth() > MaxDepth:
			return errs.New(errs.InvalidArgument, "%s: nested deeper than %d", what, MaxDepth)
		}
		done = dec.StackDepth() == 0
	}
}

// foldedNames tracks the member names of the open objects and refuses a
// name equal to another of its object but for case: encoding/json (and
// so go-ethereum's types) matches names case-insensitively, so
// {"address":a,"Address":b} would be checked as one document and decoded
// as another.
func foldedNames(dec *jsontext.Decoder, tok jsontext.Token, names []map[string]bool) ([]map[string]bool, error) {
	switch tok.Kind() {
	case '{':
		return append(names, map[string]bool{}), nil
	case '}':
		return names[:len(names)-1], nil
	case '"':
		kind, n := dec.StackIndex(dec.StackDepth())
		if kind != '{' || n%2 == 0 { // a value, not a member name
			return names, nil
		}
		folded := strings.ToLower(strings.ToUpper(tok.String()))
		if names[len(names)-1][folded] {
			return names, fmt.Errorf("member %q repeats another name but for case", tok.String())
		}
		names[len(names)-1][folded] = true
	}
	return names, nil
}

// Object parses a JSON object of at most max bytes that passes Check.
func Object(what string, data []byte, max int) (map[string]json.RawMessage, error) {
	if err := Check(what, data, max); err != nil {
		return nil, err
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(data, &out); err != nil || out == nil {
		return nil, errs.New(errs.InvalidArgument, "%s: must be a JSON object", what)
	}
	return out, nil
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
