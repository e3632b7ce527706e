package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

func newKeys() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create and inspect keys"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newKeysRecover(), newKeysAdopt(c), newKeysImportParams(c), newKeysImport(c), newKeysCreate(c), newKeysList(c), newKeysGet(c), newKeysPolicy(c), newKeysRotate(c), newKeysRevoke(c),
		newKeysSwitch(c, "disable", "Refuse every signature with the key until it is enabled again", true),
		newKeysSwitch(c, "enable", "Let a disabled key sign again", false),
		newKeysScheduleDeletion(c), newKeysCancelDeletion(c), newKeysLabel(c), newKeysUnlabel(c))
	return cmd
}

// jwtFlags are a JWT key's rotation policy and JWK Set flags.
type jwtFlags struct {
	rotateEvery, publishAhead, maxTTL, skew time.Duration
	sets                                    []string
}

func addJWTFlags(f *pflag.FlagSet) *jwtFlags {
	j := &jwtFlags{}
	f.DurationVar(&j.rotateEvery, "rotate-every", 0, "jwt: how long each generation signs (P; default 168h)")
	f.DurationVar(&j.publishAhead, "publish-ahead", 0, "jwt: how long a generation is published before it signs (A; default 24h)")
	f.DurationVar(&j.maxTTL, "max-token-ttl", 0, "jwt: the longest token lifetime (T; default 1h)")
	f.DurationVar(&j.skew, "skew", 0, "jwt: clock skew tolerated by relying parties (S; default 1m)")
	f.StringSliceVar(&j.sets, "jwks-set", nil, "jwt: a JWK Set the key is published in, repeatable (default: default; ES256K keys: none)")
	return j
}

// policy is the policy the flags set, or nil if none is set.
func (j *jwtFlags) policy() *sigilv1.JWTPolicy {
	if j.rotateEvery == 0 && j.publishAhead == 0 && j.maxTTL == 0 && j.skew == 0 && len(j.sets) == 0 {
		return nil
	}
	d := func(v time.Duration) *durationpb.Duration {
		if v == 0 {
			return nil
		}
		return durationpb.New(v)
	}
	return &sigilv1.JWTPolicy{RotateEvery: d(j.rotateEvery), PublishAhead: d(j.publishAhead), MaxTokenTtl: d(j.maxTTL), Skew: d(j.skew), JwksSets: j.sets}
}

// ethFlags are an Ethereum key's spending policy flags.
type ethFlags struct {
	chainIDs                     []uint
	maxValue, maxFee, dailyLimit string
	allowTo, allowSelectors      []string
	maxNonceGap                  int64
}

func addEthFlags(f *pflag.FlagSet) *ethFlags {
	e := &ethFlags{}
	f.UintSliceVar(&e.chainIDs, "chain-ids", nil, "eth: chains the key signs for (required before it signs any transaction)")
	f.StringVar(&e.maxValue, "max-value", "", "eth: most wei per transaction")
	f.StringVar(&e.maxFee, "max-fee", "", "eth: most wei of fees per transaction (gas × max fee per gas)")
	f.StringVar(&e.dailyLimit, "daily-limit", "", "eth: most wei over a rolling 24 hours")
	f.StringSliceVar(&e.allowTo, "allow-to", nil, "eth: allowed destination addresses")
	f.StringSliceVar(&e.allowSelectors, "allow-selector", nil, "eth: allowed function selectors for calls, 0x12345678")
	f.Int64Var(&e.maxNonceGap, "max-nonce-gap", -1, "eth: refuse a nonce more than this past the highest signed on its chain (default: any)")
	return e
}

// policy is the policy the flags set, or nil if none is set.
func (e *ethFlags) policy() *sigilv1.EthPolicy {
	if len(e.chainIDs)+len(e.allowTo)+len(e.allowSelectors) == 0 && e.maxValue+e.maxFee+e.dailyLimit == "" && e.maxNonceGap < 0 {
		return nil
	}
	ids := make([]uint64, len(e.chainIDs))
	for i, id := range e.chainIDs {
		ids[i] = uint64(id)
	}
	p := &sigilv1.EthPolicy{ChainIds: ids, MaxValue: e.maxValue, MaxFee: e.maxFee, DailyLimit: e.dailyLimit,
		AllowTo: e.allowTo, AllowSelectors: e.allowSelectors}
	if e.maxNonceGap >= 0 {
		gap := uint64(e.maxNonceGap)
		p.MaxNonceGap = &gap
	}
	return p
}

// keyCall runs one KeyService call that answers with a key, and prints it.
func keyCall(c *clientFlags, cmd *cobra.Command, call func(context.Context, sigilv1.KeyServiceClient) (*sigilv1.Key, error)) error {
	return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
		k, err := call(ctx, sigilv1.NewKeyServiceClient(conn))
		if err != nil {
			return err
		}
		return printKey(cmd.OutOrStdout(), k, c.json)
	})
}

func newKeysPolicy(c *clientFlags) *cobra.Command {
	var j *jwtFlags
	var e *ethFlags
	cmd := &cobra.Command{
		Use:   "policy ID [jwt or eth policy flags]",
		Short: "Change a JWT key's rotation policy (unset flags keep their value) or replace an eth key's spending policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &sigilv1.UpdateKeyPolicyRequest{Id: args[0], JwtPolicy: j.policy(), EthPolicy: e.policy()}
			if req.JwtPolicy == nil && req.EthPolicy == nil {
				return errors.New("policy needs jwt flags (--rotate-every …) or eth flags (--chain-ids …)")
			}
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.UpdateKeyPolicy(ctx, req)
				return resp.GetKey(), err
			})
		},
	}
	j, e = addJWTFlags(cmd.Flags()), addEthFlags(cmd.Flags())
	return cmd
}

func newKeysRotate(c *clientFlags) *cobra.Command {
	var now bool
	cmd := &cobra.Command{
		Use:   "rotate ID [--now]",
		Short: "Start a new generation of a JWT key (signing after its publish-ahead time)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: args[0], Immediate: now})
				return resp.GetKey(), err
			})
		},
	}
	cmd.Flags().BoolVar(&now, "now", false, "emergency: sign with the new generation at once, before caches know it")
	return cmd
}

func newKeysRevoke(c *clientFlags) *cobra.Command {
	var gen int
	cmd := &cobra.Command{
		Use:   "revoke ID --generation N",
		Short: "Unpublish a generation at once; it never signs again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: args[0], Generation: int32(gen)})
				return resp.GetKey(), err
			})
		},
	}
	cmd.Flags().IntVar(&gen, "generation", 0, "the generation to revoke")
	cmd.MarkFlagRequired("generation")
	return cmd
}

// newKeysSwitch is `keys disable` or `keys enable`.
func newKeysSwitch(c *clientFlags, name, short string, disable bool) *cobra.Command {
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				if disable {
					resp, err := kc.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: args[0]})
					return resp.GetKey(), err
				}
				resp, err := kc.EnableKey(ctx, &sigilv1.EnableKeyRequest{Id: args[0]})
				return resp.GetKey(), err
			})
		},
	}
}

func newKeysCreate(c *clientFlags) *cobra.Command {
	return keysCreateCommand(c, "create")
}

// newKeysAdopt is keys adopt: keys create of a key pair already in the
// backend.
func newKeysAdopt(c *clientFlags) *cobra.Command {
	return keysCreateCommand(c, "adopt")
}

// newKeysImport is keys import: keys create of a private key wrapped to
// the key's import parameters.
func newKeysImport(c *clientFlags) *cobra.Command {
	return keysCreateCommand(c, "import")
}

// keysCreateCommand is keys create, adopt or import (mode): the same
// request and flags, generating a pair, taking over one or unwrapping one.
func keysCreateCommand(c *clientFlags, mode string) *cobra.Command {
	req := &sigilv1.CreateKeyRequest{}
	var bits int
	var labels []string
	var j *jwtFlags
	var e *ethFlags
	cmd := &cobra.Command{
		Use:   "create ID --alg ES256|ES384|ES256K|RS256|PS256|EdDSA",
		Short: "Generate a key inside its backend",
		Args:  cobra.ExactArgs(1),
	}
	var wrapped, publicKey string
	imported := &sigilv1.ImportedKey{}
	switch mode {
	case "import":
		cmd.Use, cmd.Short = "import ID --alg A --purpose P --wrapped FILE --import-token TOKEN --public-key FILE", "Import a private key wrapped to the key's import parameters (see keys import-params)"
		cmd.Long = `import makes key ID of a private key made outside Sigil, wrapped to the
import parameters keys import-params gave (docs/import.md has the openssl
commands), or for a key that exists, its next generation, placed as keys
rotate places one. The backend unwraps it as a sensitive, never
extractable key, checks it is of --alg and the private key of
--public-key (a signature), and the key's origin is imported: keys get
shows it, and whoever held the key before may still hold it. The
parameters serve one import, whatever its outcome.`
	case "adopt":
		cmd.Use, cmd.Short = "adopt ID --uri PKCS11-URI --purpose P", "Take over a key pair another tool made in the backend (sensitive, not extractable, able to sign)"
		cmd.Long = `adopt makes key ID of the key pair a PKCS#11 URI names in the backend
(pkcs11:object=LABEL, and id=… if labels repeat), made by another tool:
the private key must be sensitive, not extractable and able to sign; the
algorithm is read from the public key. keys get shows its origin as
adopted: Sigil did not generate it, and whoever made it may have held it.
Its objects are the key's from then on (revoking or deleting it destroys
them in time).`
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req.Id, req.RsaBits, req.JwtPolicy, req.EthPolicy = args[0], int32(bits), j.policy(), e.policy()
		var err error
		if req.Labels, err = parseLabels(labels); err != nil {
			return err
		}
		if mode == "import" {
			if req.Imported, err = readImported(imported, wrapped, publicKey); err != nil {
				return err
			}
		}
		return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
			resp, err := kc.CreateKey(ctx, req)
			return resp.GetKey(), err
		})
	}
	f := cmd.Flags()
	f.StringVar(&req.Algorithm, "alg", "", "ES256, ES384, ES256K, RS256, PS256 or EdDSA")
	f.StringVar(&req.Purpose, "purpose", "raw", "jwt, eth or raw")
	f.StringVar(&req.Backend, "backend", "", "backend name (the default backend if empty)")
	f.StringVar(&req.RequestId, "request-id", "", "makes a retry safe: the same request ID and spec return the existing key instead of AlreadyExists")
	f.IntVar(&bits, "rsa-bits", 0, "RSA modulus size for RS256/PS256: 2048 (default) or 3072")
	f.StringArrayVar(&labels, "label", nil, "a label K=V, repeatable")
	f.StringVar(&req.Owner, "owner", "", "who answers for the key")
	f.StringVar(&req.Description, "description", "", "what the key is for")
	j, e = addJWTFlags(f), addEthFlags(f)
	switch mode {
	case "import":
		f.StringVar(&wrapped, "wrapped", "", "the wrapped private key (docs/import.md)")
		f.StringVar(&imported.ImportToken, "import-token", "", "the token keys import-params gave")
		f.StringVar(&publicKey, "public-key", "", "the private key's public key, PEM")
		for _, name := range []string{"alg", "wrapped", "import-token", "public-key"} {
			cmd.MarkFlagRequired(name)
		}
		return cmd
	case "adopt":
		f.StringVar(&req.AdoptUri, "uri", "", "the key pair's PKCS#11 URI (pkcs11:object=LABEL[;id=…])")
		cmd.MarkFlagRequired("uri")
		f.Lookup("alg").Usage = "the algorithm, checked against the public key (read from it if unset; RS256 or PS256 for RSA)"
		return cmd
	}
	cmd.MarkFlagRequired("alg")
	return cmd
}

// readImported completes in with the wrapped key and public key files.
func readImported(in *sigilv1.ImportedKey, wrapped, publicKey string) (*sigilv1.ImportedKey, error) {
	var err error
	if in.WrappedKey, err = os.ReadFile(wrapped); err != nil {
		return nil, fmt.Errorf("--wrapped: %w", err)
	}
	text, err := os.ReadFile(publicKey)
	if err != nil {
		return nil, fmt.Errorf("--public-key: %w", err)
	}
	pub, err := signer.ParsePublicKeyPEM(string(text))
	if err != nil {
		return nil, fmt.Errorf("--public-key: %w", err)
	}
	if in.PublicKey, err = signer.MarshalPublicKey(pub); err != nil {
		return nil, fmt.Errorf("--public-key: %w", err)
	}
	return in, nil
}

// newKeysImportParams is keys import-params: the wrapping key, hash and
// token a private key is wrapped to for keys import.
func newKeysImportParams(c *clientFlags) *cobra.Command {
	req := &sigilv1.GetImportParametersRequest{}
	var bits int
	var outDir string
	cmd := &cobra.Command{
		Use:   "import-params ID --alg A",
		Short: "Make import parameters for key ID: a wrapping public key (PEM), its OAEP hash and a one-time import token, valid 24 h",
		Long: `import-params makes a wrapping key pair in the backend that can only
unwrap, for importing key ID's private key with keys import, and prints
its public key (PEM), the wrapping (RSA_AES_KEY_WRAP_SHA_256, or _SHA_1
on a module without SHA-256 OAEP), the OAEP hash and a one-time import
token, valid 24 hours. Asking again replaces them. With --out-dir, they
are written to DIR/wrapping.pem, DIR/oaep-hash and DIR/token (mode 0600)
for the openssl commands of docs/import.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Id, req.RsaBits = args[0], int32(bits)
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewKeyServiceClient(conn).GetImportParameters(ctx, req)
				if err != nil {
					return err
				}
				return printImportParams(cmd.OutOrStdout(), resp, outDir, c.json)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Algorithm, "alg", "", "the key's algorithm: ES256, ES384, ES256K, RS256 or PS256")
	f.IntVar(&bits, "rsa-bits", 0, "RSA modulus size for RS256/PS256: 2048 (default) or 3072")
	f.StringVar(&req.Backend, "backend", "", "backend name (the default backend if empty)")
	f.StringVar(&outDir, "out-dir", "", "write wrapping.pem, oaep-hash and token into this folder")
	cmd.MarkFlagRequired("alg")
	return cmd
}

// printImportParams prints import parameters, or writes them to dir.
func printImportParams(w io.Writer, p *sigilv1.GetImportParametersResponse, dir string, asJSON bool) error {
	expires := p.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for name, v := range map[string]string{"wrapping.pem": p.GetWrappingPublicKeyPem(), "oaep-hash": p.GetOaepHash() + "\n", "token": p.GetImportToken() + "\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "import parameters in %s (%s), valid until %s\n", dir, p.GetWrappingAlgorithm(), expires)
		return nil
	}
	if asJSON {
		return printJSON(w, map[string]string{"wrapping_public_key_pem": p.GetWrappingPublicKeyPem(), "wrapping_algorithm": p.GetWrappingAlgorithm(),
			"oaep_hash": p.GetOaepHash(), "import_token": p.GetImportToken(), "expire_time": expires})
	}
	fmt.Fprintf(w, "%swrapping: %s\noaep hash: %s\nimport token: %s\nvalid until: %s\n", p.GetWrappingPublicKeyPem(), p.GetWrappingAlgorithm(), p.GetOaepHash(), p.GetImportToken(), expires)
	return nil
}

func newKeysGet(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a key, its generations and public keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.GetKey(ctx, &sigilv1.GetKeyRequest{Id: args[0]})
				return resp.GetKey(), err
			})
		},
	}
}

func newKeysList(c *clientFlags) *cobra.Command {
	req := &sigilv1.ListKeysRequest{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the keys one may read, in ID order (a page at a time with --page-size)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewKeyServiceClient(conn).ListKeys(ctx, req)
				if err != nil {
					return err
				}
				if t := resp.GetNextPageToken(); t != "" { // stderr: stdout stays the list
					fmt.Fprintf(cmd.ErrOrStderr(), "more keys follow: --page-token %s\n", t)
				}
				w := cmd.OutOrStdout()
				if c.json {
					out := make([]keyJSON, 0, len(resp.GetKeys()))
					for _, k := range resp.GetKeys() {
						out = append(out, toKeyJSON(k))
					}
					return printJSON(w, out)
				}
				fmt.Fprintf(w, "%-24s %-7s %-8s %-12s %s\n", "ID", "ALG", "PURPOSE", "BACKEND", "GENERATIONS")
				for _, k := range resp.GetKeys() {
					fmt.Fprintf(w, "%-24s %-7s %-8s %-12s %s\n", k.GetId(), k.GetAlgorithm(), k.GetPurpose(), k.GetBackend(), generationSummary(k))
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Purpose, "purpose", "", "only keys of this purpose: jwt, eth, raw or audit")
	f.StringVar(&req.State, "state", "", "only keys with a generation in this state")
	f.StringArrayVar(&req.Labels, "label", nil, "only keys with this label: K=V, or K for any value; repeatable (all must match)")
	f.StringVar(&req.Owner, "owner", "", "only keys of this owner")
	f.Int32Var(&req.PageSize, "page-size", 0, "at most this many keys (1 to 1000; 100 by default)")
	f.StringVar(&req.PageToken, "page-token", "", "the page after the one that printed this token")
	return cmd
}

// parseLabels reads K=V arguments.
func parseLabels(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want K=V", a)
		}
		out[k] = v
	}
	return out, nil
}

func newKeysLabel(c *clientFlags) *cobra.Command {
	var owner, description string
	cmd := &cobra.Command{
		Use:   "label ID K=V… [--owner TEXT] [--description TEXT]",
		Short: "Set labels on a key (added or replaced), and its owner or description",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			labels, err := parseLabels(args[1:])
			if err != nil {
				return err
			}
			req := &sigilv1.UpdateKeyMetadataRequest{Id: args[0], SetLabels: labels}
			if cmd.Flags().Changed("owner") {
				req.Owner = &owner
			}
			if cmd.Flags().Changed("description") {
				req.Description = &description
			}
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.UpdateKeyMetadata(ctx, req)
				return resp.GetKey(), err
			})
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "who answers for the key")
	cmd.Flags().StringVar(&description, "description", "", "what the key is for")
	return cmd
}

func newKeysUnlabel(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unlabel ID K…",
		Short: "Remove labels from a key",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.UpdateKeyMetadata(ctx, &sigilv1.UpdateKeyMetadataRequest{Id: args[0], RemoveLabels: args[1:]})
				return resp.GetKey(), err
			})
		},
	}
}

func newKeysScheduleDeletion(c *clientFlags) *cobra.Command {
	var window string
	cmd := &cobra.Command{
		Use:   "schedule-deletion ID --window 7d..30d",
		Short: "Make a key refuse to sign now and destroy its objects when the window has passed (the ID stays reserved)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDays(window)
			if err != nil {
				return err
			}
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: args[0], Window: durationpb.New(d)})
				return resp.GetKey(), err
			})
		},
	}
	cmd.Flags().StringVar(&window, "window", "", "how long before the deletion: 7d to 30d (or a Go duration)")
	cmd.MarkFlagRequired("window")
	return cmd
}

func newKeysCancelDeletion(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel-deletion ID",
		Short: "Take back a scheduled deletion whose window has not passed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyCall(c, cmd, func(ctx context.Context, kc sigilv1.KeyServiceClient) (*sigilv1.Key, error) {
				resp, err := kc.CancelKeyDeletion(ctx, &sigilv1.CancelKeyDeletionRequest{Id: args[0]})
				return resp.GetKey(), err
			})
		},
	}
}

// parseDays reads "Nd" as N days, or a Go duration.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return 0, fmt.Errorf("window %q: want Nd or a duration", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("window %q: want Nd or a duration", s)
	}
	return d, nil
}

// keyJSON is the `--json` shape of a key (CLI.md).
type keyJSON struct {
	ID          string            `json:"id"`
	Namespace   string            `json:"namespace"`
	Alg         string            `json:"alg"`
	Purpose     string            `json:"purpose"`
	Backend     string            `json:"backend"`
	Origin      string            `json:"origin"` // generated, imported or adopted
	RSABits     int32             `json:"rsa_bits,omitempty"`
	JWTPolicy   *policyJSON       `json:"jwt_policy,omitempty"`
	EthPolicy   *ethPolicyJSON    `json:"eth_policy,omitempty"`
	Address     string            `json:"address,omitempty"`
	Disabled    bool              `json:"disabled,omitempty"`
	DeleteAt    string            `json:"delete_at,omitempty"`
	Deleted     bool              `json:"deleted,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Owner       string            `json:"owner,omitempty"`
	Description string            `json:"description,omitempty"`
	Generations []generationJSON  `json:"generations"`
}

type ethPolicyJSON struct {
	ChainIDs       []uint64 `json:"chain_ids"`
	MaxValue       string   `json:"max_value,omitempty"`
	MaxFee         string   `json:"max_fee,omitempty"`
	DailyLimit     string   `json:"daily_limit,omitempty"`
	AllowTo        []string `json:"allow_to,omitempty"`
	AllowSelectors []string `json:"allow_selectors,omitempty"`
	MaxNonceGap    *uint64  `json:"max_nonce_gap,omitempty"`
}

type policyJSON struct {
	RotateEvery  string   `json:"rotate_every"`
	PublishAhead string   `json:"publish_ahead"`
	MaxTokenTTL  string   `json:"max_token_ttl"`
	Skew         string   `json:"skew"`
	JWKSMaxAge   string   `json:"jwks_max_age"`
	JWKSSets     []string `json:"jwks_sets"`
}

type generationJSON struct {
	Generation   int32  `json:"generation"`
	State        string `json:"state"`
	KID          string `json:"kid"`
	PublicKeyPEM string `json:"public_key_pem"`
	BackendRef   string `json:"backend_ref,omitempty"`
	ActivateAt   string `json:"activate_at,omitempty"`
	UnpublishAt  string `json:"unpublish_at,omitempty"`
	Address      string `json:"address,omitempty"`
	Origin       string `json:"origin,omitempty"` // imported, for a generation imported into a key
}

func toKeyJSON(k *sigilv1.Key) keyJSON {
	out := keyJSON{ID: k.GetId(), Namespace: k.GetNamespace(), Alg: k.GetAlgorithm(), Purpose: k.GetPurpose(), Backend: k.GetBackend(), Origin: k.GetOrigin(), RSABits: k.GetRsaBits(), Generations: []generationJSON{}}
	if p := k.GetJwtPolicy(); p != nil {
		out.JWTPolicy = &policyJSON{p.GetRotateEvery().AsDuration().String(), p.GetPublishAhead().AsDuration().String(),
			p.GetMaxTokenTtl().AsDuration().String(), p.GetSkew().AsDuration().String(), p.GetJwksMaxAge().AsDuration().String(), p.GetJwksSets()}
	}
	if p := k.GetEthPolicy(); p != nil {
		out.EthPolicy = &ethPolicyJSON{p.GetChainIds(), p.GetMaxValue(), p.GetMaxFee(), p.GetDailyLimit(), p.GetAllowTo(), p.GetAllowSelectors(), p.MaxNonceGap}
	}
	out.Address, out.Disabled = k.GetAddress(), k.GetDisabled()
	out.DeleteAt, out.Deleted = timeString(k.GetDeleteTime()), k.GetDeleted()
	out.Labels, out.Owner, out.Description = k.GetLabels(), k.GetOwner(), k.GetDescription()
	for _, g := range k.GetGenerations() {
		out.Generations = append(out.Generations, generationJSON{g.GetGeneration(), g.GetState(), g.GetKid(), g.GetPublicKeyPem(), g.GetBackendRef(),
			timeString(g.GetActivateTime()), timeString(g.GetUnpublishTime()), k.GetAddress(), g.GetOrigin()})
	}
	return out
}

func timeString(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func printKey(w io.Writer, k *sigilv1.Key, asJSON bool) error {
	if asJSON {
		return printJSON(w, toKeyJSON(k))
	}
	fmt.Fprintf(w, "%s  %s  purpose %s  backend %s%s\n", k.GetId(), k.GetAlgorithm(), k.GetPurpose(), k.GetBackend(), map[bool]string{true: "  DISABLED"}[k.GetDisabled()])
	switch {
	case k.GetDeleted():
		fmt.Fprintln(w, "DELETED")
	case k.GetDeleteTime() != nil:
		fmt.Fprintf(w, "scheduled for deletion at %s\n", timeString(k.GetDeleteTime()))
	}
	if k.GetOwner() != "" || k.GetDescription() != "" || len(k.GetLabels()) > 0 {
		fmt.Fprintf(w, "owner %s, labels %v, description %q\n", orNone(k.GetOwner()), k.GetLabels(), k.GetDescription())
	}
	if k.GetAddress() != "" {
		fmt.Fprintf(w, "address %s\n", k.GetAddress())
	}
	if p := k.GetEthPolicy(); p != nil {
		fmt.Fprintf(w, "chains %v, max value %s, max fee %s, daily limit %s, to %v, selectors %v\n", p.GetChainIds(),
			orNone(p.GetMaxValue()), orNone(p.GetMaxFee()), orNone(p.GetDailyLimit()), p.GetAllowTo(), p.GetAllowSelectors())
	}
	if p := k.GetJwtPolicy(); p != nil {
		fmt.Fprintf(w, "rotate every %v, publish ahead %v, max token ttl %v, skew %v (JWKS max-age %v)\n", p.GetRotateEvery().AsDuration(),
			p.GetPublishAhead().AsDuration(), p.GetMaxTokenTtl().AsDuration(), p.GetSkew().AsDuration(), p.GetJwksMaxAge().AsDuration())
	}
	for _, g := range k.GetGenerations() {
		fmt.Fprintf(w, "generation %d  %s  kid %s", g.GetGeneration(), g.GetState(), g.GetKid())
		if at := timeString(g.GetActivateTime()); at != "" {
			fmt.Fprintf(w, "  signs from %s", at)
		}
		fmt.Fprintf(w, "\n%s", g.GetPublicKeyPem())
	}
	return nil
}

func generationSummary(k *sigilv1.Key) string {
	s := ""
	for i, g := range k.GetGenerations() {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d:%s", g.GetGeneration(), g.GetState())
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
