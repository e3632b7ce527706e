package namespace

import (
	"context"
	"regexp"
	"strings"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Header is the gRPC metadata key (and HTTP header) naming the namespace
// a call is made in; root when absent.
const Header = "sigil-namespace"

// Root is the namespace of every call that names none, and of every
// object made before namespaces existed.
const Root = "root"

// Invalid stands for a namespace a caller named that is no valid name
// (an HTTP header): no rule reaches it, no key lives in it, and a call
// made in it is refused.
const Invalid = "-invalid-"

// reservedPrefix starts the IDs of Sigil's own keys (sigil.audit): they
// belong to no tenant and stay global, that is, in root.
const reservedPrefix = "sigil."

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Validate checks a namespace name: [a-z0-9][a-z0-9-]{0,31}.
func Validate(name string) error {
	if !namePattern.MatchString(name) {
		return errs.New(errs.InvalidArgument, "namespace must match [a-z0-9][a-z0-9-]{0,31}")
	}
	return nil
}

// Qualify is the internal name of id in namespace ns: id itself in root
// and for Sigil's own keys, NS/ID otherwise. An empty id gives "NS/", the
// namespace itself as a target of a keyless call (a listing).
func Qualify(ns, id string) string {
	if ns == Root || ns == "" || strings.HasPrefix(id, reservedPrefix) {
		return id
	}
	return ns + "/" + id
}

// Split is the namespace and local name of a qualified name.
func Split(qualified string) (ns, id string) {
	if ns, id, ok := strings.Cut(qualified, "/"); ok {
		return ns, id
	}
	return Root, qualified
}

// Of is the namespace of a qualified name.
func Of(qualified string) string {
	ns, _ := Split(qualified)
	return ns
}

// Local is a qualified name without its namespace.
func Local(qualified string) string {
	_, id := Split(qualified)
	return id
}

// Unqualify is qualified relative to namespace ns: its local name if it
// lies in ns, and ok false if it lies elsewhere (a caller in ns must not
// learn it).
func Unqualify(ns, qualified string) (string, bool) {
	got, id := Split(qualified)
	if got != ns && !strings.HasPrefix(id, reservedPrefix) {
		return "", false
	}
	return id, true
}

type ctxKey struct{}

// NewContext returns ctx carrying the namespace a call is made in, once
// the server has authorized it.
func NewContext(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, ctxKey{}, ns)
}

// FromContext is the namespace of the call ctx belongs to: Root if none
// was set.
func FromContext(ctx context.Context) string {
	if ns, ok := ctx.Value(ctxKey{}).(string); ok && ns != "" {
		return ns
	}
	return Root
}
