package namespace

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sigil-hsm/sigil/internal/errs"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Scope places every namespaced field of m (and of the messages it holds)
// in namespace ns, in place: the request as the server's handlers see it.
// A value holding "/" is refused (InvalidArgument), in root too: a
// client names things of the namespace it calls in, never another's.
func Scope(m proto.Message, ns string) error {
	if m == nil {
		return nil
	}
	var bad string
	rewrite(m.ProtoReflect(), func(v string) (string, bool) {
		if strings.Contains(v, "/") && bad == "" {
			bad = v
		}
		return Qualify(ns, v), true
	})
	if bad != "" {
		return errs.New(errs.InvalidArgument, "%q: a name cannot hold \"/\" (name the namespace with %s)", bad, Header)
	}
	return nil
}

// Unscope takes every namespaced field of m out of namespace ns, in
// place: the response as the client sees it. A value of another
// namespace, which no handler should give, is blanked (dropped from a
// list) rather than shown.
func Unscope(m proto.Message, ns string) {
	if m == nil {
		return
	}
	if ns == "" {
		ns = Root
	}
	rewrite(m.ProtoReflect(), func(v string) (string, bool) {
		if v == "" {
			return v, true
		}
		return Unqualify(ns, v)
	})
}

// Namespaced reports whether field f names something of a namespace.
func Namespaced(f protoreflect.FieldDescriptor) bool {
	return f.Kind() == protoreflect.StringKind &&
		proto.GetExtension(f.Options(), sigilv1.E_Scope).(sigilv1.Scope) == sigilv1.Scope_SCOPE_NAMESPACED
}

// plan is what rewrite visits in one message type: its namespaced string
// fields and its message fields (which may hold more).
type plan struct {
	names, messages []protoreflect.FieldDescriptor
}

var plans sync.Map // protoreflect.FullName → *plan

func planOf(d protoreflect.MessageDescriptor) *plan {
	if p, ok := plans.Load(d.FullName()); ok {
		return p.(*plan)
	}
	p := &plan{}
	fields := d.Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		switch {
		case Namespaced(f):
			p.names = append(p.names, f)
		case f.Message() != nil && (!f.IsMap() || f.MapValue().Message() != nil):
			p.messages = append(p.messages, f)
		}
	}
	plans.Store(d.FullName(), p)
	return p
}

// rewrite applies fn to every namespaced string of m; a value fn refuses
// is blanked, or dropped from a list.
func rewrite(m protoreflect.Message, fn func(string) (string, bool)) {
	p := planOf(m.Descriptor())
	for _, f := range p.names {
		if !m.Has(f) {
			continue
		}
		if f.IsList() {
			m.Set(f, rewriteList(m, f, fn))
			continue
		}
		v, _ := fn(m.Get(f).String())
		m.Set(f, protoreflect.ValueOfString(v))
	}
	for _, f := range p.messages {
		if !m.Has(f) {
			continue
		}
		switch {
		case f.IsList():
			l := m.Get(f).List()
			for i := 0; i < l.Len(); i++ {
				rewrite(l.Get(i).Message(), fn)
			}
		case f.IsMap():
			m.Get(f).Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				rewrite(v.Message(), fn)
				return true
			})
		default:
			rewrite(m.Get(f).Message(), fn)
		}
	}
}

// rewriteList is list field f of m rewritten into a new list: the old one
// may share its array with state the handler keeps (a key's policy).
func rewriteList(m protoreflect.Message, f protoreflect.FieldDescriptor, fn func(string) (string, bool)) protoreflect.Value {
	old, out := m.Get(f).List(), m.NewField(f)
	l := out.List()
	for i := 0; i < old.Len(); i++ {
		if v, ok := fn(old.Get(i).String()); ok {
			l.Append(protoreflect.ValueOfString(v))
		}
	}
	return out
}
