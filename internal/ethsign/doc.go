// Package ethsign signs Ethereum transactions, EIP-191 messages and
// EIP-712 typed data with secp256k1 keys that stay in their backend.
//
// go-ethereum does the Ethereum work: it parses the eth_signTransaction
// object (types.Transaction's JSON decoder), hashes for signing and encodes
// signed transactions (types.Signer), hashes messages (accounts.TextHash)
// and typed data (apitypes). This package adds what a signing service
// needs around it: strict input checks (unknown or signature fields,
// sizes, a chain ID always), the spending policy checked before the HSM
// is called, and a recovery check on every signature before it leaves.
//
// It is internal: the API is the gRPC Ethereum service.
package ethsign
