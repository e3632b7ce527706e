package awskms

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"golang.org/x/time/rate"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// Type is the backend type name.
const Type = "awskms"

func init() { signer.Register(Type, signer.Decoding(Open)) }

// Config is an awskms backend's section of the configuration file.
type Config struct {
	Region         string  `yaml:"region"`
	Endpoint       string  `yaml:"endpoint"`        // for emulators; the region's endpoint if empty
	MaxRPS         float64 `yaml:"max_rps"`         // admitted requests per second; 250 if 0
	MaxConcurrency int     `yaml:"max_concurrency"` // requests in flight; 32 if 0
	// DeletionWindowDays is how long a destroyed generation's KMS key
	// waits for deletion (KMS allows 7 to 30 days); 7 if 0.
	DeletionWindowDays int32             `yaml:"deletion_window_days"`
	Tags               map[string]string `yaml:"tags"` // added to every key Sigil creates
	// HealthInterval is how often KMS is probed;
	// signer.DefaultHealthInterval if 0.
	HealthInterval time.Duration `yaml:"health_interval"`
}

// client is the part of the KMS API the backend uses; *kms.Client has it.
type client interface {
	CreateKey(context.Context, *kms.CreateKeyInput, ...func(*kms.Options)) (*kms.CreateKeyOutput, error)
	CreateAlias(context.Context, *kms.CreateAliasInput, ...func(*kms.Options)) (*kms.CreateAliasOutput, error)
	GetPublicKey(context.Context, *kms.GetPublicKeyInput, ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error)
	Sign(context.Context, *kms.SignInput, ...func(*kms.Options)) (*kms.SignOutput, error)
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	ListKeys(context.Context, *kms.ListKeysInput, ...func(*kms.Options)) (*kms.ListKeysOutput, error)
	ListAliases(context.Context, *kms.ListAliasesInput, ...func(*kms.Options)) (*kms.ListAliasesOutput, error)
	DeleteAlias(context.Context, *kms.DeleteAliasInput, ...func(*kms.Options)) (*kms.DeleteAliasOutput, error)
	ScheduleKeyDeletion(context.Context, *kms.ScheduleKeyDeletionInput, ...func(*kms.Options)) (*kms.ScheduleKeyDeletionOutput, error)
	DisableKey(context.Context, *kms.DisableKeyInput, ...func(*kms.Options)) (*kms.DisableKeyOutput, error)
	ListResourceTags(context.Context, *kms.ListResourceTagsInput, ...func(*kms.Options)) (*kms.ListResourceTagsOutput, error)
}

var _ client = (*kms.Client)(nil)

// Backend signs with KMS keys.
type Backend struct {
	name    string
	cfg     Config
	client  client
	limiter *rate.Limiter
	slots   chan struct{}
	public  sync.Map // ref -> crypto.PublicKey
	marks   sync.Map // key ID -> marks, read once from its tags
	health  *signer.Monitor
}

var (
	_ signer.Backend        = (*Backend)(nil)
	_ signer.KeyManager     = (*Backend)(nil)
	_ signer.KeyDisabler    = (*Backend)(nil)
	_ signer.HealthReporter = (*Backend)(nil)
	_ signer.KeyLister      = (*Backend)(nil)
)

// Open checks that credentials exist and that KMS answers.
func Open(ctx context.Context, name string, cfg Config) (*Backend, error) {
	if cfg.Region == "" {
		return nil, errs.New(errs.InvalidArgument, "region: missing")
	}
	if cfg.MaxRPS == 0 {
		cfg.MaxRPS = 250
	}
	if cfg.MaxConcurrency == 0 {
		cfg.MaxConcurrency = 32
	}
	if cfg.DeletionWindowDays == 0 {
		cfg.DeletionWindowDays = 7
	}
	if cfg.MaxRPS < 0 || cfg.MaxConcurrency < 0 || cfg.DeletionWindowDays < 7 || cfg.DeletionWindowDays > 30 {
		return nil, errs.New(errs.InvalidArgument, "max_rps, max_concurrency must be positive and deletion_window_days 7 to 30")
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.Region))
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "AWS configuration: %s", kind(err))
	}
	if _, err := awsCfg.Credentials.Retrieve(ctx); err != nil {
		return nil, errs.New(errs.FailedPrecondition, "no AWS credentials found in the SDK's default chain (environment, shared config, web identity, instance role)")
	}
	b := &Backend{name: name, cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.MaxRPS), max(1, int(cfg.MaxRPS))), slots: make(chan struct{}, cfg.MaxConcurrency)}
	b.client = kms.NewFromConfig(awsCfg, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	b.health = signer.NewMonitor(name, cfg.HealthInterval, b.probe, nil)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a start-up probe, not a request path
	defer cancel()
	if err := b.probe(cctx); err != nil {
		return nil, errs.New(errs.Unavailable, "KMS in region %s at %s does not answer: %v", cfg.Region, endpointName(cfg), err)
	}
	b.health.Start()
	return b, nil
}

func endpointName(cfg Config) string {
	if cfg.Endpoint == "" {
		return "its default endpoint"
	}
	return cfg.Endpoint
}

// kind describes err by type only: SDK errors can quote configuration.
func kind(err error) string { return fmt.Sprintf("%T", err) }

// Close stops the health probe; the SDK client holds no sessions.
func (b *Backend) Close() error {
	b.health.Stop()
	return nil
}

// Health reports what the health probe last found.
func (b *Backend) Health() signer.Health { return b.health.Health() }

// probe proves KMS answers Sigil's credentials. Throttling is an answer:
// it must not take the backend down.
func (b *Backend) probe(ctx context.Context) error {
	_, err := do(ctx, b, func(ctx context.Context) (*kms.ListKeysOutput, error) {
		return b.client.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	})
	if errors.Is(err, ErrThrottled) {
		return nil
	}
	return err
}

// admit waits for a request slot within the rate and concurrency limits,
// while the caller's deadline allows.
func (b *Backend) admit(ctx context.Context) (func(), error) {
	if err := errs.FromContext(ctx, "waiting for KMS"); err != nil {
		return nil, err
	}
	if err := b.limiter.Wait(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return nil, errs.FromContext(ctx, "waiting for KMS")
		}
		return nil, errs.New(errs.ResourceExhausted, "backend %q: over its %g requests/s until the deadline", b.name, b.cfg.MaxRPS)
	}
	select {
	case b.slots <- struct{}{}:
		return func() { <-b.slots }, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, errs.FromContext(ctx, "waiting for KMS")
		}
		return nil, errs.New(errs.ResourceExhausted, "backend %q: all %d request slots busy until the deadline", b.name, b.cfg.MaxConcurrency)
	}
}

// call runs a request unless the health probe finds KMS down, when it
// fails fast.
func call[T any](ctx context.Context, b *Backend, fn func(context.Context) (T, error)) (T, error) {
	if err := b.health.Err(); err != nil {
		var zero T
		return zero, err
	}
	return do(ctx, b, fn)
}

// do admits a request within the rate and concurrency limits, runs it and
// classifies its error.
func do[T any](ctx context.Context, b *Backend, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	release, err := b.admit(ctx)
	if err != nil {
		return zero, err
	}
	defer release()
	out, err := fn(ctx)
	if err = classify(ctx, b.name, err); errs.Is(err, errs.Unavailable) {
		b.health.Poke()
	}
	return out, err
}

// The causes of KMS errors, for errors.Is: callers decide by cause, never
// by message text.
var (
	ErrNotFound     = errors.New("KMS key not found")
	ErrDisabled     = errors.New("KMS key disabled")
	ErrInvalidState = errors.New("KMS key in a state that refuses this (pending deletion, pending import or unavailable)")
	ErrAccessDenied = errors.New("KMS refused Sigil's credentials; an operator must fix the IAM policy or credentials")
	ErrThrottled    = errors.New("KMS throttled the request")
	ErrUnavailable  = errors.New("KMS unavailable")
	ErrRefused      = errors.New("KMS refused the request as invalid or unsupported")
	ErrExists       = errors.New("KMS already has it")
)

// kmsError is what an API error code means: its kind and its cause.
type kmsError struct {
	kind  errs.Kind
	cause error
}

// codes maps every KMS error code Sigil's calls can get to a kind and a
// cause; a code not here is Internal.
var codes = map[string]kmsError{
	"NotFoundException":                            {errs.Unavailable, ErrNotFound},
	"DisabledException":                            {errs.FailedPrecondition, ErrDisabled},
	"KMSInvalidStateException":                     {errs.FailedPrecondition, ErrInvalidState},
	"KeyUnavailableException":                      {errs.Unavailable, ErrUnavailable},
	"ThrottlingException":                          {errs.ResourceExhausted, ErrThrottled},
	"LimitExceededException":                       {errs.ResourceExhausted, ErrThrottled},
	"AccessDeniedException":                        {errs.PermissionDenied, ErrAccessDenied},
	"UnrecognizedClientException":                  {errs.PermissionDenied, ErrAccessDenied},
	"InvalidSignatureException":                    {errs.PermissionDenied, ErrAccessDenied},
	"IncompleteSignature":                          {errs.PermissionDenied, ErrAccessDenied},
	"ExpiredTokenException":                        {errs.PermissionDenied, ErrAccessDenied},
	"InvalidGrantTokenException":                   {errs.PermissionDenied, ErrAccessDenied},
	"KMSInternalException":                         {errs.Unavailable, ErrUnavailable},
	"DependencyTimeoutException":                   {errs.Unavailable, ErrUnavailable},
	"ServiceUnavailableException":                  {errs.Unavailable, ErrUnavailable},
	"CustomKeyStoreInvalidStateException":          {errs.Unavailable, ErrUnavailable},
	"CloudHsmClusterInvalidConfigurationException": {errs.FailedPrecondition, ErrRefused},
	"CustomKeyStoreNotFoundException":              {errs.FailedPrecondition, ErrRefused},
	"ValidationException":                          {errs.FailedPrecondition, ErrRefused},
	"UnsupportedOperationException":                {errs.FailedPrecondition, ErrRefused},
	"InvalidKeyUsageException":                     {errs.FailedPrecondition, ErrRefused},
	"InvalidArnException":                          {errs.FailedPrecondition, ErrRefused},
	"InvalidAliasNameException":                    {errs.FailedPrecondition, ErrRefused},
	"MalformedPolicyDocumentException":             {errs.FailedPrecondition, ErrRefused},
	"TagException":                                 {errs.FailedPrecondition, ErrRefused},
	"DryRunOperationException":                     {errs.FailedPrecondition, ErrRefused},
	"AlreadyExistsException":                       {errs.AlreadyExists, ErrExists},
}

// classify maps KMS and transport errors to kinds and causes. A key KMS
// does not find although Sigil holds its reference is also
// signer.ErrKeyMissing: an outage or a deletion behind Sigil's back.
func classify(ctx context.Context, backend string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errs.FromContext(ctx, "calling KMS")
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		c, ok := codes[api.ErrorCode()]
		switch {
		case !ok:
			return errs.New(errs.Internal, "backend %s: KMS error %s", backend, api.ErrorCode())
		case c.cause == ErrNotFound:
			return errs.New(c.kind, "backend %s: %w (%w)", backend, signer.ErrKeyMissing, c.cause)
		}
		return errs.New(c.kind, "backend %s: %w: %s", backend, c.cause, api.ErrorCode())
	}
	var netErr net.Error
	if errors.As(err, &netErr) || strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "EOF") {
		return errs.New(errs.Unavailable, "backend %s: %w: unreachable", backend, ErrUnavailable)
	}
	return errs.New(errs.Unavailable, "backend %s: %w: %s", backend, ErrUnavailable, kind(err))
}

// keySpec and signing algorithm for each Sigil algorithm.
func specFor(alg signer.Algorithm, bits int) (types.KeySpec, error) {
	switch alg {
	case signer.ES256:
		return types.KeySpecEccNistP256, nil
	case signer.ES384:
		return types.KeySpecEccNistP384, nil
	case signer.ES256K:
		return types.KeySpecEccSecgP256k1, nil
	case signer.EdDSA:
		return types.KeySpecEccNistEdwards25519, nil
	case signer.RS256, signer.PS256:
		switch bits {
		case 2048:
			return types.KeySpecRsa2048, nil
		case 3072:
			return types.KeySpecRsa3072, nil
		}
		return "", errs.New(errs.InvalidArgument, "RSA key size must be 2048 or 3072, got %d", bits)
	}
	return "", errs.New(errs.InvalidArgument, "unknown algorithm %q", alg)
}

func signingAlgorithm(alg signer.Algorithm) types.SigningAlgorithmSpec {
	switch alg {
	case signer.ES384:
		return types.SigningAlgorithmSpecEcdsaSha384
	case signer.RS256:
		return types.SigningAlgorithmSpecRsassaPkcs1V15Sha256
	case signer.PS256:
		return types.SigningAlgorithmSpecRsassaPssSha256
	case signer.EdDSA:
		return types.SigningAlgorithmSpecEd25519Sha512
	}
	return types.SigningAlgorithmSpecEcdsaSha256
}

// cleanupTimeout bounds the deletion of a key whose alias could not be
// made, which runs even when the caller's context has ended.
const cleanupTimeout = 30 * time.Second

// aliasName is the alias of a key created under name. Aliases allow
// letters, digits, '/', '_' and '-': '.' and '_' are escaped as _2e, _5f.
func aliasName(name string) string {
	r := strings.NewReplacer("_", "_5f", ".", "_2e")
	return aliasPrefix + r.Replace(name)
}

const aliasPrefix = "alias/sigil/"

// ListKeys returns the live keys Sigil created in the account for owner:
// those whose tags say sigil:key (their name) and sigil:owner (owner, in
// hex), aliased or not (a creation cut short between the key and its
// alias has no alias). Keys pending deletion are left out. A key's tags
// are read once: they are set when Sigil creates it.
func (b *Backend) ListKeys(ctx context.Context, owner []byte) ([]signer.ListedKey, error) {
	var out []signer.ListedKey
	for page := (*string)(nil); ; {
		res, err := call(ctx, b, func(ctx context.Context) (*kms.ListKeysOutput, error) {
			return b.client.ListKeys(ctx, &kms.ListKeysInput{Marker: page})
		})
		if err != nil {
			return nil, err
		}
		for _, k := range res.Keys {
			id := aws.ToString(k.KeyId)
			m, err := b.marksOf(ctx, id)
			if err != nil {
				return nil, err
			}
			if m.name == "" || m.owner != hex.EncodeToString(owner) {
				continue
			}
			live, err := b.live(ctx, id)
			if err != nil {
				return nil, err
			}
			if live {
				out = append(out, signer.ListedKey{Name: m.name, Ref: id})
			}
		}
		if page = res.NextMarker; !res.Truncated {
			break
		}
	}
	return out, nil
}

// marks are the tags by which Sigil knows its keys.
type marks struct{ name, owner string }

// marksOf returns key id's marks (empty for another application's key),
// from its tags, read once.
func (b *Backend) marksOf(ctx context.Context, id string) (marks, error) {
	if m, ok := b.marks.Load(id); ok {
		return m.(marks), nil
	}
	tags, err := call(ctx, b, func(ctx context.Context) (*kms.ListResourceTagsOutput, error) {
		return b.client.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(id)})
	})
	if err != nil {
		return marks{}, err
	}
	var m marks
	for _, t := range tags.Tags {
		switch aws.ToString(t.TagKey) {
		case tagKey:
			m.name = aws.ToString(t.TagValue)
		case ownerTagKey:
			m.owner = aws.ToString(t.TagValue)
		}
	}
	b.marks.Store(id, m)
	return m, nil
}

// live reports whether key id is not pending deletion.
func (b *Backend) live(ctx context.Context, id string) (bool, error) {
	d, err := call(ctx, b, func(ctx context.Context) (*kms.DescribeKeyOutput, error) {
		return b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)})
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil && d.KeyMetadata.KeyState != types.KeyStatePendingDeletion, err
}

// NewRef is the alias the key about to be created under name will have.
func (b *Backend) NewRef(name string, _ []byte) (string, error) { return aliasName(name), nil }

// CreateKey creates a signing key in KMS, tagged and aliased with name.
func (b *Backend) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	spec, err := specFor(req.Algorithm, req.RSABits)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	tags := []types.Tag{{TagKey: aws.String(tagKey), TagValue: aws.String(req.Name)}, {TagKey: aws.String(ownerTagKey), TagValue: aws.String(hex.EncodeToString(req.Owner))}}
	for k, v := range b.cfg.Tags {
		tags = append(tags, types.Tag{TagKey: aws.String(k), TagValue: aws.String(v)})
	}
	out, err := call(ctx, b, func(ctx context.Context) (*kms.CreateKeyOutput, error) {
		return b.client.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec, KeyUsage: types.KeyUsageTypeSignVerify, Tags: tags,
			Description: aws.String("Sigil " + req.Name)})
	})
	if err != nil {
		if req.Algorithm == signer.EdDSA && errors.Is(err, ErrRefused) {
			return signer.KeyInfo{}, errs.New(errs.FailedPrecondition, "backend %q: this KMS does not offer EdDSA (Ed25519) keys", b.name)
		}
		return signer.KeyInfo{}, err
	}
	arn := aws.ToString(out.KeyMetadata.Arn)
	if _, err := call(ctx, b, func(ctx context.Context) (*kms.CreateAliasOutput, error) {
		return b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(aliasName(req.Name)), TargetKeyId: aws.String(arn)})
	}); err != nil {
		// The caller's context may be what failed; the cleanup gets its own.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := b.scheduleDeletion(cctx, arn); derr != nil {
			return signer.KeyInfo{}, fmt.Errorf("%w (and the new key, tagged %s=%s, could not be scheduled for deletion: %v)", err, tagKey, req.Name, derr)
		}
		return signer.KeyInfo{}, err
	}
	pub, err := b.Public(ctx, arn)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	return signer.KeyInfo{Ref: arn, Public: pub}, nil
}

// tagKey is the tag every key Sigil creates carries, valued with the
// key's name: how an operator (or a sweep) tells Sigil's keys apart.
const tagKey = "sigil:key"

// ownerTagKey is the tag naming, in hex, the keyring that made the key:
// only its own keys are listed to its sweep.
const ownerTagKey = "sigil:owner"

// Public returns the key's public key, fetched once.
func (b *Backend) Public(ctx context.Context, ref string) (crypto.PublicKey, error) {
	if pub, ok := b.public.Load(ref); ok {
		return pub, nil
	}
	out, err := call(ctx, b, func(ctx context.Context) (*kms.GetPublicKeyOutput, error) {
		return b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(ref)})
	})
	if err != nil {
		return nil, err
	}
	pub, err := signer.ParsePublicKey(out.PublicKey)
	if err != nil {
		return nil, errs.New(errs.Internal, "KMS public key: %w", err)
	}
	b.public.Store(ref, pub)
	return pub, nil
}

// maxRawMessage is KMS's limit on a message signed as RAW (EdDSA).
const maxRawMessage = 4096

// Sign signs a digest (EdDSA: the message, at most 4096 bytes) in KMS.
// KMS answers ECDSA in DER; the contract's r‖s is returned.
func (b *Backend) Sign(ctx context.Context, ref string, alg signer.Algorithm, input []byte) ([]byte, error) {
	if err := alg.CheckInput(input); err != nil {
		return nil, err
	}
	msgType := types.MessageTypeDigest
	if alg == signer.EdDSA {
		if len(input) > maxRawMessage {
			return nil, errs.New(errs.InvalidArgument, "KMS signs EdDSA messages of at most %d bytes", maxRawMessage)
		}
		msgType = types.MessageTypeRaw
	}
	out, err := call(ctx, b, func(ctx context.Context) (*kms.SignOutput, error) {
		return b.client.Sign(ctx, &kms.SignInput{KeyId: aws.String(ref), Message: input, MessageType: msgType, SigningAlgorithm: signingAlgorithm(alg)})
	})
	if err != nil {
		return nil, err
	}
	if alg.IsECDSA() {
		size := 32
		if alg == signer.ES384 {
			size = 48
		}
		return signer.DERToRaw(out.Signature, size)
	}
	return out.Signature, nil
}

// DestroyKey schedules deletion of the key ref names (an ARN or the
// alias) and deletes its aliases. A key that is gone or already pending
// deletion is not an error; any other refusal (access denied among them)
// is, so the keyring never records a live key as destroyed.
func (b *Backend) DestroyKey(ctx context.Context, ref string) error {
	out, err := call(ctx, b, func(ctx context.Context) (*kms.DescribeKeyOutput, error) {
		return b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// Deletion is scheduled before the aliases go: a crash in between
	// leaves a key the alias still finds, so a retry finishes the job.
	arn := aws.ToString(out.KeyMetadata.Arn)
	if out.KeyMetadata.KeyState != types.KeyStatePendingDeletion {
		if err := b.scheduleDeletion(ctx, arn); err != nil {
			return err
		}
	}
	aliases, err := call(ctx, b, func(ctx context.Context) (*kms.ListAliasesOutput, error) {
		return b.client.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(arn)})
	})
	if err != nil {
		return err
	}
	for _, a := range aliases.Aliases {
		if _, err := call(ctx, b, func(ctx context.Context) (*kms.DeleteAliasOutput, error) {
			return b.client.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: a.AliasName})
		}); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

func (b *Backend) scheduleDeletion(ctx context.Context, arn string) error {
	_, err := call(ctx, b, func(ctx context.Context) (*kms.ScheduleKeyDeletionOutput, error) {
		return b.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(b.cfg.DeletionWindowDays)})
	})
	return err
}

// DisableKey disables the key at once, so KMS itself refuses to sign.
func (b *Backend) DisableKey(ctx context.Context, ref string) error {
	_, err := call(ctx, b, func(ctx context.Context) (*kms.DisableKeyOutput, error) {
		return b.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(ref)})
	})
	return err
}
