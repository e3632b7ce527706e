package keyring

import (
	"context"
	"maps"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Limits on a key's inventory fields.
const (
	MaxLabels         = 32
	MaxOwnerBytes     = 128
	MaxDescriptionLen = 1024
)

var labelKey = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]{0,62}$`)

// Metadata is a change to a key's inventory: labels set and removed, and
// a new owner or description when not nil.
type Metadata struct {
	SetLabels    map[string]string
	RemoveLabels []string
	Owner        *string
	Description  *string
}

// CheckLabels refuses labels a key cannot carry.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return errs.New(errs.InvalidArgument, "labels: at most %d", MaxLabels)
	}
	for k, v := range labels {
		if !labelKey.MatchString(k) {
			return errs.New(errs.InvalidArgument, "label key %q: must match [a-z0-9][a-z0-9._/-]{0,62}", k)
		}
		if len(v) > 63 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			return errs.New(errs.InvalidArgument, "label %s: the value must be at most 63 printable ASCII bytes", k)
		}
	}
	return nil
}

// CheckInventory refuses an owner or description a key cannot carry.
func CheckInventory(owner, description string) error {
	if len(owner) > MaxOwnerBytes || strings.ContainsFunc(owner, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return errs.New(errs.InvalidArgument, "owner: at most %d printable ASCII bytes", MaxOwnerBytes)
	}
	if len(description) > MaxDescriptionLen || !utf8.ValidString(description) ||
		strings.ContainsFunc(description, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }) {
		return errs.New(errs.InvalidArgument, "description: at most %d bytes of UTF-8 text", MaxDescriptionLen)
	}
	return nil
}

// SetMetadata applies change m to key id's inventory. A deleted key's
// inventory stays as it was when it was deleted.
func (r *Keyring) SetMetadata(ctx context.Context, id string, m Metadata) (*Key, error) {
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, _ time.Time) error {
		if err := notOwn(k); err != nil {
			return err
		}
		if k.Deleted {
			return errs.New(errs.FailedPrecondition, "key %q is deleted", id)
		}
		labels := maps.Clone(k.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, m.SetLabels)
		for _, name := range m.RemoveLabels {
			delete(labels, name)
		}
		owner, description := k.Owner, k.Description
		if m.Owner != nil {
			owner = *m.Owner
		}
		if m.Description != nil {
			description = *m.Description
		}
		if err := CheckLabels(labels); err != nil {
			return err
		}
		if err := CheckInventory(owner, description); err != nil {
			return err
		}
		if len(labels) == 0 {
			labels = nil
		}
		k.Labels, k.Owner, k.Description = labels, owner, description
		return nil
	})
}

// HasLabels reports whether k carries every label in want: "K=V" for
// that value, "K" for any.
func (k *Key) HasLabels(want []string) bool {
	for _, w := range want {
		name, value, exact := strings.Cut(w, "=")
		got, ok := k.Labels[name]
		if !ok || exact && got != value {
			return false
		}
	}
	return true
}
