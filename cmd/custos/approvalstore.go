package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/config"
)

// approvals is the approval service and what it runs on.
type approvals struct {
	svc   *approval.Service
	store approval.Store
}

// openApprovals opens the configured store, starts the service and
// withdraws what this replica held before it restarted: a parked
// statement's client connection does not survive a restart, so its request
// can never run.
func openApprovals(ctx context.Context, cfg *config.Config, log *slog.Logger, onEvent func(approval.Event)) (*approvals, error) {
	ac := cfg.Approvals
	var st approval.Store
	var err error
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
		return nil, fmt.Errorf("approvals: %w", err)
	}
	a := &approvals{svc: svc, store: st}
	if err := a.withdrawOrphans(ctx, ac.Replica, log); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// withdrawOrphans withdraws the live requests this replica held.
func (a *approvals) withdrawOrphans(ctx context.Context, replica string, log *slog.Logger) error {
	for _, state := range []approval.State{approval.StatePending, approval.StateApproved} {
		reqs, err := a.svc.List(ctx, approval.Filter{State: state, Limit: approval.MaxListLimit})
		if err != nil {
			return fmt.Errorf("approvals: listing %s requests: %w", state, err)
		}
		for _, r := range reqs {
			if r.Holder != replica {
				continue
			}
			_, err := a.svc.Withdraw(ctx, r.ID, "custos restarted: the parked client connection was lost")
			if err != nil && !errors.Is(err, approval.ErrNotPending) {
				return fmt.Errorf("approvals: withdrawing %s: %w", r.ID, err)
			}
			log.Info("approval request withdrawn after restart", "approval_id", r.ID, "session_id", r.SessionID)
		}
	}
	return nil
}

// close stops the service (ending waits) and closes the store.
func (a *approvals) close() {
	_ = a.svc.Close()
	_ = a.store.Close()
}

// approvalEvents logs every committed approval transition with its actor.
func approvalEvents(log *slog.Logger) func(approval.Event) {
	log = log.With("component", "approval")
	return func(ev approval.Event) {
		actor := ""
		if ev.Actor != nil {
			actor = ev.Actor.String()
		}
		log.Info("approval event", "event", ev.Type, "approval_id", ev.Request.ID,
			"state", string(ev.Request.State), "resource", ev.Request.Resource, "actor", actor)
	}
}
