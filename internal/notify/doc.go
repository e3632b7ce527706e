// Package notify delivers Sigil's events (a request held for approval,
// approved, denied, expired or run; a backend or the store down or up;
// a tamper of the audit log) to webhooks, signed with each hook's HMAC
// key, at least once across crashes and replicas: every event waits in
// an outbox in the keyring store until each hook that wants it took it.
// A held request's events sit in its own record, written in the update
// that raised them, so no crash between a change and its event loses
// the event.
package notify
