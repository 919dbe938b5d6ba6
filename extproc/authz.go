package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/internal/policy"
)

// realm names custos in WWW-Authenticate challenges.
const realm = "custos"

// Request headers never handed to policy: they hold credentials.
var secretHeaders = map[string]bool{"authorization": true, "proxy-authorization": true}

// Check answers Envoy's ext_authz filters. A request with HTTP attributes
// comes from the HTTP filter; one without comes from the network filter,
// at the start of a connection. It never returns an error: anything that
// goes wrong is a denial (fail closed).
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	defer func() { s.metrics.checkSeconds.Observe(time.Since(start).Seconds()) }()
	attrs := req.GetAttributes()
	if h := attrs.GetRequest().GetHttp(); h != nil {
		headers := checkHeaders(h)
		if s.opts.Tracer != nil {
			ctx, span := s.checkSpan(ctx, h, headers)
			resp := s.checkHTTP(ctx, attrs, h, headers)
			endCheckSpan(span, resp)
			return resp, nil
		}
		return s.checkHTTP(ctx, attrs, h, headers), nil
	}
	return s.checkConnection(ctx, attrs), nil
}

// checkHTTP authenticates the bearer token, asks policy and answers;
// headers are h's (checkHeaders).
func (s *Server) checkHTTP(ctx context.Context, attrs *authv3.AttributeContext, h *authv3.AttributeContext_HttpRequest, headers map[string]string) *authv3.CheckResponse {
	method, rawPath := requestLine(h, headers)
	path, query, _ := strings.Cut(rawPath, "?")
	log := s.log.With(slog.String("request_id", requestID(h, headers)), slog.String("method", method),
		slog.String("path", s.maskText(path)))

	token, ok := authn.BearerToken(headers["authorization"])
	if !ok {
		s.metrics.checks.WithLabelValues(policy.KindHTTP, "unauthenticated").Inc()
		log.Info("http request refused: no bearer token")
		s.recordAuthFailure(ctx, authFailed(attrs, h, headers, method, path, "missing_token", "no bearer token"), "")
		return unauthenticated(`Bearer realm="`+realm+`"`, "missing_token",
			"this request needs an Authorization: Bearer header with an OIDC token")
	}
	p, err := s.tokens.verify(ctx, token)
	if err != nil {
		reason := authn.Reason(err)
		s.metrics.checks.WithLabelValues(policy.KindHTTP, "unauthenticated").Inc()
		log.Info("http request refused: token not accepted", slog.String("reason", reason), slog.Any("error", err))
		s.recordAuthFailure(ctx, authFailed(attrs, h, headers, method, path, reason, err.Error()), authn.TokenFingerprint(token))
		if errors.Is(err, authn.ErrIssuerUnavailable) {
			return denied(codes.Unavailable, typev3.StatusCode_ServiceUnavailable,
				[]*corev3.HeaderValueOption{header("retry-after", "5")},
				jsonBody(map[string]any{"error": "issuer_unavailable", "reason": err.Error()}))
		}
		return unauthenticated(`Bearer realm="`+realm+`", error="invalid_token", error_description="`+reason+`"`,
			"invalid_token", err.Error())
	}

	res := resourceOf(attrs.GetContextExtensions(), h.GetHost(), headers[":authority"])
	in := &policy.Input{
		Kind:      policy.KindHTTP,
		Principal: policy.PrincipalOf(p),
		Session: policy.Session{
			ID:            requestID(h, headers),
			ClientAddress: addressHost(attrs.GetSource().GetAddress()),
		},
		Resource: res,
		HTTP: &policy.HTTP{
			Method:  method,
			Path:    path,
			Headers: policyHeaders(headers),
			Query:   parseQuery(query),
		},
	}
	dec := s.opts.Policy.Decide(ctx, in)
	log = log.With(slog.String("decision_id", dec.ID), slog.String("principal", p.Subject), slog.String("resource", res.Name))
	switch dec.Outcome() {
	case policy.OutcomeDeny:
		s.metrics.checks.WithLabelValues(policy.KindHTTP, "deny").Inc()
		log.Info("http request denied by policy", slog.String("reason", strings.Join(dec.Reasons, "; ")))
		ev := audit.Event{
			Name: audit.EventHTTPRequest, Outcome: audit.OutcomeDenied,
			ClientAddress: in.Session.ClientAddress, SessionID: in.Session.ID,
			Resource: res.Name, ResourceType: res.Type,
			HTTPMethod: method, URLPath: path, HTTPStatusCode: http.StatusForbidden, PANSources: []string{rawPath},
			Decision: decisionDeny, DecisionID: dec.ID, Reasons: dec.Reasons,
		}
		ev.SetPrincipal(p)
		s.record(ctx, ev)
		return denied(codes.PermissionDenied, typev3.StatusCode_Forbidden,
			[]*corev3.HeaderValueOption{header(envoyctx.HeaderDecisionID, dec.ID)},
			jsonBody(map[string]any{"reason": strings.Join(dec.Reasons, "; "), "reasons": dec.Reasons, "decision_id": dec.ID}))
	case policy.OutcomeApprove:
		s.metrics.checks.WithLabelValues(policy.KindHTTP, "approve").Inc()
		log.Debug("http request allowed pending approval")
	default:
		s.metrics.checks.WithLabelValues(policy.KindHTTP, "allow").Inc()
	}
	g := &grant{
		DecisionID:    dec.ID,
		Outcome:       dec.Outcome(),
		PolicyVersion: dec.PolicyVersion,
		Sub:           p.Subject,
		Iss:           p.Issuer,
		Groups:        p.Groups,
		ClientAddress: in.Session.ClientAddress,
		Resource:      res.Name,
		ResourceType:  res.Type,
		Reasons:       dec.Reasons,
		Approval:      dec.RequireApproval,
		Mask:          dec.Mask,
	}
	if p.Act != nil {
		g.Act = p.Act.Subject
	}
	// Sealed for this request as ext_proc will see it: its x-request-id
	// (not the stream id, which ext_proc never sees), method and path.
	b := s.sealer.bind(headers["x-request-id"], method, rawPath)
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				header(envoyctx.HeaderPrincipal, p.Subject),
				header(envoyctx.HeaderDecisionID, dec.ID),
			},
			// The token stops here: no upstream gets it.
			HeadersToRemove: slices.Clone(envoyctx.CredentialHeaders),
		}},
		DynamicMetadata: g.toStruct(b, s.sealer.seal(g, b)),
	}
}

// checkConnection decides a connection for Envoy's network ext_authz
// filter: no token yet, only the peers.
func (s *Server) checkConnection(ctx context.Context, attrs *authv3.AttributeContext) *authv3.CheckResponse {
	src, dst := attrs.GetSource(), attrs.GetDestination()
	sni := attrs.GetTlsSession().GetSni()
	if sni == "" {
		sni = dst.GetService()
	}
	res := policy.Resource{Labels: map[string]string{}}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		res.Name = first(md.Get(envoyctx.HeaderResource))
		res.Type = first(md.Get(envoyctx.HeaderResourceType))
	}
	if res.Name == "" {
		res.Name = sni
	}
	if res.Name == "" {
		res.Name = addressString(dst.GetAddress())
	}
	claims := map[string]any{}
	if sni != "" {
		claims["sni"] = sni
	}
	if d := addressString(dst.GetAddress()); d != "" {
		claims["destination_address"] = d
	}
	in := &policy.Input{
		Kind:      policy.KindConnection,
		Principal: policy.Principal{Sub: src.GetPrincipal(), Groups: []string{}, Claims: claims},
		Session:   policy.Session{ClientAddress: addressHost(src.GetAddress())},
		Resource:  res,
	}
	dec := s.opts.Policy.Decide(ctx, in)
	log := s.log.With(slog.String("decision_id", dec.ID), slog.String("client_address", in.Session.ClientAddress),
		slog.String("resource", res.Name), slog.String("peer_principal", in.Principal.Sub))
	if dec.Outcome() != policy.OutcomeAllow {
		reason := strings.Join(dec.Reasons, "; ")
		if dec.Outcome() == policy.OutcomeApprove {
			reason = "a connection cannot wait for approval: " + reason
		}
		s.metrics.checks.WithLabelValues(policy.KindConnection, "deny").Inc()
		log.Info("connection denied by policy", slog.String("reason", reason))
		s.record(ctx, audit.Event{
			Name: audit.EventConnectionOpened, Outcome: audit.OutcomeDenied,
			UserID: in.Principal.Sub, ClientAddress: in.Session.ClientAddress,
			Resource: res.Name, ResourceType: res.Type,
			Decision: decisionDeny, DecisionID: dec.ID, Reasons: dec.Reasons, Error: reason,
		})
		return &authv3.CheckResponse{Status: &rpcstatus.Status{
			Code:    int32(codes.PermissionDenied),
			Message: reason + " (decision " + dec.ID + ")",
		}}
	}
	s.metrics.checks.WithLabelValues(policy.KindConnection, "allow").Inc()
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}
}

// authFailed is the audit event of a request refused for its token.
func authFailed(attrs *authv3.AttributeContext, h *authv3.AttributeContext_HttpRequest, headers map[string]string,
	method, path, reason, msg string,
) audit.Event {
	res := resourceOf(attrs.GetContextExtensions(), h.GetHost(), headers[":authority"])
	return audit.Event{
		Name: audit.EventAuthFailed, Outcome: audit.OutcomeFailure,
		ClientAddress: addressHost(attrs.GetSource().GetAddress()), SessionID: requestID(h, headers),
		Resource: res.Name, ResourceType: res.Type,
		HTTPMethod: method, URLPath: path, HTTPStatusCode: http.StatusUnauthorized,
		ErrorType: reason, Error: msg,
	}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// checkHeaders returns the request headers of a Check: the headers map,
// or header_map when Envoy encodes raw headers (values in raw_value,
// repeated headers as several entries, joined here by commas).
func checkHeaders(h *authv3.AttributeContext_HttpRequest) map[string]string {
	if hm := h.GetHeaderMap(); len(hm.GetHeaders()) > 0 {
		out := make(map[string]string, len(hm.GetHeaders()))
		for _, hv := range hm.GetHeaders() {
			k := strings.ToLower(hv.GetKey())
			v := headerValue(hv)
			if prev, ok := out[k]; ok {
				v = prev + "," + v
			}
			out[k] = v
		}
		return out
	}
	if hs := h.GetHeaders(); hs != nil {
		return hs
	}
	return map[string]string{}
}

// requestLine is the request's method and path (with its query): the
// attributes Envoy sets, else the :method and :path pseudo-headers.
func requestLine(h *authv3.AttributeContext_HttpRequest, headers map[string]string) (method, path string) {
	method, path = h.GetMethod(), h.GetPath()
	if method == "" {
		method = headers[":method"]
	}
	if path == "" {
		path = headers[":path"]
	}
	return method, path
}

// requestID is the request's x-request-id, else Envoy's stream id.
func requestID(h *authv3.AttributeContext_HttpRequest, headers map[string]string) string {
	if id := headers["x-request-id"]; id != "" {
		return id
	}
	return h.GetId()
}

// resourceOf is the resource named by the route's context_extensions, or
// the request's host when the route names none (a request that matched no
// route).
func resourceOf(ext map[string]string, host, authority string) policy.Resource {
	res := policy.Resource{Labels: map[string]string{}}
	if name := ext[envoyctx.ContextResource]; name != "" {
		res.Name = name
		res.Type = ext[envoyctx.ContextResourceType]
		for k, v := range ext {
			if label, ok := strings.CutPrefix(k, envoyctx.ContextLabelPrefix); ok && label != "" {
				res.Labels[label] = v
			}
		}
	} else {
		if host == "" {
			host = authority
		}
		res.Name = host
	}
	if res.Type == "" {
		res.Type = envoyctx.TypeHTTP
	}
	return res
}

// policyHeaders are the request headers policy sees: no pseudo-headers
// (method and path have fields of their own) and no credentials.
func policyHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if strings.HasPrefix(k, ":") || secretHeaders[k] {
			continue
		}
		out[k] = v
	}
	return out
}

// parseQuery parses a query string; a malformed pair is kept as far as it
// parses (policy decides on what it sees, the upstream gets the original).
func parseQuery(q string) map[string][]string {
	vals, _ := url.ParseQuery(q)
	if vals == nil {
		return map[string][]string{}
	}
	return vals
}

func addressHost(a *corev3.Address) string {
	return a.GetSocketAddress().GetAddress()
}

func addressString(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa.GetAddress() == "" {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// header is an ext_authz header to set: ext_authz reads value, not
// raw_value.
func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func jsonBody(v map[string]any) string {
	b, err := json.Marshal(v)
	if err != nil { // maps of strings and string slices always marshal
		return `{"reason":"internal error"}`
	}
	return string(b) + "\n"
}

func unauthenticated(challenge, code, reason string) *authv3.CheckResponse {
	return denied(codes.Unauthenticated, typev3.StatusCode_Unauthorized,
		[]*corev3.HeaderValueOption{header("www-authenticate", challenge)},
		jsonBody(map[string]any{"error": code, "reason": reason}))
}

func denied(code codes.Code, httpStatus typev3.StatusCode, headers []*corev3.HeaderValueOption, body string) *authv3.CheckResponse {
	headers = append(headers, header("content-type", "application/json"), header("cache-control", "no-store"))
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpStatus},
			Headers: headers,
			Body:    body,
		}},
	}
}

// maskText masks card numbers in text bound for logs and approvers.
func (s *Server) maskText(v string) string {
	out, _ := s.opts.Masker.Text(nil, []byte(v), "")
	return string(out)
}
