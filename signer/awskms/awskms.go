package awskms

import (
	"context"
	"crypto"
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
}

// Backend signs with KMS keys.
type Backend struct {
	name    string
	cfg     Config
	client  *kms.Client
	limiter *rate.Limiter
	slots   chan struct{}
	public  sync.Map // ref -> crypto.PublicKey
}

var (
	_ signer.Backend       = (*Backend)(nil)
	_ signer.KeyManager    = (*Backend)(nil)
	_ signer.KeyDisabler   = (*Backend)(nil)
	_ signer.HealthChecker = (*Backend)(nil)
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
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a start-up probe, not a request path
	defer cancel()
	if err := b.Healthy(cctx); err != nil {
		return nil, errs.New(errs.Unavailable, "KMS in region %s at %s does not answer: %v", cfg.Region, endpointName(cfg), err)
	}
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

// Close releases nothing: the SDK client holds no sessions.
func (b *Backend) Close() error { return nil }

// Healthy reports whether KMS answers.
func (b *Backend) Healthy(ctx context.Context) error {
	_, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	})
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

// call admits the request, runs it and classifies its error.
func (b *Backend) call(ctx context.Context, fn func(context.Context) (any, error)) (any, error) {
	release, err := b.admit(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	out, err := fn(ctx)
	return out, classify(ctx, err)
}

// classify maps KMS and transport errors to kinds.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errs.FromContext(ctx, "calling KMS")
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NotFoundException":
			return errs.New(errs.FailedPrecondition, "KMS key not found (deleted behind Sigil's back?)")
		case "DisabledException", "KMSInvalidStateException", "KeyUnavailableException":
			return errs.New(errs.FailedPrecondition, "KMS key is disabled or pending deletion")
		case "ThrottlingException", "LimitExceededException":
			return errs.New(errs.ResourceExhausted, "KMS throttled the request: %s", api.ErrorCode())
		case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException":
			return errs.New(errs.FailedPrecondition, "KMS refused the credentials: %s", api.ErrorCode())
		case "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailableException":
			return errs.New(errs.Unavailable, "KMS unavailable: %s", api.ErrorCode())
		case "ValidationException", "UnsupportedOperationException", "InvalidKeyUsageException":
			return errs.New(errs.FailedPrecondition, "KMS refused the operation: %s", api.ErrorCode())
		}
		return errs.New(errs.Internal, "KMS error %s", api.ErrorCode())
	}
	var netErr net.Error
	if errors.As(err, &netErr) || strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "EOF") {
		return errs.New(errs.Unavailable, "KMS unreachable")
	}
	return errs.New(errs.Unavailable, "calling KMS: %s", kind(err))
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
	return "alias/sigil/" + r.Replace(name)
}

// NameRef is the alias of the key created under name.
func (b *Backend) NameRef(name string) string { return aliasName(name) }

// CreateKey creates a signing key in KMS, tagged and aliased with name.
func (b *Backend) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	spec, err := specFor(req.Algorithm, req.RSABits)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	tags := []types.Tag{{TagKey: aws.String("sigil:key"), TagValue: aws.String(req.Name)}}
	for k, v := range b.cfg.Tags {
		tags = append(tags, types.Tag{TagKey: aws.String(k), TagValue: aws.String(v)})
	}
	out, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec, KeyUsage: types.KeyUsageTypeSignVerify, Tags: tags,
			Description: aws.String("Sigil " + req.Name)})
	})
	if err != nil {
		if req.Algorithm == signer.EdDSA && errs.Is(err, errs.FailedPrecondition) {
			return signer.KeyInfo{}, errs.New(errs.FailedPrecondition, "backend %q: this KMS does not offer EdDSA (Ed25519) keys", b.name)
		}
		return signer.KeyInfo{}, err
	}
	arn := aws.ToString(out.(*kms.CreateKeyOutput).KeyMetadata.Arn)
	if _, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(aliasName(req.Name)), TargetKeyId: aws.String(arn)})
	}); err != nil {
		// The caller's context may be what failed; the cleanup gets its own.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := b.scheduleDeletion(cctx, arn); derr != nil {
			return signer.KeyInfo{}, fmt.Errorf("%w (and the new key, tagged sigil:key=%s, could not be scheduled for deletion: %v)", err, req.Name, derr)
		}
		return signer.KeyInfo{}, err
	}
	pub, err := b.Public(ctx, arn)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	return signer.KeyInfo{Ref: arn, Public: pub}, nil
}

// Public returns the key's public key, fetched once.
func (b *Backend) Public(ctx context.Context, ref string) (crypto.PublicKey, error) {
	if pub, ok := b.public.Load(ref); ok {
		return pub, nil
	}
	out, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(ref)})
	})
	if err != nil {
		return nil, err
	}
	pub, err := signer.ParsePublicKey(out.(*kms.GetPublicKeyOutput).PublicKey)
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
	out, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.Sign(ctx, &kms.SignInput{KeyId: aws.String(ref), Message: input, MessageType: msgType, SigningAlgorithm: signingAlgorithm(alg)})
	})
	if err != nil {
		return nil, err
	}
	sig := out.(*kms.SignOutput).Signature
	if alg.IsECDSA() {
		size := 32
		if alg == signer.ES384 {
			size = 48
		}
		return signer.DERToRaw(sig, size)
	}
	return sig, nil
}

// DestroyKey schedules deletion of the key ref names (an ARN or the
// alias) and deletes its aliases. A key that is gone or already pending
// deletion is not an error.
func (b *Backend) DestroyKey(ctx context.Context, ref string) error {
	out, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	})
	if err != nil {
		if errs.Is(err, errs.FailedPrecondition) && strings.Contains(err.Error(), "not found") {
			return nil
		}
		return err
	}
	arn := aws.ToString(out.(*kms.DescribeKeyOutput).KeyMetadata.Arn)
	aliases, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(arn)})
	})
	if err != nil {
		return err
	}
	for _, a := range aliases.(*kms.ListAliasesOutput).Aliases {
		if _, err := b.call(ctx, func(ctx context.Context) (any, error) {
			return b.client.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: a.AliasName})
		}); err != nil {
			return err
		}
	}
	return b.scheduleDeletion(ctx, arn)
}

func (b *Backend) scheduleDeletion(ctx context.Context, arn string) error {
	_, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(b.cfg.DeletionWindowDays)})
	})
	if errs.Is(err, errs.FailedPrecondition) { // already pending deletion
		return nil
	}
	return err
}

// DisableKey disables the key at once, so KMS itself refuses to sign.
func (b *Backend) DisableKey(ctx context.Context, ref string) error {
	_, err := b.call(ctx, func(ctx context.Context) (any, error) {
		return b.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(ref)})
	})
	return err
}
