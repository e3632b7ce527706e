package keyring

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/signer"
)

// OriginImported is the origin of a key pair made outside Sigil and
// imported wrapped (Keyring.Import): whoever made it may have held it.
const OriginImported = "imported"

// ImportTTL is how long import parameters stand: past it, their token is
// refused and their wrapping key destroyed.
const ImportTTL = 24 * time.Hour

// importPrefix names the anchors of import parameters, one per key ID.
const importPrefix = "keyring/import/"

// ImportParams are what an operator wraps a private key to: the public
// key of a wrapping key pair made in the backend, the wrapping the
// backend unwraps, and the one-time token the import presents.
type ImportParams struct {
	Public   *rsa.PublicKey
	Wrapping signer.Wrapping
	Token    string
	Expires  time.Time
}

// importRecord is the stored side of import parameters: the token only
// as its hash.
type importRecord struct {
	Backend     string           `json:"backend"`
	Algorithm   signer.Algorithm `json:"algorithm"`
	RSABits     int              `json:"rsa_bits,omitempty"`
	Ref         string           `json:"ref"` // the wrapping key pair
	TokenSHA256 string           `json:"token_sha256"`
	Expires     time.Time        `json:"expires"`
	Used        bool             `json:"used,omitempty"` // presented: its wrapping key is being destroyed
}

// NewImportParams makes import parameters for key id, of algorithm alg
// (rsaBits for RSA, 2048 if zero) in backend ("" for the default),
// replacing any earlier ones for id. The record is written before the
// wrapping key is made, so a crash between leaves a record that expires
// and takes the key with it, never a key nothing names.
func (r *Keyring) NewImportParams(ctx context.Context, id string, alg signer.Algorithm, rsaBits int, backend string) (ImportParams, error) {
	spec := CreateSpec{ID: id, Algorithm: alg, RSABits: rsaBits, Backend: backend}
	if err := r.checkImportSpec(&spec); err != nil {
		return ImportParams{}, err
	}
	a, km, imp, err := r.importer(spec.Backend)
	if err != nil {
		return ImportParams{}, err
	}
	if err := r.withinImportLimit(ctx, a, id); err != nil {
		return ImportParams{}, err
	}
	if cur, ok, err := r.importRecordOf(ctx, a, id); err != nil {
		return ImportParams{}, err
	} else if ok {
		if err := r.discard(ctx, id, cur); err != nil {
			return ImportParams{}, err
		}
	}
	ref, err := km.NewRef(id+".import", r.owner)
	if err != nil {
		return ImportParams{}, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return ImportParams{}, errs.Wrap(errs.Internal, err, "import token")
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	rec := importRecord{Backend: spec.Backend, Algorithm: spec.Algorithm, RSABits: spec.RSABits, Ref: ref,
		TokenSHA256: hex.EncodeToString(sum[:]), Expires: r.now().UTC().Add(ImportTTL)}
	b, _ := json.Marshal(rec)
	if err := a.PutAnchor(ctx, importPrefix+id, b); err != nil {
		return ImportParams{}, err
	}
	pub, w, err := imp.NewWrappingKey(ctx, ref)
	if err != nil {
		_ = r.discard(context.WithoutCancel(ctx), id, rec)
		return ImportParams{}, err
	}
	return ImportParams{Public: pub, Wrapping: w, Token: token, Expires: rec.Expires}, nil
}

// MaxImportParams bounds the import parameters outstanding in one
// namespace: each is an RSA-3072 key pair in the HSM.
const MaxImportParams = 16

// withinImportLimit refuses import parameters for id past
// MaxImportParams outstanding in its namespace (replacing id's own is
// not one more).
func (r *Keyring) withinImportLimit(ctx context.Context, a Anchors, id string) error {
	all, err := a.ListAnchors(ctx, importPrefix)
	if err != nil {
		return err
	}
	ns, n := namespace.Of(id), 0
	for name := range all {
		if other := strings.TrimPrefix(name, importPrefix); other != id && namespace.Of(other) == ns {
			n++
		}
	}
	if n >= MaxImportParams {
		return errs.New(errs.ResourceExhausted, "namespace %q has %d import parameters outstanding, the most it may: import with them, or let them expire", ns, n)
	}
	return nil
}

// importRecordOf is id's import parameters, if any.
func (r *Keyring) importRecordOf(ctx context.Context, a Anchors, id string) (importRecord, bool, error) {
	b, err := a.GetAnchor(ctx, importPrefix+id)
	if errs.Is(err, errs.NotFound) {
		return importRecord{}, false, nil
	}
	if err != nil {
		return importRecord{}, false, err
	}
	var rec importRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return importRecord{Ref: "corrupt"}, true, nil // discarded as it is
	}
	return rec, true, nil
}

// checkImportSpec checks what import parameters are asked for and fills
// in the defaults, as a creation would.
func (r *Keyring) checkImportSpec(s *CreateSpec) error {
	if err := ValidateName(s.ID); err != nil {
		return err
	}
	if strings.HasPrefix(namespace.Local(s.ID), "sigil.") {
		return errs.New(errs.InvalidArgument, "key %q: keys named sigil.* are Sigil's own and cannot be imported", s.ID)
	}
	if _, err := signer.ParseAlgorithm(string(s.Algorithm)); err != nil {
		return errs.New(errs.InvalidArgument, "algorithm: %v", err)
	}
	if s.Algorithm.IsRSA() && s.RSABits == 0 {
		s.RSABits = 2048
	}
	if s.Backend == "" {
		s.Backend = r.defaultBackend
	}
	return nil
}

// importer is backend name as what imports need of it: the store's
// anchors and the backend's key management and import.
func (r *Keyring) importer(name string) (Anchors, signer.KeyManager, signer.Importer, error) {
	a, ok := r.store.(Anchors)
	if !ok {
		return nil, nil, nil, errs.New(errs.FailedPrecondition, "this keyring store cannot hold import parameters")
	}
	km, _ := r.backends[name].(signer.KeyManager)
	imp, ok := r.backends[name].(signer.Importer)
	if km == nil || !ok {
		return nil, nil, nil, errs.New(errs.FailedPrecondition, "backend %q cannot import keys (a PKCS#11 backend can; AWS KMS import of asymmetric keys is not supported): generate the key in it, or import it into a PKCS#11 backend", name)
	}
	return a, km, imp, nil
}

// discard destroys the wrapping key of import parameters rec, then
// removes id's record if it is still rec's, in one update: parameters
// asked for again meanwhile are not touched. A crash between leaves a
// record naming no key, which the sweep removes once it expires.
func (r *Keyring) discard(ctx context.Context, id string, rec importRecord) error {
	a, ok := r.store.(Anchors)
	if !ok {
		return nil
	}
	if km, ok := r.backends[rec.Backend].(signer.KeyManager); ok && rec.Ref != "corrupt" {
		if err := km.DestroyKey(ctx, rec.Ref); err != nil && !errs.Is(err, errs.NotFound) {
			return err
		}
	}
	return a.UpdateAnchor(ctx, importPrefix+id, func(old []byte) ([]byte, error) {
		var cur importRecord
		if old != nil && json.Unmarshal(old, &cur) == nil && cur.Ref != rec.Ref {
			return old, nil
		}
		return nil, nil
	})
}

// ImportSpec is what an import presents: the token of its parameters,
// the wrapped private key, and its public key.
type ImportSpec struct {
	Token   string
	Wrapped []byte
	Public  crypto.PublicKey
}

// Import unwraps a private key into s's backend as key s.ID, a new key
// with an active first generation or, for a key that exists, its next
// generation as a rotation would place it. The parameters' token is
// taken (checked and marked used) in one atomic step, so it serves one
// import; their wrapping key is destroyed whatever the outcome. The
// key's or generation's origin is imported.
func (r *Keyring) Import(ctx context.Context, s CreateSpec, in ImportSpec) (*Key, error) {
	if err := r.checkImportSpec(&s); err != nil {
		return nil, err
	}
	k, err := r.Get(ctx, s.ID)
	switch {
	case err == nil && rotation(k) == RotateNever:
		return nil, errs.New(errs.FailedPrecondition, "key %q has purpose %s, whose keys do not rotate: import it as a new key", s.ID, k.Purpose)
	case err == nil && (k.Algorithm != s.Algorithm || k.RSABits != s.RSABits):
		return nil, errs.New(errs.InvalidArgument, "key %q is %s: a generation imported into it must be too", s.ID, describeAlg(k.Algorithm, k.RSABits))
	case err == nil:
		if err := changeable(k); err != nil {
			return nil, err
		}
	case !errs.Is(err, errs.NotFound):
		return nil, err
	}
	release, err := r.claimPublic(ctx, in.Public, s.ID)
	if err != nil {
		return nil, err
	}
	rec, err := r.takeImport(ctx, s, in.Token)
	if err != nil {
		release()
		return nil, err
	}
	defer func() { _ = r.discard(context.WithoutCancel(ctx), s.ID, rec) }()
	s.Backend, s.imported = rec.Backend, &signer.Import{WrappingRef: rec.Ref, Wrapped: in.Wrapped, Public: in.Public}
	var out *Key
	if k != nil {
		out, err = r.rotate(ctx, s.ID, false, s.imported)
	} else {
		out, err = r.Create(ctx, s)
	}
	if err != nil {
		release()
	}
	return out, err
}

// takeImport checks token against s.ID's import parameters and marks
// them used, in one update of their record: of two imports presenting
// one token, one gets it. Presented with their token, the parameters
// are spent whatever follows (past their time, or for another
// algorithm, they are discarded at once); a wrong token leaves them.
func (r *Keyring) takeImport(ctx context.Context, s CreateSpec, token string) (importRecord, error) {
	a, ok := r.store.(Anchors)
	if !ok {
		return importRecord{}, errs.New(errs.FailedPrecondition, "this keyring store cannot hold import parameters")
	}
	sum := sha256.Sum256([]byte(token))
	var (
		rec     importRecord
		refusal error // with the right token: the parameters are spent all the same
	)
	err := a.UpdateAnchor(ctx, importPrefix+s.ID, func(old []byte) ([]byte, error) {
		rec, refusal = importRecord{}, nil
		if old == nil || json.Unmarshal(old, &rec) != nil {
			return nil, errs.New(errs.FailedPrecondition, "key %q has no import parameters: ask for them first (sigil keys import-params)", s.ID)
		}
		want, _ := hex.DecodeString(rec.TokenSHA256)
		switch {
		case subtle.ConstantTimeCompare(want, sum[:]) != 1:
			return nil, errs.New(errs.PermissionDenied, "the import token is not the one given with key %q's import parameters", s.ID)
		case rec.Used:
			return nil, errs.New(errs.FailedPrecondition, "key %q's import parameters were used already: ask for new ones", s.ID)
		case !r.now().Before(rec.Expires):
			refusal = errs.New(errs.FailedPrecondition, "key %q's import parameters expired at %s: ask for new ones (their wrapping key is destroyed)", s.ID, rec.Expires.Format(time.RFC3339))
		case rec.Algorithm != s.Algorithm || rec.RSABits != s.RSABits:
			refusal = errs.New(errs.InvalidArgument, "key %q's import parameters are for %s, not %s: ask for new ones (these are spent)", s.ID, describeAlg(rec.Algorithm, rec.RSABits), describeAlg(s.Algorithm, s.RSABits))
		}
		rec.Used = true
		return json.Marshal(rec)
	})
	if err != nil {
		return importRecord{}, err
	}
	if refusal != nil {
		_ = r.discard(context.WithoutCancel(ctx), s.ID, rec)
		return importRecord{}, refusal
	}
	return rec, nil
}

// describeAlg names an algorithm with its RSA size.
func describeAlg(alg signer.Algorithm, bits int) string {
	if alg.IsRSA() {
		return string(alg) + "-" + strconv.Itoa(bits)
	}
	return string(alg)
}

// sweepImports discards import parameters past their time, and their
// wrapping keys: those never presented, and those of an import that
// crashed before destroying its own.
func (r *Keyring) sweepImports(ctx context.Context) error {
	a, ok := r.store.(Anchors)
	if !ok {
		return nil
	}
	all, err := a.ListAnchors(ctx, importPrefix)
	if err != nil {
		return err
	}
	for name, b := range all {
		var rec importRecord
		if json.Unmarshal(b, &rec) != nil {
			rec.Ref = "corrupt"
		} else if r.now().Before(rec.Expires) {
			continue
		}
		// Expired parameters cannot be taken (takeImport checks the time
		// in its update), and parameters asked for again since are not
		// touched (discard removes only this record).
		if err := r.discard(ctx, strings.TrimPrefix(name, importPrefix), rec); err != nil {
			return err
		}
	}
	return nil
}

// claimedPrefix names the claims on public keys made outside Sigil.
const claimedPrefix = "keyring/claimed/"

// claimPublic claims public key pub, imported or adopted, for key id in
// one atomic step (id's own claim stands for a retry), and returns what
// releases a claim it made if the import or adoption fails. A key pair made outside Sigil may exist more than once (the
// same private key imported twice, or imported and adopted): under two
// IDs it would have two ledgers, and one Ethereum address could sign
// one nonce twice. A claim stays once its key exists, after the key is
// deleted too: the ledger that guarded the pair is gone with it.
func (r *Keyring) claimPublic(ctx context.Context, pub crypto.PublicKey, id string) (func(), error) {
	a, ok := r.store.(Anchors)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "this keyring store cannot record an import")
	}
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "the public key: %v", err)
	}
	sum := sha256.Sum256(der)
	name := claimedPrefix + hex.EncodeToString(sum[:])
	created := false
	err = a.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		if old != nil && string(old) != id {
			return nil, errs.New(errs.AlreadyExists, "this key pair was imported or adopted as key %q already: one pair, one key (two would keep two ledgers for one address)", old)
		}
		created = old == nil
		return []byte(id), nil
	})
	if err != nil {
		return nil, err
	}
	if !created { // the key's own claim, from before: a retry's
		return func() {}, nil
	}
	return func() {
		_ = a.UpdateAnchor(context.WithoutCancel(ctx), name, func(old []byte) ([]byte, error) {
			if string(old) != id {
				return old, nil
			}
			return nil, nil
		})
	}, nil
}

// importing is a backend whose CreateKey unwraps an imported key pair
// instead of generating one: the rest of a creation (the record written
// first, the rollback by reference) is a generation's.
type importing struct {
	signer.KeyManager
	imp      signer.Importer
	material signer.Import
}

func (i importing) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	return i.imp.ImportKey(ctx, req, i.material)
}

// pairSource is km, or km importing material if there is one.
func (r *Keyring) pairSource(km signer.KeyManager, backend string, material *signer.Import) (signer.KeyManager, error) {
	if material == nil {
		return km, nil
	}
	imp, ok := r.backends[backend].(signer.Importer)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q cannot import keys", backend)
	}
	return importing{km, imp, *material}, nil
}
