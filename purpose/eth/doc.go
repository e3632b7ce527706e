// Package eth is the Ethereum purpose: a key of purpose eth (secp256k1,
// ES256K) signs Ethereum transactions, EIP-191 messages and EIP-712
// typed data (sigil.v1.EthereumService) with a key that stays in its
// backend, under its spending policy (Policy). Its address, derived once
// from the public key, is its identity: it never rotates.
//
// go-ethereum does the Ethereum work: it parses the eth_signTransaction
// object (types.Transaction's JSON decoder), hashes for signing and encodes
// signed transactions (types.Signer), hashes messages (accounts.TextHash)
// and typed data (apitypes). This package adds what a signing service
// needs around it: strict input checks (unknown or signature fields,
// sizes, a chain ID always), the spending policy checked before the HSM
// is called, and a recovery check on every signature before it leaves.
package eth
