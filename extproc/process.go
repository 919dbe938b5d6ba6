package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
)

// errStreamGone: Envoy cancelled the stream (the client went away) while
// custos held a message.
var errStreamGone = errors.New("ext_proc stream cancelled")

// Process serves one ext_proc stream: one HTTP request and its response.
// Every message gets exactly one reply of its own kind, or an immediate
// response that ends the request. Envoy ends streams by cancelling them;
// that is a normal end.
func (s *Server) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	st := &procStream{s: s, srv: srv, ctx: srv.Context(), log: s.log, started: time.Now()}
	defer func() {
		// A request that never reached its response (the client or
		// the upstream went away, Envoy gave up) is recorded too.
		st.recordRefusal(audit.OutcomeFailure, 0, "the request ended before its response was complete")
		st.endSpan()
	}()
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || st.ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp, err := st.handle(req)
		if err != nil {
			if errors.Is(err, errStreamGone) || st.ctx.Err() != nil {
				return nil
			}
			st.log.Error("ext_proc stream failed", slog.Any("error", err))
			if _, ok := status.FromError(err); ok {
				return err
			}
			return status.Error(codes.Internal, err.Error())
		}
		if resp == nil {
			continue
		}
		if err := srv.Send(resp); err != nil {
			if st.ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// procStream is the state of one ext_proc stream.
type procStream struct {
	s   *Server
	srv extprocv3.ExternalProcessor_ProcessServer
	ctx context.Context
	log *slog.Logger

	// claimed is the ext_authz decision read from the first message that
	// carries metadata, with its seal; claimErr says why there is none.
	// Nothing of it is used before verifyGrant moves it to grant.
	claimed     *grant
	claimedSeal *sealState
	claimErr    error
	grantSeen   bool
	// grant is the verified decision; nil until the request headers
	// arrived and the seal checked out.
	grant *grant

	// Body modes from the first message's protocol_config; modesKnown is
	// false when Envoy sent none.
	reqBodyMode, respBodyMode filterv3.ProcessingMode_BodySendMode
	modesKnown                bool

	// Request.
	requestID, method, path string
	// parkOnBody: the request needs approval and its buffered body comes
	// next; it is parked then, with the body pinned.
	parkOnBody bool

	// Response.
	resp     responseInfo
	streamed []byte // response chunks held in STREAMED mode

	// Audit.
	started    time.Time
	masked     mask.Counts
	approvalID string
	recorded   bool

	// span covers the stream; nil without a tracer.
	span trace.Span
}

// responseInfo is what the body phase needs of the response headers.
type responseInfo struct {
	status          string
	contentType     string
	contentEncoding string
	hasLength       bool
}

func (st *procStream) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if pc := req.GetProtocolConfig(); pc != nil && !st.modesKnown {
		st.reqBodyMode, st.respBodyMode, st.modesKnown = pc.GetRequestBodyMode(), pc.GetResponseBodyMode(), true
	}
	if !st.grantSeen && req.GetMetadataContext() != nil {
		st.grantSeen = true
		st.claimed, st.claimedSeal, st.claimErr = grantFrom(req.GetMetadataContext())
	}
	if req.GetObservabilityMode() {
		return nil, nil // replies would be ignored
	}
	if st.grant == nil {
		// The decision is checked against the request headers: until
		// they came and it checked out, nothing goes through.
		if h := req.GetRequestHeaders(); h != nil {
			return st.requestHeaders(h)
		}
		return st.refuseGrant(fmt.Errorf("%w: custos checks the decision against the request headers, and the stream did not start with them",
			errGrantUnbound)), nil
	}
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return st.requestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return st.requestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{},
		}}, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return st.responseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return st.responseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		if len(st.streamed) > 0 {
			// The held body can no longer be sent: a trailers reply
			// carries none.
			return nil, errors.New("response trailers arrived while a streamed body was held")
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{},
		}}, nil
	default:
		return nil, status.Errorf(codes.InvalidArgument, "processing request of unknown kind %T", r)
	}
}

// requestHeaders lets an allowed request go, refuses one without a
// decision, and parks one that needs approval (now, or on its buffered
// body).
func (st *procStream) requestHeaders(h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	hs := h.GetHeaders().GetHeaders()
	st.method = headerGet(hs, ":method")
	st.path = headerGet(hs, ":path")
	st.requestID = headerGet(hs, "x-request-id")
	st.startSpan(hs)
	st.log = st.log.With(slog.String("request_id", st.requestID), slog.String("method", st.method),
		slog.String("path", st.s.maskText(pathOnly(st.path))))
	if st.grant == nil {
		if err := st.verifyGrant(); err != nil {
			return st.refuseGrant(err), nil
		}
	}
	if st.grant.Outcome != policy.OutcomeApprove {
		return requestHeadersResponse(nil), nil
	}
	switch {
	case h.GetEndOfStream():
		return st.park(nil, true, false, true)
	case st.modesKnown && (st.reqBodyMode == filterv3.ProcessingMode_BUFFERED || st.reqBodyMode == filterv3.ProcessingMode_BUFFERED_PARTIAL):
		// Envoy holds the headers until the buffered body is answered.
		st.parkOnBody = true
		return requestHeadersResponse(nil), nil
	default:
		return st.park(nil, false, false, true)
	}
}

func (st *procStream) requestBody(b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	if st.parkOnBody {
		st.parkOnBody = false
		return st.park(b.GetBody(), true, b.GetEndOfStream(), false)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}},
	}}, nil
}

// responseHeaders masks card numbers in header values and refuses a body
// custos could not inspect.
func (st *procStream) responseHeaders(h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	hs := h.GetHeaders().GetHeaders()
	st.resp = responseInfo{
		status:          headerGet(hs, ":status"),
		contentType:     headerGet(hs, "content-type"),
		contentEncoding: headerGet(hs, "content-encoding"),
		hasLength:       headerGet(hs, "content-length") != "",
	}
	mut := st.maskHeaders(hs)
	if h.GetEndOfStream() || !st.bodyComes() {
		if !st.recordResponse() {
			return st.auditUnavailable(), nil
		}
	}
	if !h.GetEndOfStream() && st.bodyComes() {
		if _, err := codingOf(st.resp.contentEncoding); err != nil {
			st.s.metrics.bodies.WithLabelValues("refused").Inc()
			st.log.Warn("http response refused: body cannot be inspected", slog.Any("error", err))
			return st.immediate(typev3.StatusCode_BadGateway, map[string]any{
				"reason": "the upstream response could not be inspected for card data: " + err.Error(),
			}), nil
		}
		if st.modesKnown && st.respBodyMode == filterv3.ProcessingMode_STREAMED {
			// Envoy drops content-length in this mode; the body
			// custos sends at the end has its own length.
			if mut == nil {
				mut = &extprocv3.HeaderMutation{}
			}
			mut.RemoveHeaders = append(mut.RemoveHeaders, "content-length")
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}},
	}}, nil
}

// bodyComes reports whether Envoy sends the response body to custos.
func (st *procStream) bodyComes() bool {
	return !st.modesKnown || st.respBodyMode != filterv3.ProcessingMode_NONE
}

// maskHeaders masks card numbers in response header values.
func (st *procStream) maskHeaders(hs []*corev3.HeaderValue) *extprocv3.HeaderMutation {
	if m := st.rules(); !m.DetectPAN {
		return nil
	}
	var mut *extprocv3.HeaderMutation
	for _, hv := range hs {
		k := hv.GetKey()
		if strings.HasPrefix(k, ":") {
			continue
		}
		v := headerValue(hv)
		out, c := st.s.opts.Masker.Text(nil, []byte(v), st.reveal())
		if c.IsZero() {
			continue
		}
		st.s.metrics.masked.WithLabelValues("pan").Add(float64(c.PANs))
		st.s.metrics.masked.WithLabelValues("sad").Add(float64(c.SAD))
		st.masked.Add(c)
		if mut == nil {
			mut = &extprocv3.HeaderMutation{}
		}
		mut.SetHeaders = append(mut.SetHeaders, rawHeader(k, string(out)))
	}
	return mut
}

// A buffered response body of largeBody bytes or more gets Envoy to wait
// up to largeBodyHold (override_message_timeout) while custos masks it.
const (
	largeBody     = 256 << 10
	largeBodyHold = 30 * time.Second
)

// holdForLargeBody asks Envoy to wait (override_message_timeout) before
// custos masks a body of n bytes, when masking it may outlast Envoy's
// message_timeout (200 ms by default) on a busy machine.
func (st *procStream) holdForLargeBody(n int) error {
	if n < largeBody {
		return nil
	}
	hold := min(largeBodyHold, st.s.opts.MaxMessageTimeout)
	if err := st.srv.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(hold)}); err != nil {
		return errStreamGone
	}
	return nil
}

func (st *procStream) responseBody(b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	streamed := st.modesKnown && st.respBodyMode == filterv3.ProcessingMode_STREAMED ||
		!st.modesKnown && (!b.GetEndOfStream() || st.streamed != nil)
	if streamed {
		return st.streamedChunk(b)
	}
	if !b.GetEndOfStream() {
		// BUFFERED_PARTIAL over its limit: the rest of the body would
		// pass uninspected.
		st.s.metrics.bodies.WithLabelValues("refused").Inc()
		st.log.Warn("http response refused: body larger than Envoy's buffer", slog.Int("bytes", len(b.GetBody())))
		return st.immediate(typev3.StatusCode_BadGateway, map[string]any{
			"reason": "the upstream response is larger than custos may inspect for card data",
		}), nil
	}
	if err := st.holdForLargeBody(len(b.GetBody())); err != nil {
		return nil, err
	}
	out, changed, err := st.maskBody(b.GetBody())
	if err != nil {
		return st.refuseBody(err), nil
	}
	if !st.recordResponse() {
		return st.auditUnavailable(), nil
	}
	cr := &extprocv3.CommonResponse{}
	if changed {
		cr.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			rawHeader("content-length", strconv.Itoa(len(out))),
		}}
		cr.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
	}
	return responseBodyResponse(cr), nil
}

// streamedChunk holds the chunks of a STREAMED response body (each is
// answered with an empty replacement) and sends the whole masked body in
// place of the last one: a card number split between chunks is found.
func (st *procStream) streamedChunk(b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	if st.streamed == nil {
		st.streamed = []byte{}
	}
	if len(st.streamed)+len(b.GetBody()) > st.s.opts.MaxBodyBytes {
		// The headers are gone; only ending the stream stops the body.
		st.s.metrics.bodies.WithLabelValues("refused").Inc()
		st.log.Warn("http response cut: streamed body larger than custos may hold", slog.Int("max_bytes", st.s.opts.MaxBodyBytes))
		st.recordRefusal(audit.OutcomeFailure, http.StatusBadGateway, "streamed response body larger than custos may hold")
		return nil, errors.New("streamed response body larger than MaxBodyBytes")
	}
	st.streamed = append(st.streamed, b.GetBody()...)
	if !b.GetEndOfStream() {
		return responseBodyResponse(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true},
		}}), nil
	}
	if err := st.holdForLargeBody(len(st.streamed)); err != nil {
		return nil, err
	}
	out, _, err := st.maskBody(st.streamed)
	st.streamed = nil
	if err != nil {
		st.s.metrics.bodies.WithLabelValues("refused").Inc()
		st.log.Warn("http response cut: body cannot be inspected", slog.Any("error", err))
		st.recordRefusal(audit.OutcomeFailure, http.StatusBadGateway, "response body cannot be inspected: "+err.Error())
		return nil, err
	}
	if !st.recordResponse() {
		return nil, errors.New("the audit record of the response could not be written")
	}
	return responseBodyResponse(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
		Mutation: &extprocv3.BodyMutation_Body{Body: out},
	}}), nil
}

func (st *procStream) refuseBody(err error) *extprocv3.ProcessingResponse {
	st.s.metrics.bodies.WithLabelValues("refused").Inc()
	st.log.Warn("http response refused: body cannot be inspected", slog.Any("error", err))
	return st.immediate(typev3.StatusCode_BadGateway, map[string]any{
		"reason": "the upstream response could not be inspected for card data: " + err.Error(),
	})
}

// rules are the decision's masking rules; without a decision (a
// response custos saw no request for) card numbers are still detected.
func (st *procStream) rules() policy.Mask {
	if st.grant == nil || st.grant.Mask == nil {
		return policy.Mask{DetectPAN: true}
	}
	return *st.grant.Mask
}

// headerGet is the value of header k (lower case) in an ext_proc header
// map; repeated headers are joined by commas.
func headerGet(hs []*corev3.HeaderValue, k string) string {
	var out string
	found := false
	for _, hv := range hs {
		if hv.GetKey() != k {
			continue
		}
		if found {
			out += "," + headerValue(hv)
		} else {
			out, found = headerValue(hv), true
		}
	}
	return out
}

// headerValue reads a header value from raw_value, where Envoy puts it,
// or value.
func headerValue(hv *corev3.HeaderValue) string {
	if len(hv.GetRawValue()) > 0 {
		return string(hv.GetRawValue())
	}
	return hv.GetValue()
}

// rawHeader is an ext_proc header mutation: the value goes in raw_value
// (setting value too is an error for Envoy).
func rawHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func pathOnly(p string) string {
	path, _, _ := strings.Cut(p, "?")
	return path
}

func requestHeadersResponse(mut *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}},
	}}
}

func requestBodyResponse(mut *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}},
	}}
}

func responseBodyResponse(cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: cr},
	}}
}

// immediate ends the request with a JSON answer, and records it.
func (st *procStream) immediate(code typev3.StatusCode, body map[string]any) *extprocv3.ProcessingResponse {
	outcome := audit.OutcomeFailure
	if code == typev3.StatusCode_Forbidden {
		outcome = audit.OutcomeDenied
	}
	reason, _ := body["reason"].(string)
	st.recordRefusal(outcome, int(code), reason)
	return immediate(code, body)
}

// auditUnavailable refuses a response whose audit record could not be
// written.
func (st *procStream) auditUnavailable() *extprocv3.ProcessingResponse {
	st.s.metrics.bodies.WithLabelValues("refused").Inc()
	return immediate(typev3.StatusCode_ServiceUnavailable, map[string]any{
		"reason": "custos could not record this request in its audit journal; the response was withheld",
	})
}

// immediate ends the request with a JSON answer.
func immediate(code typev3.StatusCode, body map[string]any) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: code},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				rawHeader("content-type", "application/json"),
				rawHeader("cache-control", "no-store"),
			}},
			Body:    []byte(jsonBody(body)),
			Details: "custos",
		},
	}}
}
