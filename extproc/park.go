package extproc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custos-dev/custos/internal/approval"
)

// HeaderApprovalID is added to a request that runs after approval, so the
// upstream can tell which approval let it through.
const HeaderApprovalID = "x-custos-approval-id"

// withdrawTimeout bounds recording a withdrawal after the wait ended.
const withdrawTimeout = 5 * time.Second

// pinText is what an HTTP approval is pinned to (approval.PinHash with
// KindHTTP): the method, the path with its query, and the body:
//
//	POST /v1/refunds?x=1
//	body sha256:<hex> 123 bytes
//
// The body line is "body none" for a request without one, "body
// sha256:<hex> <n> bytes (first part only)" when Envoy sent only the first
// part (BUFFERED_PARTIAL), and "body not inspected" when Envoy does not
// send the request body to custos (request body mode NONE or STREAMED).
func pinText(method, path string, body []byte, haveBody, complete bool) string {
	return method + " " + path + "\n" + bodyLine(body, haveBody, complete)
}

func bodyLine(body []byte, haveBody, complete bool) string {
	switch {
	case !haveBody:
		return "body not inspected"
	case len(body) == 0 && complete:
		return "body none"
	}
	sum := sha256.Sum256(body)
	line := "body sha256:" + hex.EncodeToString(sum[:]) + " " + strconv.Itoa(len(body)) + " bytes"
	if !complete {
		line += " (first part only)"
	}
	return line
}

// park holds the request until approvers decide. haveBody says whether
// body is the request's body (false: custos does not see it); complete
// whether it is all of it. onHeaders says which message is being held. It
// returns the reply to that message: CONTINUE (approved, and the approval
// used) or an immediate 403.
func (st *procStream) park(body []byte, haveBody, complete, onHeaders bool) (*extprocv3.ProcessingResponse, error) {
	g := st.grant
	svc := st.s.opts.Approvals
	cont := func(approvalID string) *extprocv3.ProcessingResponse {
		mut := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{rawHeader(HeaderApprovalID, approvalID)}}
		if onHeaders {
			return requestHeadersResponse(mut)
		}
		return requestBodyResponse(mut)
	}
	refuse := func(reason, approvalID string) *extprocv3.ProcessingResponse {
		body := map[string]any{"reason": reason, "decision_id": g.DecisionID}
		if approvalID != "" {
			body["approval_id"] = approvalID
		}
		return st.immediate(typev3.StatusCode_Forbidden, body)
	}
	if svc == nil {
		st.s.metrics.parked.WithLabelValues("failed").Inc()
		st.log.Warn("http request refused: approval required but no approval service")
		return refuse(strings.Join(g.Reasons, "; ")+"; custos has no approval service, so the request was not sent", ""), nil
	}
	// Hold Envoy first (its 200 ms default would not outlast recording
	// the request): one override per message, never above its
	// max_message_timeout. custos answers a little before the hold ends.
	ttl := g.Approval.TTLDuration()
	if ttl <= 0 {
		ttl = approval.DefaultTTL
	}
	hold := max(min(ttl+time.Second, st.s.opts.MaxMessageTimeout), time.Millisecond)
	if err := st.srv.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(hold)}); err != nil {
		return nil, errStreamGone
	}
	held := time.Now()
	requester := approval.Principal{Sub: g.Sub, Iss: g.Iss, Groups: g.Groups, Act: g.Act}
	text := pinText(st.method, st.path, body, haveBody, complete)
	hash := approval.PinHash(requester, g.Resource, approval.KindHTTP, text, nil)
	summary := st.method + " " + st.s.maskText(pathOnly(st.path))
	req, err := svc.Request(st.ctx, approval.NewRequest{
		Hash:           hash,
		Requester:      requester,
		Resource:       g.Resource,
		Kind:           approval.KindHTTP,
		Summary:        summary,
		Detail:         st.s.maskText(text) + st.bodyPreview(body, haveBody),
		Reasons:        g.Reasons,
		DecisionID:     g.DecisionID,
		SessionID:      st.requestID,
		ApproverGroups: g.Approval.ApproverGroups,
		Quorum:         g.Approval.Quorum,
		TTL:            ttl,
	})
	if err != nil {
		if st.ctx.Err() != nil {
			return nil, errStreamGone
		}
		st.s.metrics.parked.WithLabelValues("failed").Inc()
		st.log.Error("approval request could not be recorded", slog.Any("error", err))
		return refuse("approval required, but custos could not record the request; it was not sent", ""), nil
	}
	st.approvalID = req.ID
	st.s.metrics.parked.WithLabelValues("requested").Inc()
	log := st.log.With(slog.String("approval_id", req.ID))
	log.Info("http request parked for approval", slog.String("principal", g.Sub),
		slog.String("approver_groups", strings.Join(req.ApproverGroups, ",")))

	margin := min(2*time.Second, hold/10)
	wctx, cancel := context.WithDeadline(st.ctx, held.Add(hold-margin))
	got, werr := svc.Wait(wctx, req.ID)
	cancel()
	switch {
	case werr == nil:
	case st.ctx.Err() != nil:
		st.withdraw(req.ID, "the client went away")
		st.s.metrics.parked.WithLabelValues("cancelled").Inc()
		log.Info("parked http request withdrawn: the client went away")
		return nil, errStreamGone
	case errors.Is(werr, context.DeadlineExceeded):
		st.withdraw(req.ID, "no decision within the time custos may hold an HTTP request")
		st.s.metrics.parked.WithLabelValues("timeout").Inc()
		log.Info("parked http request withdrawn: no decision in time", slog.Duration("held", hold-margin))
		return refuse(fmt.Sprintf("approval %s was not decided within %s; the request was not sent", req.ID, (hold-margin).Round(time.Second)), req.ID), nil
	default:
		st.withdraw(req.ID, "custos could not follow the request")
		st.s.metrics.parked.WithLabelValues("failed").Inc()
		log.Error("approval wait failed", slog.Any("error", werr))
		return refuse("custos could not follow approval request "+req.ID+"; the request was not sent", req.ID), nil
	}

	switch got.State {
	case approval.StateApproved:
		if _, err := svc.Consume(st.ctx, req.ID, hash); err != nil {
			st.s.metrics.parked.WithLabelValues("failed").Inc()
			log.Warn("approved http request could not be sent", slog.Any("error", err))
			return refuse(fmt.Sprintf("approval %s could not be used (%v); the request was not sent", req.ID, err), req.ID), nil
		}
		st.s.metrics.parked.WithLabelValues("approved").Inc()
		log.Info("approved http request sent")
		return cont(req.ID), nil
	case approval.StateDenied:
		st.s.metrics.parked.WithLabelValues("denied").Inc()
		msg := "approval " + req.ID + " denied"
		if got.Denial != nil {
			msg += " by " + got.Denial.By.Sub
			if got.Denial.Reason != "" {
				msg += ": " + got.Denial.Reason
			}
		}
		return refuse(msg, req.ID), nil
	case approval.StateExpired:
		st.s.metrics.parked.WithLabelValues("expired").Inc()
		return refuse(fmt.Sprintf("approval %s expired at %s without a decision; send the request again to ask again",
			req.ID, got.ExpiresAt.Format(time.RFC3339)), req.ID), nil
	default:
		st.s.metrics.parked.WithLabelValues("withdrawn").Inc()
		msg := fmt.Sprintf("approval %s is %s", req.ID, got.State)
		if got.Note != "" {
			msg += ": " + got.Note
		}
		return refuse(msg+"; the request was not sent", req.ID), nil
	}
}

// maxPreview bounds the body text shown to approvers.
const maxPreview = 4096

// bodyPreview is the start of the request body for approvers, card
// numbers masked (before it is cut, so no cut hides a card number from
// detection).
func (st *procStream) bodyPreview(body []byte, haveBody bool) string {
	if !haveBody || len(body) == 0 {
		return ""
	}
	b := st.s.maskText(string(body))
	cut := ""
	if len(b) > maxPreview {
		b, cut = b[:maxPreview], "\n… ("+strconv.Itoa(len(b)-maxPreview)+" more bytes)"
	}
	return "\n\n" + strings.ToValidUTF8(b, "\uFFFD") + cut
}

// withdraw records that the parked request no longer waits, even after
// the stream ended.
func (st *procStream) withdraw(id, note string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(st.ctx), withdrawTimeout)
	defer cancel()
	if _, err := st.s.opts.Approvals.Withdraw(ctx, id, note); err != nil && !errors.Is(err, approval.ErrNotPending) {
		st.log.Warn("approval request could not be withdrawn", slog.String("approval_id", id), slog.Any("error", err))
	}
}
