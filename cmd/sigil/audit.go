package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/internal/audit"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

func newAudit() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check audit logs"}
	verify := &cobra.Command{
		Use:   "verify FILE…",
		Short: "Prove audit files complete and intact: hashes, seq continuity across files, signed checkpoints, every gap named",
		Long: `Checks the given audit files (rotated and current, of any replicas, in any order):
every line's hash, seq contiguity and continuity across files, every checkpoint's
signature with the audit key (--key PEM, or fetched from a server with the client
flags), and with the client flags that the files reach the live anchored head
(the last record the server had on disk, anchored in its store). A tamper_detected
line in the files (a cut or rewrite a start found against that head, e.g. a tail
erased after a kill -9) is named as a problem, with or without the client flags.
Every passkey assertion a decision record holds is checked against the
registration record of its passkey in the files (its public key, identity,
origin and RP ID) and the approval, decision and request it names.
Exits 0 only for a complete, intact chain whose assertions all verify.`,
		Args: cobra.MinimumNArgs(1),
	}
	c := addClientFlags(verify)
	keyFile := verify.Flags().String("key", "", "the audit public key (PEM, from GET /audit/key); fetched from the server when client flags are given")
	verify.RunE = func(cmd *cobra.Command, files []string) error {
		// The live head is fetched before the files are read: a running
		// server's files always reach it.
		pub, live, err := auditTrust(cmd.Context(), c, *keyFile)
		if err != nil {
			return err
		}
		r, err := audit.Verify(files, pub, live)
		if err != nil {
			return err
		}
		if err := checkPasskeys(files, r); err != nil {
			return err
		}
		if c.json {
			if err := printJSON(cmd.OutOrStdout(), r); err != nil {
				return err
			}
		} else {
			for _, p := range r.Problems {
				fmt.Fprintln(cmd.OutOrStdout(), "problem: "+p)
			}
			for _, n := range r.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), "note: "+n)
			}
		}
		if !r.OK() {
			return errors.New(r.Summary())
		}
		if !c.json {
			_, err = fmt.Fprintln(cmd.OutOrStdout(), r.Summary())
		}
		return err
	}
	cmd.AddCommand(verify, newAuditShow())
	return cmd
}

// checkPasskeys checks every passkey assertion of the files' decision
// records against its registration record in the files, and adds what
// fails to r's problems and the count to its notes.
func checkPasskeys(files []string, r *audit.Report) error {
	recs, err := audit.Records(files)
	if err != nil {
		return err
	}
	verified, problems := console.AuditCheck(recs)
	for _, p := range problems {
		r.Problems = append(r.Problems, "passkey: "+p)
	}
	if verified > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d passkey decision(s) verified against their registrations", verified))
	}
	return nil
}

func newAuditShow() *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "show --request-id ID FILE…",
		Short: "Print the audit records of one request (its x-request-id), as they are in the files",
		Long: `show prints, one JSON line each, every record of the given audit files
whose request_id is ID: the decision, its second record (an eth
transaction's submission), a held request's run. The ID is the one every
response carries (x-request-id), the client's own if it sent a valid one.
It exits non-zero when no record has it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			found := 0
			for _, path := range files {
				n, err := showRequest(cmd.OutOrStdout(), path, id)
				if err != nil {
					return err
				}
				found += n
			}
			if found == 0 {
				return fmt.Errorf("no record of request %q in %d file(s)", id, len(files))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "request-id", "", "the request's ID")
	cmd.MarkFlagRequired("request-id")
	return cmd
}

// showRequest copies the lines of audit file path whose record has
// request ID id to w, and counts them.
func showRequest(w io.Writer, path, id string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		var rec struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.RequestID == id {
			fmt.Fprintln(w, sc.Text())
			n++
		}
	}
	return n, sc.Err()
}

// auditTrust is the audit key, from --key or the server, and with client
// flags the live anchored checkpoints.
func auditTrust(ctx context.Context, c *clientFlags, keyFile string) (*ecdsa.PublicKey, []audit.Anchor, error) {
	var pemText string
	var live []audit.Anchor
	if c.addr != "" || c.dataDir != "" {
		err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := sigilv1.NewAuditServiceClient(conn).GetAuditHead(ctx, &sigilv1.GetAuditHeadRequest{})
			if err != nil {
				return err
			}
			pemText = resp.GetPublicKeyPem()
			for _, cp := range resp.GetCheckpoints() {
				live = append(live, audit.Anchor{Checkpoint: audit.Checkpoint{Replica: cp.GetReplica(), Seq: cp.GetSeq(), Hash: cp.GetHash(),
					Time: cp.GetTime().AsTime(), Signature: cp.GetSignature(), Every: int(cp.GetEvery())}, RecordSeq: cp.GetRecordSeq(), RecordHash: cp.GetRecordHash()})
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, nil, err
		}
		if pemText != "" && pemText != string(b) {
			return nil, nil, errors.New("--key is not the audit key the server holds")
		}
		pemText = string(b)
	}
	if pemText == "" {
		return nil, nil, errors.New("no audit key: give --key PEM (GET /audit/key) or the client flags of a server")
	}
	pub, err := signer.ParsePublicKeyPEM(pemText)
	if err != nil {
		return nil, nil, fmt.Errorf("audit key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, nil, errors.New("audit key: not an ECDSA key")
	}
	return ec, live, nil
}
