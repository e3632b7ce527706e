// Package audit writes Sigil's audit trail: one JSON line per decision
// (allowed, denied or failed) and per event of Sigil's own, never a
// payload, token or claim value, only the SHA-256 of what was signed.
//
// The trail is tamper-evident and provably complete. Every line carries
// "seq", contiguous across files and restarts, "prev", the hash of the
// line before it, and ends with "hash", the SHA-256 of the line up to
// that member. Every file opens with a file_start entry naming the last
// seq and hash of the file before it. Hashes alone could be recomputed by
// whoever can write the file, so the chain's head is signed: every N
// records or T seconds, at start and at a clean shutdown, a checkpoint
// (replica, seq, hash, time) is signed with the audit key, which lives in
// the HSM or KMS like any Sigil key, written into the log and kept in the
// keyring store. Between checkpoints the store keeps the chain's head as
// well: after each fsync, the seq and hash of the last record on disk
// (no signature: the store is outside the file), at most every
// HeadInterval, one write at a time, never waited for by a request, and
// never ahead of the disk. At start the log is compared with the anchored
// head; a log that ends before it (its tail cut, say after a kill -9) or
// disagrees with it gets a permanent tamper_detected entry naming both
// points, before the start checkpoint signs anything, and the service
// goes on. Verify proves a set of files complete and intact, naming every
// gap, and with the live anchor that the files reach it.
//
// Records are bounded by construction: client-supplied fields are capped
// (an oversized or invalid one is replaced by its length and SHA-256, a
// client's identities are the first four with their exact total), so no
// line exceeds MaxLine, and readers accept lines of any length anyway.
//
// Writes are batched: a request's line is written, in one write() with
// whatever else is queued, before the request is answered, and the file
// is checked to still be the one at the configured path. A second
// goroutine fsyncs whenever there are written lines not yet synced. A
// crash of the process loses nothing that was answered; a crash of the
// machine loses at most the lines written since the last fsync began
// (checkpoints only ever sign synced lines, so that loss is not taken for
// tampering). When a write or fsync fails, responses are withheld and the
// log reports itself down; it reopens the file by path with a backoff and
// resumes by itself. A partial line left at the end of a file is cut off
// and kept as evidence in a quarantine entry the chain covers.
package audit
