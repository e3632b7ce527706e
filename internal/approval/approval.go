// Package approval keeps the requests held for dual control and the
// rules of their life. A request an approval rule holds (package authz)
// is recorded in the keyring store, so every replica sees it, with the
// exact protobuf bytes of what was asked and their SHA-256:
//
//	pending ──quorum──▶ approved ──claim──▶ running ──▶ done | failed
//	pending ──deny──▶ denied          pending ──expiry──▶ expired
//
// The payload is stored beside the record, written once after it and
// deleted when the request ends, so the records, which every sweep and
// listing reads, stay small.
//
// Each step is one atomic rewrite of the request's record
// (Anchors.UpdateAnchor), so of replicas racing to approve, deny
// or run a request exactly one wins and the others see what it did. A
// claim is a lease: a replica that dies while running a request leaves it
// to be claimed again when the lease lapses (the operations held are
// idempotent: an Ethereum nonce's transaction re-signs to the same bytes,
// a key's state change finds it made).
//
// It is an internal package because only the server holds and runs
// requests; the package knows nothing of gRPC or purposes, only records
// and their transitions, so the transitions are tested on their own.
package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
)

// State is where a request is in its life.
type State string

// The states of a request.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Running  State = "running"
	Done     State = "done"
	Failed   State = "failed"
	Denied   State = "denied"
	Expired  State = "expired"
)

// Field is one line of a held request's human-readable summary.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// MaxField bounds a summary line's value; Clip cuts longer ones.
const MaxField = 512

// Clip makes every value of fields Printable and cuts those longer than
// MaxField (at a rune boundary, marked with an ellipsis): a requester
// can neither make a record large through what its summary quotes nor
// forge lines of it on an approver's terminal.
func Clip(fields []Field) []Field {
	for i, f := range fields {
		v := Printable(f.Value)
		if len(v) > MaxField {
			v = v[:MaxField]
			for !utf8.ValidString(v) {
				v = v[:len(v)-1]
			}
			v += "…"
		}
		fields[i].Value = v
	}
	return fields
}

// Printable escapes what a terminal would act on rather than show:
// control characters (line breaks, escape sequences) and the
// bidirectional overrides that reorder text, as \uXXXX; and any invalid
// UTF-8.
func Printable(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\ufffd") {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Vote is one approval: who (the identity the rule named, and every
// identity of the approver's certificate), when, and the payload hash it
// was for.
type Vote struct {
	Identity      string    `json:"identity"`
	Identities    []string  `json:"identities,omitempty"`
	At            time.Time `json:"at"`
	PayloadSHA256 string    `json:"payload_sha256"`
	// Passkey is the passkey assertion the approval carried (the server
	// verified it), as JSON: checkable offline against the passkey's
	// registration record.
	Passkey string `json:"passkey,omitempty"`
	// Origin is the console origin the server checked Passkey on.
	Origin string `json:"origin,omitempty"`
}

// InNamespace is the namespace r was made in.
func (r *Request) InNamespace() string {
	if r.Namespace == "" {
		return namespace.Root
	}
	return r.Namespace
}

// Target is what r's rules are decided on: its key (qualified), or for a
// request naming none, its namespace (see authz.Policy.Allowed).
func (r *Request) Target() string {
	if r.KeyID != "" {
		return r.KeyID
	}
	return namespace.Qualify(r.InNamespace(), "")
}

// Request is a held request, as the store keeps it.
type Request struct {
	ID        string `json:"id"`
	Method    string `json:"method"` // the gRPC method asked for
	Operation string `json:"operation"`
	KeyID     string `json:"key_id"` // qualified (NS/ID) outside root
	// Namespace is the namespace the request was made in; a record held
	// before namespaces existed has none, and is root's.
	Namespace string `json:"namespace,omitempty"`
	Requester string `json:"requester"` // the typed identity the access rule allowed
	// Requesters are every identity of the requester's certificate: none
	// of them may decide the request.
	Requesters []string `json:"requesters,omitempty"`
	// Idempotent says the request may run again after a run whose end
	// was not recorded (a crash): its second run has the first's effect
	// (an Ethereum nonce's transaction, a revocation). Any other request
	// is then failed, never run twice.
	Idempotent bool `json:"idempotent,omitempty"`
	// Actions are what a keys.admin request does (authz.AdminActions),
	// as judged when it was held.
	Actions []string `json:"actions,omitempty"`
	// Payload is the request message's protobuf bytes, kept apart from
	// the record (Store.Payload) so that listing requests reads none;
	// PayloadSHA256 is their hash, which every approval must name.
	Payload       []byte  `json:"-"`
	PayloadSHA256 string  `json:"payload_sha256"`
	Summary       []Field `json:"summary,omitempty"`
	// Approvers and Quorum are the holding rule's, fixed when the request
	// is held.
	Approvers []string `json:"approvers"`
	Quorum    int      `json:"quorum"`
	// Passkey: every decision must carry a verified passkey assertion
	// (the holding rule's require: passkey).
	Passkey bool      `json:"passkey,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`

	State     State     `json:"state"`
	Approvals []Vote    `json:"approvals,omitempty"`
	DeniedBy  string    `json:"denied_by,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"` // quorum reached or denied

	// Runner is the replica that claimed the request, until LeaseUntil.
	Runner     string    `json:"runner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	Attempts   int       `json:"attempts,omitempty"`
	// Result is the response message (protobuf) of a done request;
	// ErrorCode and ErrorMessage the error of a failed one.
	Result       []byte    `json:"result,omitempty"`
	ErrorCode    string    `json:"error_code,omitempty"`
	ErrorMessage string    `json:"error_message,omitempty"`
	Finished     time.Time `json:"finished,omitzero"`

	// Outbox is what the request's changes have to tell webhooks.
	Outbox Outbox `json:"outbox,omitzero"`
}

// Events a request raises (its Outbox), by change.
const (
	EventHeld     = "approval.held"
	EventApproved = "approval.approved"
	EventDenied   = "approval.denied"
	EventExpired  = "approval.expired"
	EventRan      = "approval.ran"
)

// Outbox is a request's notifications: the events its changes raised,
// each written in the same update as the change (so a crash cannot
// lose one), the deliveries made of them, and each hook's delivery
// state. A notifier owns the delivery fields.
type Outbox struct {
	Events    []string              `json:"events,omitempty"`    // raised, in order
	Delivered []string              `json:"delivered,omitempty"` // EVENT@HOOK, each delivered once at least
	Hooks     map[string]*HookState `json:"hooks,omitempty"`     // by hook
}

// HookState is one hook's deliveries of an outbox: the replica
// delivering now (until Until) and the backoff after failed rounds.
type HookState struct {
	Attempts int       `json:"attempts,omitempty"` // failed rounds in a row
	Next     time.Time `json:"next,omitzero"`      // no delivery before
	Holder   string    `json:"holder,omitempty"`
	Until    time.Time `json:"until,omitzero"`
}

// Raise adds event ev, once.
func (o *Outbox) Raise(ev string) {
	if !slices.Contains(o.Events, ev) {
		o.Events = append(o.Events, ev)
	}
}

// States are every state, in the order of a request's life.
var States = []State{Pending, Approved, Running, Done, Failed, Denied, Expired}

// CheckState refuses a state filter that names no state ("" names all).
func CheckState(s string) error {
	if s == "" || slices.Contains(States, State(s)) {
		return nil
	}
	return errs.New(errs.InvalidArgument, "state: %.32q is none of pending, approved, running, done, failed, denied, expired", s)
}

// DecodeRequest reads a held request's bytes as the message of its
// method's request type, after checking they hash to sum, the hash its
// approvals name.
func DecodeRequest(method string, payload []byte, sum string) (proto.Message, error) {
	if h := sha256.Sum256(payload); payload == nil || hex.EncodeToString(h[:]) != sum {
		return nil, errs.New(errs.FailedPrecondition, "the held request's bytes are lost, or do not hash to %s", sum)
	}
	name := protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", "."))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	md, ok := d.(protoreflect.MethodDescriptor)
	if err != nil || !ok {
		return nil, errs.New(errs.FailedPrecondition, "method %s: unknown here", Printable(method))
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, errs.New(errs.FailedPrecondition, "method %s: its request type is unknown here", Printable(method))
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, errs.New(errs.FailedPrecondition, "the held request does not decode: %v", err)
	}
	return m, nil
}

// NewID is a fresh request ID: 16 random bytes in hex.
func NewID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var idForm = regexp.MustCompile(`^[0-9a-f]{32}$`)

// CheckID refuses an approval ID that cannot be one.
func CheckID(id string) error {
	if !idForm.MatchString(id) {
		return errs.New(errs.InvalidArgument, "approval_id: 32 lower-case hex digits")
	}
	return nil
}

// StateAt is the request's state at now: a pending request past its
// expiry is expired.
func (r *Request) StateAt(now time.Time) State {
	if r.State == Pending && !now.Before(r.Expires) {
		return Expired
	}
	return r.State
}

// Live reports whether the request may still run.
func (r *Request) Live(now time.Time) bool {
	switch r.StateAt(now) {
	case Pending, Approved, Running:
		return true
	}
	return false
}

// Waiting says what a pending request waits for.
func (r *Request) Waiting() int { return r.Quorum - len(r.Approvals) }

// MadeBy reports whether ids hold the identity the access rule allowed
// when the request was held, typed and exact: only that identity reads
// the request and fetches its result. A certificate that merely shares
// another of the requester's identities (its CN, one DNS SAN) is not the
// requester.
func (r *Request) MadeBy(ids []identity.ID) bool {
	return slices.Contains(identity.Strings(ids), r.Requester)
}

// SharesRequester reports whether one of ids is any identity of the
// requester's certificate: the requester can neither approve nor deny its
// request, under any of them. This is the only use of the certificate's
// other identities: they widen what it may not do, never what it may.
func (r *Request) SharesRequester(ids []identity.ID) bool {
	return overlaps(identity.Strings(ids), append([]string{r.Requester}, r.Requesters...))
}

func overlaps(a, b []string) bool {
	return slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
}

// Approver is the first of ids the request's approvers name.
func (r *Request) Approver(ids []identity.ID) (identity.ID, bool) {
	for _, p := range r.Approvers {
		pat, err := identity.ParsePattern(p)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if pat.Match(id) {
				return id, true
			}
		}
	}
	return identity.ID{}, false
}

// decider checks that the caller with ids may decide the request: it is
// in one of the states open, the caller is one of its approvers and not
// its requester. It returns the identity the decision is made as.
func (r *Request) decider(ids []identity.ID, open ...State) (string, error) {
	if !slices.Contains(open, r.State) {
		return "", errs.New(errs.FailedPrecondition, "approval %s is %s: nothing left to decide", r.ID, r.State)
	}
	if r.SharesRequester(ids) {
		return "", errs.New(errs.PermissionDenied, "approval %s: its requester cannot decide it", r.ID)
	}
	who, ok := r.Approver(ids)
	if !ok {
		return "", errs.New(errs.PermissionDenied, "permission denied")
	}
	return who.String(), nil
}

// Approve records the approval of the caller with ids for the payload
// with hash sum, and reports whether it completed the quorum.
func (r *Request) Approve(ids []identity.ID, sum string, now time.Time) (bool, error) {
	if r.StateAt(now) == Expired {
		return false, errs.New(errs.FailedPrecondition, "approval %s expired at %s", r.ID, r.Expires.UTC().Format(time.RFC3339))
	}
	who, err := r.decider(ids, Pending)
	if err != nil {
		return false, err
	}
	if sum != r.PayloadSHA256 {
		return false, errs.New(errs.FailedPrecondition, "approval %s: you approved payload sha256 %.64q; the request's is %s", r.ID, sum, r.PayloadSHA256)
	}
	mine := identity.Strings(ids)
	if slices.ContainsFunc(r.Approvals, func(v Vote) bool { return overlaps(mine, append([]string{v.Identity}, v.Identities...)) }) {
		return false, errs.New(errs.AlreadyExists, "approval %s: an identity of this certificate approved it already", r.ID)
	}
	r.Approvals = append(r.Approvals, Vote{Identity: who, Identities: mine, At: now, PayloadSHA256: sum})
	if len(r.Approvals) < r.Quorum {
		return false, nil
	}
	r.State, r.DecidedAt = Approved, now
	r.Outbox.Raise(EventApproved)
	return true, nil
}

// Deny records that the caller with ids refused the request, which will
// never run: one waiting for approvals, or approved and not yet claimed.
// One whose run started cannot be denied, even if its runner died: it
// may have taken effect.
func (r *Request) Deny(ids []identity.ID, reason string, now time.Time) error {
	if r.StateAt(now) == Expired {
		return errs.New(errs.FailedPrecondition, "approval %s expired at %s", r.ID, r.Expires.UTC().Format(time.RFC3339))
	}
	who, err := r.decider(ids, Pending, Approved)
	if err != nil {
		return err
	}
	r.State, r.DeniedBy, r.Reason, r.DecidedAt = Denied, who, reason, now
	r.Outbox.Raise(EventDenied)
	return nil
}

// Claim makes runner the one to run an approved request, until now+lease,
// and reports whether it is to run. A running request whose lease lapsed
// (its runner died, or could not record the end) runs again only if it is
// idempotent; otherwise it fails here, as interrupted.
func (r *Request) Claim(runner string, now time.Time, lease time.Duration) (bool, error) {
	switch {
	case r.State == Approved:
	case r.State == Running && now.After(r.LeaseUntil) && r.Idempotent:
	case r.State == Running && now.After(r.LeaseUntil):
		r.State, r.ErrorCode, r.Finished = Failed, "Aborted", now
		r.ErrorMessage = "its run was interrupted (a replica died, or the store failed) and may have taken effect: it is not run twice; check, and send the request again if it did not"
		r.Outbox.Raise(EventRan)
		return false, nil
	default:
		return false, errs.New(errs.FailedPrecondition, "approval %s is %s: not to be run now", r.ID, r.StateAt(now))
	}
	r.State, r.Runner, r.LeaseUntil = Running, runner, now.Add(lease)
	r.Attempts++
	return true, nil
}

// Finish records what running the request gave; only its runner, while
// it still holds the claim, may.
func (r *Request) Finish(runner string, result []byte, code, msg string, now time.Time) error {
	if r.State != Running || r.Runner != runner {
		return errs.New(errs.Aborted, "approval %s: its claim passed to another runner", r.ID)
	}
	if r.Idempotent && (code == "Unavailable" || code == "Aborted") {
		// An outage (the HSM or the store away) or a conflict to retry
		// (the nonce's earlier claim still in progress, a rotation in
		// flight), not an answer: the approvers' work is not thrown away;
		// the request is approved again and runs once the dependency is
		// back or the conflict has passed (the sweep, or the requester's
		// asking for the result). Its second run has the first's effect.
		r.State, r.Runner, r.LeaseUntil = Approved, "", time.Time{}
		return nil
	}
	r.State, r.Result, r.ErrorCode, r.ErrorMessage, r.Finished = Done, result, code, msg, now
	if code != "" {
		r.State = Failed
	}
	r.Outbox.Raise(EventRan)
	return nil
}
