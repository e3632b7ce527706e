package main

import (
	"cmp"
	"fmt"
	"log/slog"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/internal/notify"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/keyring"
)

// newNotifier is the configuration's webhooks' notifier over the keyring
// store (the outboxes), or nil with none configured. It delivers as the
// audit log's replica name, which a restart keeps: a replica killed in
// the middle of a delivery takes it up again at once.
func newNotifier(cfg *config.Config, store keyring.Anchors, log *slog.Logger) (*notify.Notifier, error) {
	if len(cfg.Notify) == 0 {
		return nil, nil
	}
	hooks := make([]notify.Hook, 0, len(cfg.Notify))
	for i, n := range cfg.Notify {
		key, err := secret.Ref(n.Secret).Resolve(fmt.Sprintf("notify[%d].secret", i))
		if err != nil {
			return nil, err
		}
		hooks = append(hooks, notify.Hook{URL: n.URL, Secret: key, Events: n.Events})
	}
	o := notify.Options{Hooks: hooks, Approvals: approval.NewStore(store), Outbox: store, Replica: cmp.Or(cfg.Audit.Replica, "local"), Log: log}
	if cfg.Console != nil {
		o.Console = cfg.Console.Origin
	}
	return notify.New(o), nil
}
