// Package awskms is the AWS KMS backend: keys are KMS keys that Sigil
// creates, tags and signs with; their private halves never leave KMS.
//
// Credentials come from the AWS SDK's default chain (environment, shared
// configuration, web identity, instance role) and never from Sigil's
// configuration; errors never carry them. References are key ARNs; a key
// is also given the alias alias/sigil/NAME, known before it exists, so a
// creation that fails half-way can be cleaned up.
//
// KMS accounts have shared request quotas, so each backend admits at most
// max_rps requests per second and max_concurrency at once; past that a
// request waits while its deadline allows and then fails with
// ResourceExhausted, shedding load instead of queueing without bound.
// Throttling answers are retried by the SDK with backoff within the
// caller's deadline.
package awskms
