package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/internal/backup"
	"github.com/sigil-hsm/sigil/internal/config"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

func newBackup() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a backup of the whole keyring store, online, signed by the audit key",
		Long: `backup asks the running server for everything its store holds (keys,
ledgers, held approvals, JWK Sets, namespaces, audit anchors), read at
one revision and signed by the audit key, and writes it to --out (0600).
It needs store.backup on sigil.audit, in the root namespace. The file
holds no private key (those never leave the HSM) but does hold every
policy and ledger: keep it as you keep the audit log. sigil restore reads
it; docs/disaster-recovery.md says when and how.`,
		Args: cobra.NoArgs,
	}
	c := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := sigilv1.NewBackupServiceClient(conn).Backup(ctx, &sigilv1.BackupRequest{}, grpc.MaxCallRecvMsgSize(backup.MaxSize))
			if err != nil {
				return err
			}
			if err := writeFile(out, resp.GetBackup(), 0o600); err != nil {
				return err
			}
			var m backup.Manifest
			json.Unmarshal([]byte(resp.GetManifestJson()), &m)
			return c.emit(cmd, m, fmt.Sprintf("backup of revision %d (%d keys, %d ledgers, %d anchors; %d audit chains) written to %s\nsigned by the audit key %s (restore --audit-key pins it)",
				m.Revision, m.Counts["keys"], m.Counts["ledgers"], m.Counts["anchors"], len(m.AuditHeads), out, m.SignedBy.PublicSHA256))
		})
	}
	cmd.Flags().StringVar(&out, "out", "", "where to write the backup")
	cmd.MarkFlagRequired("out")
	return cmd
}

func newRestore() *cobra.Command {
	var path, auditKey string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE [--force]",
		Short: "Restore a backup into an empty store, on the server's host with the server stopped",
		Long: `restore verifies a backup (its signature, against the public key of
the object the HSM holds under the audit key's own name, and the
fingerprint --audit-key pins, if given; every generation that can sign or verify,
present in its backend with the same public key) and only then writes it
into the configuration's store, which must be empty unless --force
(which replaces it). A backup is older than the present, so the keys
whose ledgers it may have missed (eth: nonces and spends signed since)
come back fenced, refusing to sign until reconciled, and requests held
for approval that had not ended come back expired.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, err := readBounded(args[0], backup.MaxSize)
			if err != nil {
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			log := quietLog()
			backends, closeBackends, err := openBackends(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer closeBackends()
			store, _, err := openRawStore(ctx, cfg.Store, log) // a restore cut short is finished by one with --force
			if err != nil {
				return storeInUse(cfg, err)
			}
			defer store.Close()
			rep, err := backup.Restore(ctx, file, backup.RestoreOptions{Store: store, Backends: backends, Replace: force, Now: time.Now(), Fenced: fencedOnRestore, AuditKeySHA256: auditKey})
			if err != nil {
				return err
			}
			return printRestore(cmd, rep)
		},
	}
	cmd.Flags().StringVar(&path, "config", DefaultConfig, "the server's configuration file")
	cmd.Flags().BoolVar(&force, "force", false, "replace what the store holds")
	cmd.Flags().StringVar(&auditKey, "audit-key", "", "the audit key's SHA-256 fingerprint sigil backup printed: the backup must be signed by it (required for a backend that cannot find the audit key by its name)")
	return cmd
}

// fencedOnRestore asks the key's purpose whether a restore fences it.
func fencedOnRestore(name, id string) (string, bool) {
	for _, p := range purpose.All() {
		if f, ok := p.(purpose.Fenced); ok && p.Name() == name {
			return f.Reconcile(id), true
		}
	}
	return "", false
}

func printRestore(cmd *cobra.Command, rep *backup.Report) error {
	out := cmd.OutOrStdout()
	m := rep.Manifest
	fmt.Fprintf(out, "restored the backup of %s (revision %d): %d keys, %d generations checked against their backends, %d held requests expired\n",
		m.Created.Format(time.RFC3339), m.Revision, rep.Keys, rep.Generations, rep.ApprovalsExpired)
	for _, line := range rep.Settled {
		fmt.Fprintf(out, "being created at the backup: %s\n", line)
	}
	ids := make([]string, 0, len(rep.Fenced))
	for id := range rep.Fenced {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > 0 {
		fmt.Fprintf(out, "%d keys are fenced (they refuse to sign until reconciled):\n", len(ids))
	}
	for _, id := range ids {
		fmt.Fprintf(out, "  %s\n", rep.Fenced[id])
	}
	return nil
}

// readBounded reads a file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		return nil, fmt.Errorf("%s: over %d bytes", path, max)
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}
