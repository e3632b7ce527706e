package main

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/eth"
)

func newEthReconcile(c *clientFlags) *cobra.Command {
	var keyID, upstream, path string
	var audits []string
	cmd := &cobra.Command{
		Use:   "reconcile --key ID [--upstream URL] [--audit FILE…]",
		Short: "Lift a restored key's fence: mark the nonces it signed since the backup, from the audit logs and/or a node",
		Long: `reconcile runs on the server's host with the server stopped, like
restore. A key restored from a backup is fenced: it may have signed
transactions the backup does not know. reconcile reads what it did since
the backup from the audit logs (--audit, every replica's files since the
backup: each signed transaction's chain, nonce and hash) and/or from a
node (--upstream: eth_getTransactionCount "pending" of the key's address
on the node's chain), marks each of those nonces signed so no other
transaction can take it, counts the daily limit's window as spent (the
values signed since are not known), lifts the fence and says what it
found. With neither source the key stays fenced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			l, err := openLocal(ctx, path)
			if err != nil {
				return err
			}
			defer l.close()
			id := namespace.Qualify(c.namespace, keyID)
			k, err := l.kr.Get(ctx, id)
			if err != nil {
				return err
			}
			if err := k.CheckPurpose(eth.Name); err != nil {
				return err
			}
			rec, err := l.store.ReadLedger(ctx, id)
			if err != nil {
				return err
			}
			if rec.Fence == nil {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "key %s is not fenced: nothing to reconcile\n", keyID)
				return err
			}
			if len(audits) > 0 && len(rec.Fence.Heads) == 0 && upstream == "" {
				return fmt.Errorf("key %s's fence names no audit chain heads (it was recovered from the HSM or imported, not restored from a backup), so audit files cannot be shown complete: reconcile from a node (--upstream), with or without them", keyID)
			}
			if err := completeSince(audits, rec.Fence.Heads); err != nil {
				return err
			}
			var e eth.Evidence
			for _, f := range audits {
				if err := readAudit(f, &e, id, rec.Fence.Since); err != nil {
					return err
				}
			}
			if upstream != "" {
				if err := nodeCount(ctx, upstream, eth.Address(k), &e); err != nil {
					return err
				}
			}
			var limit *big.Int
			if p := eth.PolicyOf(k); p.DailyLimit != nil {
				limit = &p.DailyLimit.Int
			}
			var found []eth.ChainFound
			err = l.store.UpdateLedger(ctx, id, func(r *keyring.LedgerRecord) (err error) {
				found, err = eth.Reconcile(r, e, limit, time.Now())
				return err
			})
			summary := fmt.Sprintf("reconciled from %d audit file(s)", len(audits))
			if upstream != "" {
				summary += " and a node"
			}
			for _, f := range found {
				summary += "; " + f.String()
			}
			if rerr := l.record("eth.reconcile", id, 0, err, summary); err == nil {
				err = rerr
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, f := range found {
				fmt.Fprintln(out, f)
			}
			if limit != nil {
				fmt.Fprintf(out, "the daily limit's window counts as spent until %s\n", time.Now().Add(eth.DailyWindow).Format(time.RFC3339))
			}
			_, err = fmt.Fprintf(out, "key %s is no longer fenced\n", keyID)
			return err
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "the eth key")
	cmd.Flags().StringVar(&upstream, "upstream", "", "an execution client's JSON-RPC URL to read the key's transaction count from")
	cmd.Flags().StringSliceVar(&audits, "audit", nil, "audit log files since the backup (every replica's)")
	cmd.Flags().StringVar(&path, "config", DefaultConfig, "the server's configuration file")
	cmd.MarkFlagRequired("key")
	return cmd
}

// completeSince refuses audit files that do not hold every replica's
// chain from its head at the backup on, unbroken: a replica's records
// left out would leave nonces it signed since open to another
// transaction. No files, no check: the node alone is the evidence then.
func completeSince(files []string, heads []keyring.ChainHead) error {
	if len(files) == 0 {
		return nil
	}
	hs := make([]audit.Head, 0, len(heads))
	for _, h := range heads {
		hs = append(hs, audit.Head(h))
	}
	problems, err := audit.Since(files, hs)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("the audit files are not the whole trail since the backup, so nothing is reconciled: %s; give every replica's files from the backup on (or reconcile from a node alone)", strings.Join(problems, "; "))
	}
	return nil
}

// readAudit adds what audit file path says key id signed since to e.
func readAudit(path string, e *eth.Evidence, id string, since time.Time) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return e.SignedSince(f, id, since)
}

// nodeCount asks the node at url its chain and the pending count of addr.
func nodeCount(ctx context.Context, url, addr string, e *eth.Evidence) error {
	node := &eth.Upstream{URL: url}
	var chain hexutil.Big
	var count hexutil.Uint64
	if err := node.Call(ctx, &chain, "eth_chainId"); err != nil {
		return fmt.Errorf("--upstream: eth_chainId: %w", err)
	}
	if err := node.Call(ctx, &count, "eth_getTransactionCount", addr, "pending"); err != nil {
		return fmt.Errorf("--upstream: eth_getTransactionCount: %w", err)
	}
	e.NodeChain, e.NodeCount = chain.ToInt().String(), uint64(count)
	return nil
}
