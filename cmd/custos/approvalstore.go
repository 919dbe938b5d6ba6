package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/config"
)

// approvals is the approval service and what it runs on.
type approvals struct {
	svc      *approval.Service
	store    approval.Store
	notifier *approval.Notifier // nil without webhooks
}

// notifierDrain bounds delivering queued webhook notifications at shutdown.
const notifierDrain = 10 * time.Second

// openApprovals opens the configured store, starts the service and
// withdraws what this replica held before it restarted: a parked
// statement's client connection does not survive a restart, so its request
// can never run.
func openApprovals(ctx context.Context, cfg *config.Config, log *slog.Logger, onEvent func(approval.Event)) (*approvals, error) {
	ac := cfg.Approvals
	notifier, err := newNotifier(ac, log)
	if err != nil {
		return nil, err
	}
	if notifier != nil {
		next := onEvent
		onEvent = func(ev approval.Event) {
			notifier.Notify(ev)
			if next != nil {
				next(ev)
			}
		}
	}
	var st approval.Store
	switch ac.Store {
	case config.StorePostgres:
		dsn, derr := ac.PostgresDSN.Read()
		if derr != nil {
			return nil, fmt.Errorf("approvals.postgres_dsn: %w", derr)
		}
		st, err = approval.OpenPostgres(ctx, dsn)
	default:
		if err := os.MkdirAll(filepath.Dir(ac.SQLitePath), 0o700); err != nil {
			return nil, fmt.Errorf("approvals: %w", err)
		}
		st, err = approval.OpenSQLite(ac.SQLitePath)
	}
	if err != nil {
		closeNotifier(notifier)
		return nil, fmt.Errorf("approvals store: %w", err)
	}
	svc, err := approval.NewService(ctx, st, approval.Options{
		Logger:        log,
		Replica:       ac.Replica,
		OnEvent:       onEvent,
		SweepInterval: ac.SweepInterval,
	})
	if err != nil {
		_ = st.Close()
		closeNotifier(notifier)
		return nil, fmt.Errorf("approvals: %w", err)
	}
	a := &approvals{svc: svc, store: st, notifier: notifier}
	if _, err := svc.WithdrawHeld(ctx, ac.Replica, "custos restarted: the parked client connection was lost"); err != nil {
		a.close()
		return nil, fmt.Errorf("approvals: %w", err)
	}
	return a, nil
}

// close stops the service (ending waits, handing over its last events),
// delivers the queued notifications and closes the store.
func (a *approvals) close() {
	_ = a.svc.Close()
	closeNotifier(a.notifier)
	_ = a.store.Close()
}

// newNotifier builds the webhook notifier of the approvals section, or nil
// when it names no webhook.
func newNotifier(ac config.Approvals, log *slog.Logger) (*approval.Notifier, error) {
	if len(ac.Webhooks) == 0 {
		return nil, nil
	}
	hooks := make([]approval.Webhook, 0, len(ac.Webhooks))
	for i, w := range ac.Webhooks {
		h := approval.Webhook{URL: w.URL, Format: w.Format}
		if w.Secret != nil {
			secret, err := w.Secret.Read()
			if err != nil {
				return nil, fmt.Errorf("approvals.webhooks[%d].secret: %w", i, err)
			}
			h.Secret = secret
		}
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("approvals.webhooks[%d]: %w", i, err)
		}
		hooks = append(hooks, h)
	}
	return approval.NewNotifier(hooks, approval.NotifierOptions{
		Logger: log.With("component", "webhook"), PublicURL: ac.PublicURL,
	}), nil
}

func closeNotifier(n *approval.Notifier) {
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifierDrain)
	defer cancel()
	_ = n.Close(ctx)
}
