// Package groupcommit coalesces concurrent writes to a store into shared
// commits, so one commit (a bbolt fsync, an etcd quorum write) serves
// every write that arrived while the last was being made.
//
// The first caller to find no commit under way leads: it commits what is
// queued (its own write first, and what arrived meanwhile, up to Max),
// hands the rest to the first caller still waiting, who leads the next
// commit, and returns. Every caller returns once the commit holding its
// write has. Alone, a write is one commit as before; no caller waits for
// a timer, and none is left waiting on a leader that has returned.
package groupcommit
