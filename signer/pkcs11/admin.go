//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// The token administration behind `sigil hsm init` and `sigil hsm check`:
// a CLI process's own use of a module, before (or beside) any backend, so
// it loads the module itself and finalises it when done.

// InitToken initialises a token labelled label in the first slot whose
// token is not initialised yet (SoftHSM and opencryptoki keep one free),
// with soPIN for the security officer, and sets userPIN as its user PIN.
// A token already labelled label is refused: initialising erases a token.
func InitToken(module, label string, soPIN, userPIN []byte) (uint, error) {
	if label == "" || len(label) > 32 || strings.TrimSpace(label) != label {
		return 0, errs.New(errs.InvalidArgument, "token label must be 1 to 32 bytes, without leading or trailing spaces (tokens pad labels with spaces)")
	}
	if len(soPIN) == 0 || len(userPIN) == 0 {
		return 0, errs.New(errs.InvalidArgument, "the SO PIN and the user PIN must not be empty")
	}
	ctx, done, err := openModule(module)
	if err != nil {
		return 0, err
	}
	defer done()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, errs.New(errs.Unavailable, "listing slots: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			if strings.TrimRight(ti.Label, " ") == label {
				return 0, errs.New(errs.AlreadyExists, "a token labelled %q exists already (slot %d); initialising would erase it", label, s)
			}
			continue
		}
		if !found {
			free, found = s, true
		}
	}
	if !found {
		return 0, errs.New(errs.FailedPrecondition, "no slot of %s has an uninitialised token: this HSM's tokens (partitions) are made with its own tools (docs/hsm.md)", module)
	}
	if err := ctx.InitToken(free, string(soPIN), label); err != nil {
		return 0, errs.New(errs.Unavailable, "C_InitToken: %w", err)
	}
	// SoftHSM moves a token it initialised to a new slot ID.
	slot, err := slotOf(ctx, label)
	if err != nil {
		return 0, err
	}
	h, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, errs.New(errs.Unavailable, "opening a session: %w", err)
	}
	defer ctx.CloseSession(h)
	if err := ctx.Login(h, pkcs11.CKU_SO, string(soPIN)); err != nil {
		return 0, errs.New(errs.Unavailable, "logging in as SO: %w", err)
	}
	defer ctx.Logout(h)
	if err := ctx.InitPIN(h, string(userPIN)); err != nil {
		return 0, errs.New(errs.Unavailable, "C_InitPIN: %w", err)
	}
	return slot, nil
}

// openModule loads and initialises the module at path for one command;
// done finalises and unloads it.
func openModule(path string) (*pkcs11.Ctx, func(), error) {
	ctx, err := initModule(path)
	if err != nil {
		return nil, nil, err
	}
	return ctx, func() { ctx.Finalize(); ctx.Destroy() }, nil
}

// slotOf is the slot of the initialised token labelled label.
func slotOf(ctx *pkcs11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, errs.New(errs.Unavailable, "listing slots: %w", err)
	}
	var found []uint
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimRight(ti.Label, " ") == label {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, errs.New(errs.NotFound, "no initialised token labelled %q", label)
	case 1:
		return found[0], nil
	}
	return 0, errs.New(errs.FailedPrecondition, "%d tokens are labelled %q; labels must be unique", len(found), label)
}

// Check decodes a backend's configuration, loads its module, finds its
// token, logs in with its PIN and tries every algorithm Sigil signs with:
// what will and will not work on this HSM, before a key is made.
func Check(_ context.Context, decode func(any) error) (Token, []Capability, error) {
	var cfg Config
	if err := decode(&cfg); err != nil {
		return Token{}, nil, err
	}
	if err := cfg.validate(); err != nil {
		return Token{}, nil, err
	}
	pin, err := cfg.PIN.Resolve("pin")
	if err != nil {
		return Token{}, nil, err
	}
	ctx, done, err := openModule(cfg.Module)
	if err != nil {
		return Token{}, nil, err
	}
	defer done()
	slot, err := slotOf(ctx, cfg.Token)
	if err != nil {
		return Token{}, nil, err
	}
	ti, err := ctx.GetTokenInfo(slot)
	if err != nil {
		return Token{}, nil, errs.New(errs.Unavailable, "reading the token: %w", err)
	}
	tok := Token{Module: cfg.Module, Label: cfg.Token, Manufacturer: strings.TrimSpace(ti.ManufacturerID), Model: strings.TrimSpace(ti.Model),
		Serial: strings.TrimSpace(ti.SerialNumber), Slot: slot, MaxSessions: ti.MaxSessionCount}
	if tok.MaxSessions >= 1<<31 { // CK_UNAVAILABLE_INFORMATION, or opencryptoki's (CK_ULONG)-2
		tok.MaxSessions = 0
	}
	h, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return tok, nil, errs.New(errs.Unavailable, "opening a session: %w", err)
	}
	defer ctx.CloseSession(h)
	if err := ctx.Login(h, pkcs11.CKU_USER, string(pin)); err != nil && !isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return tok, nil, errs.New(errs.Unauthenticated, "logging in to token %q with the configured PIN: %w", cfg.Token, err)
	}
	mechs, err := ctx.GetMechanismList(slot)
	if err != nil {
		return tok, nil, errs.New(errs.Unavailable, "listing mechanisms: %w", err)
	}
	have := map[uint]bool{}
	for _, m := range mechs {
		have[m.Mechanism] = true
	}
	var out []Capability
	for _, alg := range []signer.Algorithm{signer.ES256, signer.ES384, signer.ES256K, signer.EdDSA, signer.RS256, signer.PS256} {
		out = append(out, try(ctx, h, alg, have))
	}
	return tok, out, nil
}

// try generates a session key pair for alg, signs with it and verifies
// the signature.
func try(ctx *pkcs11.Ctx, h pkcs11.SessionHandle, alg signer.Algorithm, have map[uint]bool) Capability {
	c := Capability{Algorithm: alg}
	req := signer.CreateKeyRequest{Algorithm: alg}
	if alg.IsRSA() {
		req.RSABits = 2048
	}
	gen, err := keyGenFor(req)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	mech, _ := mechanism(alg, nil)
	c.Mechanisms = have[gen.mech] && have[mech.Mechanism]
	if !c.Mechanisms {
		var missing []string
		for _, m := range []uint{gen.mech, mech.Mechanism} {
			if !have[m] {
				missing = append(missing, mechName(m))
			}
		}
		c.Detail = "the token does not offer " + strings.Join(missing, ", ")
		return c
	}
	label := "sigil.hsm-check"
	pubT, privT := gen.templates(label, []byte(label))
	for _, t := range [][]*pkcs11.Attribute{pubT, privT} {
		for _, a := range t {
			if a.Type == pkcs11.CKA_TOKEN {
				a.Value = []byte{0} // a session object: the token keeps nothing
			}
		}
	}
	pubO, privO, err := ctx.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(gen.mech, nil)}, pubT, privT)
	if err != nil {
		c.Detail = "generating a key pair: " + err.Error()
		return c
	}
	defer ctx.DestroyObject(h, privO)
	defer ctx.DestroyObject(h, pubO)
	pub, err := (&Backend{mod: ctx}).readPublic(h, pubO)
	if err != nil {
		c.Detail = "reading the public key: " + err.Error()
		return c
	}
	input := alg.Input([]byte("sigil hsm check"))
	m, in := mechanism(alg, input)
	if err := ctx.SignInit(h, []*pkcs11.Mechanism{m}, privO); err != nil {
		c.Detail = "signing: " + err.Error()
		return c
	}
	sig, err := ctx.Sign(h, in)
	if err != nil {
		c.Detail = "signing: " + err.Error()
		return c
	}
	if err := signer.Verify(pub, alg, input, sig); err != nil {
		c.Detail = "the signature does not verify: " + err.Error()
		return c
	}
	c.Works = true
	return c
}

// mechName names the mechanisms Sigil uses.
func mechName(m uint) string {
	if n, ok := map[uint]string{
		pkcs11.CKM_EC_KEY_PAIR_GEN: "CKM_EC_KEY_PAIR_GEN", pkcs11.CKM_ECDSA: "CKM_ECDSA",
		ckmECEdwardsKeyPairGen: "CKM_EC_EDWARDS_KEY_PAIR_GEN", ckmEdDSA: "CKM_EDDSA",
		pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN: "CKM_RSA_PKCS_KEY_PAIR_GEN", pkcs11.CKM_RSA_PKCS: "CKM_RSA_PKCS", pkcs11.CKM_RSA_PKCS_PSS: "CKM_RSA_PKCS_PSS",
	}[m]; ok {
		return n
	}
	return fmt.Sprintf("mechanism 0x%x", m)
}
