package server

import (
	"context"
	"strings"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/backup"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// backupService implements sigil.v1.BackupService.
type backupService struct {
	sigilv1.UnimplementedBackupServiceServer
	s *Server
}

var _ sigilv1.BackupServiceServer = (*backupService)(nil)

// Backup snapshots the store, notes the audit chains' heads, and seals
// both with the audit key.
func (b *backupService) Backup(ctx context.Context, _ *sigilv1.BackupRequest) (*sigilv1.BackupResponse, error) {
	if namespace.FromContext(ctx) != namespace.Root {
		return nil, errs.New(errs.PermissionDenied, "a backup holds every namespace: ask it in the root namespace")
	}
	snapper, ok := b.s.opts.Store.(interface {
		Snapshot(context.Context) (*keyring.Snapshot, error)
	})
	if !ok || b.s.opts.Store == nil {
		return nil, errs.New(errs.FailedPrecondition, "this server's keyring store cannot be backed up")
	}
	// The backup's time is taken before the snapshot: a reconciliation
	// reads what was signed since, and a signature under way while the
	// snapshot is read must count as after it.
	m := backup.Manifest{Created: b.s.opts.Now().UTC()}
	snap, err := snapper.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	for name, v := range snap.Anchors {
		if strings.HasPrefix(name, audit.AnchorName("")) {
			a, err := audit.ParseAnchor(v)
			if err != nil { // a chain the backup could not name: a reconciliation could not ask for its records
				return nil, errs.New(errs.FailedPrecondition, "the audit anchor %s does not parse (%v): no backup is taken without every chain's head", name, err)
			}
			m.AuditHeads = append(m.AuditHeads, backup.Head{Replica: a.Replica, Seq: a.Seq, Hash: a.Hash})
		}
	}
	k, err := b.s.opts.Keyring.Get(ctx, keyring.AuditKeyID)
	if err != nil {
		return nil, err
	}
	g, ok := k.Active()
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "the audit key has no active generation to sign the backup")
	}
	m.SignedBy = backup.SignedBy{Key: keyring.AuditKeyID, Generation: g.Number, Backend: k.Backend, PublicSHA256: backup.Fingerprint(g.Public())}
	file, err := backup.Seal(ctx, m, snap, keyring.AuditSigner{Keyring: b.s.opts.Keyring}.Sign)
	if err != nil {
		return nil, err
	}
	sealed, err := backup.Parse(file)
	if err != nil {
		return nil, err
	}
	return &sigilv1.BackupResponse{Backup: file, ManifestJson: sealed.ManifestJSON()}, nil
}
