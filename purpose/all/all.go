// Package all registers every purpose Sigil ships: import it for its
// side effect where the whole product is wired (cmd/sigil, tests that run
// a full server).
package all

import (
	_ "github.com/sigil-hsm/sigil/purpose/eth" // Ethereum transactions, messages, typed data
	_ "github.com/sigil-hsm/sigil/purpose/jwt" // JWTs, rotated on a schedule
	_ "github.com/sigil-hsm/sigil/purpose/pki" // the mTLS certificate authority
	_ "github.com/sigil-hsm/sigil/purpose/raw" // raw digests
)
