package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

func newKeysRecover() *cobra.Command {
	var spec keyring.RecoverSpec
	var path, alg string
	var apply bool
	cmd := &cobra.Command{
		Use:   "recover --backend NAME --purpose P --keys PATTERN… [--apply]",
		Short: "Rebuild key records from the HSM alone, when the store is lost and no backup exists (a dry run without --apply)",
		Long: `recover lists the key pairs Sigil made in the backend (labels ID.gN with
Sigil's CKA_ID marker) whose IDs match --keys, and prints the records
they rebuild: the newest generation active, older ones retired; the
algorithm, kid and Ethereum address read from the public keys, so JWK
Sets and addresses are unchanged. The token does not hold a key's
purpose or policy: --purpose gives the purpose (run once per purpose),
and policies come back as the purpose's default, an eth key allowing no
chain until its policy is set; eth keys are fenced until reconciled
(sigil eth reconcile --upstream). Sigil's audit key is always recovered.
Without --apply nothing is written; with it, on the server's host with
the server stopped, the records go into the configuration's store, which
must hold none of them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			spec.Algorithm = signer.Algorithm(alg)
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			log := quietLog()
			backends, closeBackends, err := openBackends(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer closeBackends()
			b, ok := backends[spec.Backend]
			if !ok {
				return fmt.Errorf("--backend %q is not in %s", spec.Backend, path)
			}
			keys, err := keyring.PlanRecovery(ctx, b, spec, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, k := range keys {
				gens := make([]string, len(k.Generations))
				for i, g := range k.Generations {
					gens[i] = fmt.Sprintf("g%d %s", g.Number, g.State)
				}
				attrs := ""
				for name, v := range k.Attributes {
					attrs += fmt.Sprintf(", %s %s", name, v)
				}
				fmt.Fprintf(out, "%s: purpose %s, %s, %s%s\n", k.ID, k.Purpose, k.Algorithm, strings.Join(gens, ", "), attrs)
			}
			if !apply {
				_, err := fmt.Fprintf(out, "%d keys would be recovered (dry run: --apply writes them)\n", len(keys))
				return err
			}
			store, _, err := openStore(ctx, cfg.Store, log)
			if err != nil {
				return storeInUse(cfg, err)
			}
			defer store.Close()
			// The audit key comes with every run: one recovered by an earlier
			// run (for another purpose) stays.
			kept := keys[:0]
			for _, k := range keys {
				if _, err := store.Get(ctx, k.ID); k.ID != keyring.AuditKeyID || err != nil {
					kept = append(kept, k)
				}
			}
			keys = kept
			for _, k := range keys {
				if _, err := store.Get(ctx, k.ID); err == nil {
					return fmt.Errorf("the store already holds a record of %q: recover only into a store that holds none of the keys; nothing was written", k.ID)
				} else if !errs.Is(err, errs.NotFound) {
					return err
				}
			}
			for _, k := range keys {
				// The fence first: a crash between the two writes leaves a
				// fenced ledger and no key, never a key that signs unfenced.
				cmdline, fenced := fencedOnRestore(k.Purpose, k.ID)
				if fenced {
					if err := store.UpdateLedger(ctx, k.ID, func(r *keyring.LedgerRecord) error {
						r.Fence = &keyring.Fence{Since: time.Time{}, Reason: "recovered from the HSM without a ledger"}
						return nil
					}); err != nil {
						return err
					}
				}
				if _, err := store.Put(ctx, k); err != nil {
					return err
				}
				if fenced {
					fmt.Fprintf(out, "  %s is fenced: %s --upstream URL\n", k.ID, cmdline)
				}
			}
			_, err = fmt.Fprintf(out, "%d keys recovered into the store\n", len(keys))
			return err
		},
	}
	cmd.Flags().StringVar(&spec.Backend, "backend", "", "the backend to list")
	cmd.Flags().StringVar(&spec.Purpose, "purpose", "", "the purpose of the keys matched")
	cmd.Flags().StringSliceVar(&spec.Patterns, "keys", nil, "key ID patterns (globs)")
	cmd.Flags().StringVar(&alg, "alg", "", "the algorithm of RSA keys: RS256 (default) or PS256")
	cmd.Flags().BoolVar(&apply, "apply", false, "write the records (without it, only print them)")
	cmd.Flags().StringVar(&path, "config", DefaultConfig, "the server's configuration file")
	for _, f := range []string{"backend", "purpose", "keys"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
