// Package namespace partitions what clients can name — keys, JWK Sets,
// approvals, audit records — into namespaces that cannot reach each
// other.
//
// Inside Sigil an object of namespace NS is named NS/ID (a "qualified"
// name); one of the root namespace keeps its plain ID, so a store written
// before namespaces existed is the root namespace as it stands. Clients
// never see or send the qualified form: the server places every field of
// a request marked (sigil.v1.scope) = SCOPE_NAMESPACED in the namespace
// the call is made in (Scope) and takes it out of the response (Unscope).
// A client-sent ID cannot hold "/", so no request can name another
// namespace's object: it can only ask in that namespace, which the policy
// decides like any other request.
package namespace
