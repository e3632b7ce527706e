// Package identity names mTLS clients by typed identities, so that no
// certificate can pass for another: a URI SAN, a DNS SAN and a subject CN
// live in separate namespaces, and a CN that reads "spiffe://t/admin" is
// the identity cn:spiffe://t/admin, never the URI spiffe://t/admin.
//
// The spellings are the policy file's (CONFIG.md): a URI SAN is written as
// itself (scheme://…), a DNS SAN as dns:NAME, a subject CN as cn:NAME. A
// policy names identities through a Pattern: one typed identity, or every
// SPIFFE ID below a trust domain or path (spiffe://example.org/*).
//
// It is internal: the policy file is the contract.
package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Kind says which part of a certificate an identity comes from.
type Kind uint8

// The kinds.
const (
	URI Kind = iota + 1 // a URI SAN of the form scheme://…
	DNS                 // a DNS SAN
	CN                  // the subject common name
)

// Prefixes that type a DNS SAN and a subject CN in the policy's spelling.
const (
	DNSPrefix = "dns:"
	CNPrefix  = "cn:"
)

// ID is one typed identity of a client.
type ID struct {
	Kind Kind
	Name string
}

// String spells id as the policy file does.
func (id ID) String() string {
	switch id.Kind {
	case DNS:
		return DNSPrefix + id.Name
	case CN:
		return CNPrefix + id.Name
	}
	return id.Name
}

// Strings spells each of ids.
func Strings(ids []ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// Brief spells at most four of ids, each cut to 128 bytes, and says how
// many more there were: what logs and audit records carry, so that a
// certificate with thousands of SANs cannot swell them.
func Brief(ids []ID) []string {
	const most, width = 4, 128
	out := make([]string, 0, min(len(ids), most+1))
	for i, id := range ids {
		if i == most {
			out = append(out, fmt.Sprintf("(%d more)", len(ids)-most))
			break
		}
		s := id.String()
		if len(s) > width {
			s = strings.ToValidUTF8(s[:width], "") + "…"
		}
		out = append(out, s)
	}
	return out
}

// Of returns the typed identities of a verified client certificate: every
// URI SAN of the form scheme://… (a spiffe:// one only if it is a valid
// SPIFFE ID), every DNS SAN (lower-cased: DNS names are case-insensitive)
// and the subject CN if there is one. A URI SAN without "//" (urn:…,
// dns:…) is left out: no policy can name it, and spelled as it is it
// would read like a typed identity of another kind.
//
// A URI SAN counts only as the certificate spells it: one that Go's URL
// parser rewrites (an upper-case scheme, an empty fragment) is left out,
// or "SPIFFE://example.org/ops#" would pass for spiffe://example.org/ops.
// A subject with several CN attributes gives no cn: identity: which one
// is "the" CN is for an RA to decide, not a guess. A URI SAN with the
// scheme cn or dns, and a CN starting with //, are left out too: spelled,
// each would be the other (both "cn://x").
func Of(c *x509.Certificate) []ID {
	ids := make([]ID, 0, len(c.URIs)+len(c.DNSNames)+1)
	raw := rawURIs(c)
	for _, u := range c.URIs {
		if s := u.String(); uriForm(u, s) == nil && raw[s] && !spellsTyped(s) {
			ids = append(ids, ID{URI, s})
		}
	}
	for _, d := range c.DNSNames {
		ids = append(ids, ID{DNS, strings.ToLower(d)})
	}
	if cn := c.Subject.CommonName; cn != "" && countCN(c.Subject) == 1 && !strings.HasPrefix(cn, "//") {
		ids = append(ids, ID{CN, cn})
	}
	return ids
}

// spellsTyped reports whether URI SAN s is spelled as a typed identity of
// another kind: the URI cn://x and the CN //x are both spelled "cn://x",
// so neither is taken (a CN starting with // is left out above).
func spellsTyped(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, CNPrefix) || strings.HasPrefix(l, DNSPrefix)
}

// countCN counts the subject's CN attributes.
func countCN(n pkix.Name) int {
	count := 0
	for _, a := range n.Names {
		if a.Type.Equal(oidCN) {
			count++
		}
	}
	return count
}

var (
	oidCN             = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// rawURIs is the set of URI SANs exactly as the certificate holds them.
func rawURIs(c *x509.Certificate) map[string]bool {
	out := map[string]bool{}
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		in := cryptobyte.String(ext.Value)
		var names cryptobyte.String
		if !in.ReadASN1(&names, cbasn1.SEQUENCE) {
			return out
		}
		for !names.Empty() {
			var name cryptobyte.String
			var tag cbasn1.Tag
			if !names.ReadAnyASN1(&name, &tag) {
				return out
			}
			if tag == cbasn1.Tag(6).ContextSpecific() { // uniformResourceIdentifier
				out[string(name)] = true
			}
		}
	}
	return out
}

// Pattern is what one policy rule names: a typed identity, or with a
// trailing /* every SPIFFE ID below a trust domain or path.
type Pattern struct {
	id     ID
	prefix bool // id.Name ends in "/" and any SPIFFE ID below it matches
}

// String spells p as the policy file does.
func (p Pattern) String() string {
	if p.prefix {
		return p.id.String() + "*"
	}
	return p.id.String()
}

// Match reports whether id is one p names.
func (p Pattern) Match(id ID) bool {
	if p.prefix {
		return id.Kind == URI && strings.HasPrefix(id.Name, p.id.Name) && len(id.Name) > len(p.id.Name)
	}
	return id == p.id
}

// howToWrite is the end of every parse error: how identities are spelled.
const howToWrite = `write a URI SAN as scheme://… (e.g. spiffe://example.org/auth-server, or spiffe://example.org/* for a whole trust domain), a DNS SAN as dns:NAME, a subject CN as cn:NAME`

// ParsePattern parses a policy identity. An untyped bare name is refused
// with an error that says how to write it.
func ParsePattern(s string) (Pattern, error) {
	var p Pattern
	var err error
	switch {
	case strings.HasPrefix(s, DNSPrefix):
		p.id, err = ID{DNS, strings.TrimPrefix(s, DNSPrefix)}, checkDNSName(strings.TrimPrefix(s, DNSPrefix))
	case strings.HasPrefix(s, CNPrefix):
		p.id, err = ID{CN, strings.TrimPrefix(s, CNPrefix)}, checkCN(strings.TrimPrefix(s, CNPrefix))
	case strings.Contains(s, "://"):
		p, err = parseURI(s)
	default:
		err = fmt.Errorf("%q is untyped", s)
	}
	if err != nil {
		return Pattern{}, fmt.Errorf("identity %w; %s", err, howToWrite)
	}
	return p, nil
}

// MustParsePattern is ParsePattern for identities fixed in the code (the
// dev client's); it panics if s is not a typed identity.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

func parseURI(s string) (Pattern, error) {
	name, prefix := strings.CutSuffix(s, "/*")
	u, err := url.Parse(name)
	if err != nil {
		return Pattern{}, fmt.Errorf("%q is not a URI", s)
	}
	if u.String() != name {
		return Pattern{}, fmt.Errorf("%q is not in canonical form (%s)", s, u)
	}
	if err := uriForm(u, name); err != nil {
		return Pattern{}, fmt.Errorf("%q: %w", s, err)
	}
	if strings.Contains(name, "*") {
		return Pattern{}, fmt.Errorf("%q: * is allowed only as a final /* of a SPIFFE ID", s)
	}
	if prefix && u.Scheme != "spiffe" {
		return Pattern{}, fmt.Errorf("%q: a trailing /* pins a SPIFFE trust domain or path; other URIs are named exactly", s)
	}
	if prefix {
		name += "/"
	}
	return Pattern{id: ID{URI, name}, prefix: prefix}, nil
}

var (
	spiffeTrustDomain = regexp.MustCompile(`^[a-z0-9._-]+$`)
	spiffeSegment     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	dnsName           = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

// uriForm checks that u, spelled s, is a URI a policy can name: of the
// form scheme://…, and for the spiffe scheme a valid SPIFFE ID (trust
// domain of [a-z0-9._-], path segments of [A-Za-z0-9._-], none "." or
// "..", no port, user, query or fragment).
func uriForm(u *url.URL, s string) error {
	if u.Scheme == "" || !strings.HasPrefix(s, u.Scheme+"://") {
		return fmt.Errorf("not of the form scheme://…")
	}
	if u.Scheme != "spiffe" {
		return nil
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || !spiffeTrustDomain.MatchString(u.Host) {
		return fmt.Errorf("not a SPIFFE ID (spiffe://trust-domain/path)")
	}
	if u.EscapedPath() == "" {
		return nil
	}
	for _, seg := range strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/") {
		if seg == "." || seg == ".." || !spiffeSegment.MatchString(seg) {
			return fmt.Errorf("not a SPIFFE ID: path segment %q", seg)
		}
	}
	return nil
}

func checkDNSName(name string) error {
	if len(name) > 253 || !dnsName.MatchString(name) {
		return fmt.Errorf("%q is not a DNS name (lower-case labels, no wildcards)", DNSPrefix+name)
	}
	return nil
}

func checkCN(name string) error {
	if name == "" || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
		return fmt.Errorf("%q is not a subject CN (non-empty UTF-8 text)", CNPrefix+name)
	}
	return nil
}

// Parse reads one typed identity as String spells it (a pattern naming
// many is refused).
func Parse(s string) (ID, error) {
	p, err := ParsePattern(s)
	if err == nil && p.prefix {
		err = fmt.Errorf("identity %q names many", s)
	}
	return p.id, err
}
