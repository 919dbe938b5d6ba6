package extproc

import (
	"fmt"
	"log/slog"
	"net/http"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/peer"

	"github.com/custos-dev/custos/internal/audit"
)

// verifyGrant checks the claimed decision's seal against the request
// headers just read and, when it holds, makes it the stream's grant.
func (st *procStream) verifyGrant() error {
	if st.claimErr != nil {
		return st.claimErr
	}
	if st.claimed == nil {
		return fmt.Errorf("%w: %w", errGrantMissing, errNoGrant)
	}
	if err := st.s.sealer.verify(st.claimed, st.claimedSeal, st.requestID, st.method, st.path); err != nil {
		return err
	}
	st.grant = st.claimed
	st.log = st.log.With(slog.String("decision_id", st.grant.DecisionID))
	st.spanGrant()
	return nil
}

// refuseGrant ends a request whose decision could not be verified: 403,
// and an audit record that names no principal (whatever the metadata
// claimed is not evidence of anything) but the stream's peer.
func (st *procStream) refuseGrant(err error) *extprocv3.ProcessingResponse {
	kind := grantErrorType(err)
	from := ""
	if p, ok := peer.FromContext(st.ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	st.s.metrics.grants.WithLabelValues(kind).Inc()
	st.log.Warn("http request refused: authorization decision not verified", slog.String("error_type", kind),
		slog.String("grpc_peer", from), slog.Any("error", err))
	if !st.recorded {
		st.recorded = true
		ev := st.grantEvent()
		ev.Outcome = audit.OutcomeDenied
		ev.HTTPStatusCode = http.StatusForbidden
		ev.ErrorType = kind
		ev.Error = err.Error()
		if from != "" {
			ev.Error += " (ext_proc stream from " + from + ")"
		}
		st.s.record(st.ctx, ev)
	}
	return immediate(typev3.StatusCode_Forbidden, map[string]any{
		"error":  kind,
		"reason": "custos could not verify the authorization decision for this request, so it was not sent: " + err.Error(),
	})
}
