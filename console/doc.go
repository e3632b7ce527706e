// Package console is the operator and approver console: server-rendered
// pages over HTTPS, sign-in with passkeys (WebAuthn), and approvals
// decided with the approver's passkey over the exact request approved.
//
// It is a client of the server's one access path: every page reads, and
// every decision is made, by invoking the gRPC method as the signed-in
// identity (server.Invoke), so the console gets exactly what that
// identity's rules allow, under its quotas, in the audit log. What it
// keeps itself (enrollments, passkeys) is in the keyring store's
// anchors; sessions are in memory, per replica.
package console
