// Package testutil groups the test helpers that bring up an outside
// component or an independent checker: a SoftHSM token (softhsmtest), an
// embedded etcd (etcdtest), local-kms behind a fault proxy (kmstest), the
// npm jose and ethers cross-checks (crosscheck), a keyring over SoftHSM
// (keyringtest) and the conformance suite both backends run
// (backendtest). Helpers for one package's own contract sit beside it
// instead (keyring/storetest, server/servertest). Production code never
// imports any of them (tests/layers_test.go).
package testutil
