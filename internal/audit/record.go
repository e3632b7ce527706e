package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Record is one decision, or an event of Sigil's own (identity "sigil").
type Record struct {
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id,omitempty"`
	// Identity is the typed identity a policy rule allowed (or "sigil");
	// when none was allowed, Identities lists all the client's.
	Identity   string   `json:"identity,omitempty"`
	Identities []string `json:"identities,omitempty"`
	Operation  string   `json:"operation"`
	// Method is the RPC that asked for the operation (one operation,
	// keys.admin say, covers several).
	Method string `json:"method,omitempty"`
	KeyID  string `json:"key_id,omitempty"`
	// Namespace is the namespace the call was made in, none for root;
	// KeyID is qualified (NS/ID) outside root.
	Namespace string `json:"namespace,omitempty"`
	// InvalidKeyID stands for a key ID the request carried that is not a
	// valid one: its length and SHA-256, never its bytes.
	InvalidKeyID  *Digest `json:"invalid_key_id,omitempty"`
	Generation    int     `json:"generation,omitempty"`
	Outcome       string  `json:"outcome"`
	Code          string  `json:"code"`
	Reason        string  `json:"reason,omitempty"`
	LatencyMS     float64 `json:"latency_ms,omitempty"`
	PayloadSHA256 string  `json:"payload_sha256,omitempty"`
	RequestBytes  int     `json:"request_bytes,omitempty"`
	Peer          string  `json:"peer,omitempty"`
	// ApprovalID names the request held for approval the record is about
	// (held, inspected, decided or run); ApprovedBy, when it runs, the
	// identities whose approvals made its quorum.
	ApprovalID string `json:"approval_id,omitempty"`
	// TraceID is the W3C trace the request was in (the caller's, when it
	// sent a traceparent), joining the record to the trace and the logs.
	TraceID    string   `json:"trace_id,omitempty"`
	ApprovedBy []string `json:"approved_by,omitempty"`
	// RequestSHA256 is the SHA-256 of the held request's protobuf bytes:
	// the hash its approvals name (PayloadSHA256 is what was signed).
	RequestSHA256 string `json:"request_sha256,omitempty"`
	// IdentitiesTotal is how many identities the client had, beside
	// Identities, which shows at most the first few and never a count.
	// Left 0, the log fills it in from Identities (a trailing "(N more)",
	// as identity.Brief writes, counts N).
	IdentitiesTotal int `json:"identities_total,omitempty"`
	// Details are what a purpose notes of the use (eth: a signed
	// transaction's chain, nonce and hash, which a restore's
	// reconciliation reads back); never a payload, a claim or a secret.
	Details map[string]string `json:"details,omitempty"`
}

// Digest describes bytes that are not recorded themselves.
type Digest struct {
	Length int    `json:"length"`
	SHA256 string `json:"sha256"`
}

// DigestOf describes s by its length and SHA-256.
func DigestOf(s string) *Digest {
	sum := sha256.Sum256([]byte(s))
	return &Digest{Length: len(s), SHA256: hex.EncodeToString(sum[:])}
}

// entry is a line of the log: a record with its place in the chain, and
// for Sigil's own events what they carry.
type entry struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
	*Record
	FileStart  *FileStart  `json:"file_start,omitempty"`
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	Evidence   *Evidence   `json:"evidence,omitempty"`
	Tamper     *Tamper     `json:"tamper,omitempty"`
}

// FileStart opens every file: it names the replica whose chain the file
// holds and the last record of the file before it (zero in the first).
type FileStart struct {
	Replica      string `json:"replica"`
	PrevFileSeq  uint64 `json:"prev_file_seq"`
	PrevFileHash string `json:"prev_file_hash"`
}

// Evidence keeps what was cut from the file's end at start or after a
// failed write: a partial or unreadable line.
type Evidence struct {
	Digest
	Prefix string `json:"prefix"` // the first bytes, hex
}

// Tamper says the log does not reach, or does not agree with, what was
// anchored outside it: records MissingFrom..MissingTo are gone or were
// rewritten. Expected is where the log had to reach (at start, the head
// anchored in the store; after a failure, what Sigil had written), Found
// what the file held there or, cut short, its last record.
type Tamper struct {
	Detail      string `json:"detail"`
	MissingFrom uint64 `json:"missing_from,omitempty"`
	MissingTo   uint64 `json:"missing_to,omitempty"`
	Expected    *Point `json:"expected,omitempty"`
	Found       *Point `json:"found,omitempty"`
}

// Point is a record of a chain: its seq and hash.
type Point struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Operations of Sigil's own entries.
const (
	opFileStart  = "audit.file_start"
	opCheckpoint = "audit.checkpoint"
	opQuarantine = "audit.quarantine"
	opTamper     = "audit.tamper_detected"
)

// Bounds on a line: every field a client can influence is capped, so a
// line stays under MaxLine whatever the request held.
const (
	MaxLine       = 16 << 10
	maxField      = 256
	maxIdentities = 4 // a certificate's identities spelled on a denial
	maxDetails    = 8 // what a purpose notes of a use
	// maxDetailBytes bounds a record's details as written: with every
	// other field at its bound, the line stays under MaxLine.
	maxDetailBytes = 8 << 10
)

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// bound replaces any string field that is longer than maxField or not
// valid UTF-8 by its digest, in place, and keeps the first maxIdentities
// identities with their exact total.
func bound(r *Record) {
	for _, f := range []*string{&r.RequestID, &r.Identity, &r.Operation, &r.Outcome, &r.Code, &r.Reason, &r.PayloadSHA256, &r.Peer, &r.Namespace} {
		boundString(f)
	}
	boundIdentities(r)
	if len(r.KeyID) > maxField || !utf8.ValidString(r.KeyID) {
		r.InvalidKeyID, r.KeyID = DigestOf(r.KeyID), ""
	}
	boundDetails(r)
}

// boundDetails keeps the first maxDetails of r's details by name, in a
// map of its own (r is a copy whose map is still the caller's): each name
// bounded as a field is; each value kept whole (a passkey assertion runs
// to a few KiB) while all of them, as written, fit in maxDetailBytes,
// else replaced by its digest, as is one that is not valid UTF-8 or holds
// a control character.
func boundDetails(r *Record) {
	if len(r.Details) == 0 {
		return
	}
	names := slices.Sorted(maps.Keys(r.Details))
	d := make(map[string]string, min(len(names), maxDetails))
	budget := maxDetailBytes
	for _, name := range names[:min(len(names), maxDetails)] {
		v := r.Details[name]
		boundString(&name)
		if n := len(appendJSONString(nil, v)); n+len(name) > budget || !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
			v = digested(v)
		}
		budget -= len(appendJSONString(nil, v)) + len(name)
		d[name] = v
	}
	r.Details = d
}

// boundIdentities keeps the first maxIdentities of r's identities and
// records how many there were in all, whatever was cut, here or before:
// a last element "(N more)" (identity.Brief's count of those it left
// out; no typed identity is spelled so) counts N identities, not one.
func boundIdentities(r *Record) {
	ids := r.Identities
	total := len(ids)
	if n, ok := moreCount(ids); ok {
		ids = ids[:len(ids)-1]
		total = len(ids) + n
	}
	if len(ids) > maxIdentities {
		ids = ids[:maxIdentities]
	}
	r.Identities = slices.Clone(ids)
	for i := range r.Identities {
		boundString(&r.Identities[i])
	}
	if len(r.Identities) == 0 {
		r.Identities = nil
	}
	r.IdentitiesTotal = max(r.IdentitiesTotal, total)
}

// moreCount reads a last element "(N more)" of ids.
func moreCount(ids []string) (int, bool) {
	if len(ids) == 0 {
		return 0, false
	}
	s, ok := strings.CutPrefix(ids[len(ids)-1], "(")
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, " more)"); !ok || s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// boundString replaces s by its length and SHA-256 if it is longer than
// maxField, not valid UTF-8 or holds control characters (which JSON
// escapes to six bytes each).
func boundString(s *string) {
	if len(*s) > maxField || !utf8.ValidString(*s) || strings.ContainsFunc(*s, unicode.IsControl) {
		*s = digested(*s)
	}
}

// digested is what a record says in place of s: its length and SHA-256.
func digested(s string) string {
	d := DigestOf(s)
	return fmt.Sprintf("[%d bytes, sha256 %s]", d.Length, d.SHA256)
}

// seal encodes e and appends its own hash: the SHA-256 of the line up to
// the "hash" member. It fails if the line would exceed MaxLine.
func seal(e entry) ([]byte, string, error) {
	body, err := encodeEntry(e)
	if err != nil {
		return nil, "", err
	}
	prefix := append(body[:len(body)-1:len(body)-1], `,"hash":"`...)
	sum := sha256.Sum256(prefix)
	hash := hex.EncodeToString(sum[:])
	line := append(append(prefix, hash...), '"', '}', '\n')
	if len(line) > MaxLine {
		return nil, "", fmt.Errorf("audit line of %d bytes over the %d limit", len(line), MaxLine)
	}
	return line, hash, nil
}

// parsed is a line read back, with its own hash checked.
type parsed struct {
	entry
	Hash string `json:"hash"`
}

// replica is the replica an entry names (a file start or a checkpoint).
func (p *parsed) replica() string {
	switch {
	case p.FileStart != nil:
		return p.FileStart.Replica
	case p.Checkpoint != nil:
		return p.Checkpoint.Replica
	}
	return ""
}

var errNotALine = errors.New("not an audit line (no hash)")

// parse checks a line's own hash and decodes it (b without its newline).
func parse(b []byte) (*parsed, error) {
	i := bytes.LastIndex(b, []byte(`,"hash":"`))
	if i < 0 || len(b) != i+len(`,"hash":"`)+64+2 || !bytes.HasSuffix(b, []byte(`"}`)) {
		return nil, errNotALine
	}
	prefix := b[:i+len(`,"hash":"`)]
	sum := sha256.Sum256(prefix)
	if string(b[len(prefix):len(prefix)+64]) != hex.EncodeToString(sum[:]) {
		return nil, errors.New("line altered: its hash does not match its content")
	}
	var p parsed
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if p.Record == nil {
		return nil, errNotALine
	}
	return &p, nil
}
