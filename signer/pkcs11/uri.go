package pkcs11

import (
	"net/url"
	"strings"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// URI is the part of an RFC 7512 PKCS#11 URI that names a key in a token:
// pkcs11:token=sigil;object=auth-jwt.g3;id=%01%02
//
// Parsing is hand-written: the one maintained Go parser (smallstep/crypto
// kms/uri) would pull a whole KMS framework in for forty lines.
type URI struct {
	Token  string // CKA_LABEL of the token
	Object string // CKA_LABEL of the key objects
	ID     []byte // CKA_ID of the key objects; empty matches any
}

// ignoredAttrs are RFC 7512 path attributes that may appear in a reference
// but do not narrow the search beyond token and object.
var ignoredAttrs = map[string]bool{
	"type": true, "manufacturer": true, "model": true, "serial": true,
	"library-manufacturer": true, "library-description": true, "library-version": true,
	"slot-manufacturer": true, "slot-description": true, "slot-id": true,
}

// ParseURI parses a PKCS#11 URI naming a key. A URI with a PIN in its query
// is refused: PINs come from the backend's configuration only.
func ParseURI(s string) (URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference must start with pkcs11:")
	}
	path, query, _ := strings.Cut(rest, "?")
	if strings.Contains(query, "pin-") {
		return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference must not carry a PIN")
	}
	var u URI
	seen := map[string]bool{}
	for attr := range strings.SplitSeq(path, ";") {
		if attr == "" {
			continue
		}
		name, raw, ok := strings.Cut(attr, "=")
		if !ok {
			return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference: attribute %q has no value", name)
		}
		if seen[name] {
			return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference: attribute %q repeated", name)
		}
		seen[name] = true
		val, err := url.PathUnescape(raw)
		if err != nil {
			return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference: attribute %q: bad percent-encoding", name)
		}
		switch {
		case name == "token":
			u.Token = val
		case name == "object":
			u.Object = val
		case name == "id":
			u.ID = []byte(val)
		case !ignoredAttrs[name] && !strings.Contains(name, "-"):
			return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference: unknown attribute %q", name)
		}
	}
	if u.Object == "" && len(u.ID) == 0 {
		return URI{}, errs.New(errs.InvalidArgument, "PKCS#11 reference names no object (want object= or id=)")
	}
	return u, nil
}

// String formats u; ParseURI(u.String()) equals u.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString("pkcs11:")
	sep := ""
	add := func(name, val string, all bool) {
		b.WriteString(sep + name + "=" + escape(val, all))
		sep = ";"
	}
	if u.Token != "" {
		add("token", u.Token, false)
	}
	if u.Object != "" {
		add("object", u.Object, false)
	}
	if len(u.ID) > 0 {
		add("id", string(u.ID), true)
	}
	return b.String()
}

// escape percent-encodes s for a URI path attribute value: everything but
// RFC 3986 unreserved characters, or every byte when all is set (ids).
func escape(s string, all bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !all && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
