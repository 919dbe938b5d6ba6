package tests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/envoyctx"
)

// TestCustosDevAnswersEnvoy checks that `custos dev` serves Envoy's
// external authorization on its gRPC listener, as Envoy calls it: an HTTP
// Check with and without a valid bearer token, and a network Check of a
// new Postgres connection.
func TestCustosDevAnswersEnvoy(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	dataDir := devDataDir(t, "custos-e2e-envoy-")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)
	token := mintToken(t, bin, dataDir, "alice", "agents")

	client := authv3.NewAuthorizationClient(dialEnvoy(t, vars, true))
	httpCheck := func(t *testing.T, method string, headers map[string]string) *authv3.CheckResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, customersCheck("127.0.0.1", "req-1", method, headers))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp
	}

	t.Run("allowed", func(t *testing.T) {
		resp := httpCheck(t, "GET", map[string]string{"authorization": "Bearer " + token})
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("GET with a valid token: %v", resp)
		}
		var principal bool
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-custos-principal" && strings.Contains(h.GetHeader().GetValue(), "alice") {
				principal = true
			}
		}
		if !principal {
			t.Errorf("allowed Check carries no x-custos-principal naming alice: %v", resp.GetOkResponse())
		}
	})
	t.Run("bad token", func(t *testing.T) {
		resp := httpCheck(t, "GET", map[string]string{"authorization": "Bearer not.a.token"})
		if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Fatalf("bad token: %v", resp)
		}
	})
	t.Run("network check", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1", 40001)},
			Destination: &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1", 16543)},
		}})
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("network check: %v %v", resp, err)
		}
	})
}

// customersCheck is Envoy's HTTP Check of a request to the demo route
// /v1/customers from src, with headers added to the pseudo-headers.
func customersCheck(src, id, method string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": "/v1/customers", ":authority": "api.example.com", ":scheme": "https"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: sockAddr(src, 40000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: id, Method: method, Path: "/v1/customers", Host: "api.example.com", Scheme: "https", Headers: h,
		}},
	}}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// The HTTP route of envoy/envoy.yaml, as its filters describe it to custos:
// ext_authz's context_extensions and route metadata, ext_proc's gRPC
// initial metadata and processing mode (request headers SEND, request
// body NONE, response headers SEND, response body BUFFERED, trailers
// SKIP; no request_attributes, so no attributes).
var (
	upstreamAPIContext = map[string]string{
		envoyctx.ContextResource:            "upstream-api",
		envoyctx.ContextResourceType:        envoyctx.TypeHTTP,
		envoyctx.ContextLabelPrefix + "pci": "cde",
	}
	upstreamAPIProtocol = &extprocv3.ProtocolConfiguration{
		RequestBodyMode:  filterv3.ProcessingMode_NONE,
		ResponseBodyMode: filterv3.ProcessingMode_BUFFERED,
	}
)

// envoyRequest is one client request on envoy/envoy.yaml's HTTP listener,
// as its filters see it.
type envoyRequest struct {
	method, path string
	// requestID is the x-request-id Envoy set (it replaces a client's);
	// streamID the stream id ext_authz reports as attributes.request.http.id.
	requestID, streamID string
	// headers are the request headers in Envoy's order: pseudo-headers
	// first, lower-case names, then what the connection manager added.
	headers [][2]string
}

// newEnvoyRequest is a request from an HTTP/1.1 client at 192.0.2.10 with
// the bearer token, after Envoy's connection manager handled it
// (use_remote_address: x-forwarded-for, x-envoy-external-address;
// x-forwarded-proto; x-request-id).
func newEnvoyRequest(t *testing.T, method, path, token string) *envoyRequest {
	t.Helper()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	id[6], id[8] = id[6]&0x0f|0x40, id[8]&0x3f|0x80 // UUID v4, as Envoy generates
	u := hex.EncodeToString(id)
	rq := &envoyRequest{
		method:    method,
		path:      path,
		requestID: u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:],
		streamID:  strconv.FormatUint(binary.BigEndian.Uint64(id[8:]), 10),
	}
	rq.headers = [][2]string{
		{":authority", "api.example.com"}, {":path", path}, {":method", method}, {":scheme", "http"},
		{"user-agent", "curl/8.5.0"}, {"accept", "application/json"},
	}
	if token != "" {
		rq.headers = append(rq.headers, [2]string{"authorization", "Bearer " + token})
	}
	rq.headers = append(rq.headers,
		[2]string{"proxy-authorization", "Basic bWFsbG9yeTpzZWNyZXQ="},
		[2]string{"x-forwarded-for", "192.0.2.10"},
		[2]string{"x-forwarded-proto", "http"},
		[2]string{"x-envoy-external-address", "192.0.2.10"},
		[2]string{"x-request-id", rq.requestID})
	return rq
}

// check is ext_authz's Check of rq: headers as a map (repeated ones joined
// by commas), the route's context_extensions and route metadata
// (route_metadata_context_namespaces: [custos]), no body for a request
// without one.
func (rq *envoyRequest) check(t *testing.T, client authv3.AuthorizationClient) *authv3.CheckResponse {
	t.Helper()
	headers := map[string]string{}
	for _, h := range rq.headers {
		if prev, ok := headers[h[0]]; ok {
			headers[h[0]] = prev + "," + h[1]
		} else {
			headers[h[0]] = h[1]
		}
	}
	labels, _ := structpb.NewStruct(map[string]any{"pci": "cde"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sockAddr("192.0.2.10", 53122)},
		Destination: &authv3.AttributeContext_Peer{Address: sockAddr("10.0.0.2", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: rq.streamID, Method: rq.method, Path: rq.path, Host: "api.example.com", Scheme: "http",
				Protocol: "HTTP/1.1", Headers: headers,
			},
		},
		ContextExtensions: upstreamAPIContext,
		RouteMetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			envoyctx.MetadataNamespace: {Fields: map[string]*structpb.Value{
				"resource": structpb.NewStringValue("upstream-api"),
				"type":     structpb.NewStringValue(envoyctx.TypeHTTP),
				"labels":   structpb.NewStructValue(labels),
			}},
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// authorized is what an OK Check hands on, as Envoy applies it: the
// request headers with the response's headers set (ext_authz reads value)
// and its headers_to_remove removed, and the metadata_context ext_proc
// gets (forwarding_namespaces: the dynamic metadata under
// envoy.filters.http.ext_authz).
func (rq *envoyRequest) authorized(t *testing.T, resp *authv3.CheckResponse) ([][2]string, *corev3.Metadata) {
	t.Helper()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("Check of %s %s refused: %v", rq.method, rq.path, resp)
	}
	hs := slices.Clone(rq.headers)
	for _, h := range resp.GetOkResponse().GetHeaders() {
		k, v := strings.ToLower(h.GetHeader().GetKey()), h.GetHeader().GetValue()
		if i := slices.IndexFunc(hs, func(e [2]string) bool { return e[0] == k }); i >= 0 {
			hs[i][1] = v
		} else {
			hs = append(hs, [2]string{k, v})
		}
	}
	for _, k := range resp.GetOkResponse().GetHeadersToRemove() {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || k == "host" {
			continue // Envoy never removes these
		}
		hs = slices.DeleteFunc(hs, func(e [2]string) bool { return e[0] == k })
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	if dm := resp.GetDynamicMetadata(); dm != nil {
		md.FilterMetadata[envoyctx.ExtAuthzNamespace] = dm
	}
	return hs, md
}

func headerMap(hs [][2]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	return m
}

// procStream is one ext_proc stream from Envoy's side.
type procStream struct {
	t      *testing.T
	stream extprocv3.ExternalProcessor_ProcessClient
	md     *corev3.Metadata
	sent   bool
}

// openProc opens the ext_proc stream of a request, with the route's gRPC
// initial metadata; every message carries md as its metadata_context, the
// first one the protocol_config.
func openProc(t *testing.T, client extprocv3.ExternalProcessorClient, md *corev3.Metadata) *procStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel) // Envoy ends a stream by cancelling it
	ctx = metadata.AppendToOutgoingContext(ctx, envoyctx.HeaderResource, "upstream-api",
		envoyctx.HeaderResourceType, envoyctx.TypeHTTP)
	s, err := client.Process(ctx)
	if err != nil {
		t.Fatalf("ext_proc stream: %v", err)
	}
	return &procStream{t: t, stream: s, md: md}
}

// exchange sends m and returns custos' reply.
func (ps *procStream) exchange(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	ps.t.Helper()
	m.MetadataContext = ps.md
	if !ps.sent {
		m.ProtocolConfig = upstreamAPIProtocol
		ps.sent = true
	}
	if err := ps.stream.Send(m); err != nil {
		ps.t.Fatalf("ext_proc send: %v", err)
	}
	resp, err := ps.stream.Recv()
	if err != nil {
		ps.t.Fatalf("ext_proc reply: %v", err)
	}
	return resp
}

// requestHeaders sends the request headers (a request without a body:
// end_of_stream).
func (ps *procStream) requestHeaders(hs [][2]string) *extprocv3.ProcessingResponse {
	ps.t.Helper()
	return ps.exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(hs), EndOfStream: true},
	}})
}

// quiet half-closes the stream and checks custos sends nothing more.
func (ps *procStream) quiet() {
	ps.t.Helper()
	if err := ps.stream.CloseSend(); err != nil {
		ps.t.Fatalf("ext_proc close: %v", err)
	}
	if resp, err := ps.stream.Recv(); !errors.Is(err, io.EOF) {
		ps.t.Errorf("after its last reply custos sent %v (error %v), want the end of the stream", resp, err)
	}
}

// grantSeal re-creates the seal of extproc/seal.go over the dynamic
// metadata g of a Check (fields as extproc/grant.go writes them) bound to
// the request's method and path: HMAC-SHA256 of a domain string and every
// field in a fixed order, length-prefixed. Written here from the format,
// not with the package's code, and checked against custos' own seals.
func grantSeal(key []byte, g *structpb.Struct, method, path string) string {
	f := g.GetFields()
	var b []byte
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	num := func(n int64) { b = binary.AppendVarint(b, n) }
	list := func(v *structpb.Value) {
		vs := v.GetListValue().GetValues()
		num(int64(len(vs)))
		for _, e := range vs {
			str(e.GetStringValue())
		}
	}
	s := func(k string) { str(f[k].GetStringValue()) }
	b = append(b, "custos ext_authz grant v1\x00"...)
	s("request_id")
	str(method)
	str(path)
	num(int64(f["sealed_at"].GetNumberValue()))
	num(int64(f["seal_expires"].GetNumberValue()))
	for _, k := range []string{"decision_id", "outcome", "policy_version", "principal", "issuer"} {
		s(k)
	}
	list(f["groups"])
	for _, k := range []string{"act", "client_address", "resource", "resource_type"} {
		s(k)
	}
	list(f["reasons"])
	if a := f["require_approval"].GetStructValue(); a != nil {
		b = append(b, 1)
		list(a.GetFields()["approver_groups"])
		num(int64(a.GetFields()["quorum"].GetNumberValue()))
		str(a.GetFields()["ttl"].GetStringValue())
	} else {
		b = append(b, 0)
	}
	if m := f["mask"].GetStructValue(); m != nil {
		b = append(b, 1)
		paths := m.GetFields()["json_paths"].GetStructValue().GetFields()
		keys := slices.Sorted(maps.Keys(paths))
		num(int64(len(keys)))
		for _, k := range keys {
			str(k)
			str(paths[k].GetStringValue())
		}
		if m.GetFields()["detect_pan"].GetBoolValue() {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		str(m.GetFields()["reveal"].GetStringValue())
	} else {
		b = append(b, 0)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestCustosDevVerifiesGrants runs one request the way Envoy's HTTP filter
// chain (envoy/envoy.yaml) calls `custos dev`: Check, then the ext_proc
// stream carrying the sealed decision Envoy forwards as metadata_context;
// the response body is masked. Then it plays a caller of the gRPC
// listener who forges, moves or reuses a decision: each stream is refused
// with a 403 immediate response before anything goes upstream, and each
// refusal is in the audit journal, naming the stream's peer and no
// principal.
func TestCustosDevVerifiesGrants(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	dataDir := devDataDir(t, "custos-e2e-grant-")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)
	token := mintToken(t, bin, dataDir, "alice", "agents")
	raw, err := os.ReadFile(extproc.GrantKeyFile(dataDir))
	if err != nil {
		t.Fatalf("custos dev's grant key: %v", err)
	}
	key := []byte(strings.TrimRight(string(raw), "\r\n"))

	cc := dialEnvoy(t, vars, true)
	authz := authv3.NewAuthorizationClient(cc)
	proc := extprocv3.NewExternalProcessorClient(cc)

	// Session ids (x-request-id as ext_proc saw it) of the refusals the
	// journal must hold, with their error.type; and the honest request's.
	refusals := map[string]string{}
	var honestID string

	t.Run("honest request", func(t *testing.T) {
		rq := newEnvoyRequest(t, "GET", "/v1/customers/7?expand=card", token)
		resp := rq.check(t, authz)
		hs, md := rq.authorized(t, resp)
		ok := resp.GetOkResponse()
		if rm := ok.GetHeadersToRemove(); !slices.Contains(rm, "authorization") || !slices.Contains(rm, "proxy-authorization") {
			t.Errorf("the OK response removes %q, want authorization and proxy-authorization", rm)
		}
		for _, h := range hs {
			if h[0] == "authorization" || h[0] == "proxy-authorization" {
				t.Errorf("header %s still goes upstream", h[0])
			}
		}
		// Nothing Envoy keeps or forwards holds the token.
		if b, err := protojson.Marshal(resp); err != nil || bytes.Contains(b, []byte(token)) {
			t.Errorf("the OK response holds the bearer token (%v): %s", err, b)
		}
		g := md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace]
		if g == nil {
			t.Fatalf("the OK response carries no dynamic metadata: %v", resp)
		}
		gf := g.GetFields()
		var decisionHeader string
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == envoyctx.HeaderDecisionID {
				decisionHeader = h.GetHeader().GetValue()
			}
		}
		if gf["principal"].GetStringValue() != "alice" || gf["request_id"].GetStringValue() != rq.requestID ||
			gf["decision_id"].GetStringValue() == "" || gf["decision_id"].GetStringValue() != decisionHeader {
			t.Errorf("the grant does not name alice, request %s and decision %q: %v", rq.requestID, decisionHeader, g)
		}
		if exp, at := gf["seal_expires"].GetNumberValue(), gf["sealed_at"].GetNumberValue(); exp-at != float64(extproc.GrantTTL.Milliseconds()) {
			t.Errorf("the grant is sealed for %v ms, want %d", exp-at, extproc.GrantTTL.Milliseconds())
		}
		// The test's sealing agrees with custos': the forgeries below
		// differ only in what each of them changes.
		if got := grantSeal(key, g, rq.method, rq.path); got != gf["seal"].GetStringValue() {
			t.Fatalf("the test's seal %s differs from custos' %s: the seal format changed", got, gf["seal"].GetStringValue())
		}

		ps := openProc(t, proc, md)
		r := ps.requestHeaders(hs)
		if r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse().GetStatus() != extprocv3.CommonResponse_CONTINUE {
			t.Fatalf("request headers of an allowed GET: %v, want request_headers CONTINUE", r)
		}
		body := []byte(`{"id":7,"holder":"Ada Lovelace","pan":"4242424242424242","note":"paid with 5555 5555 5555 4444"}` + "\n")
		r = ps.exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap([][2]string{
				{":status", "200"}, {"content-type", "application/json"}, {"content-length", strconv.Itoa(len(body))},
				{"date", time.Now().UTC().Format(http.TimeFormat)}, {"x-envoy-upstream-service-time", "3"},
			})},
		}})
		if r.GetResponseHeaders() == nil {
			t.Fatalf("response headers: %v, want response_headers", r)
		}
		r = ps.exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true},
		}})
		cr := r.GetResponseBody().GetResponse()
		if cr == nil {
			t.Fatalf("response body: %v, want response_body", r)
		}
		masked := cr.GetBodyMutation().GetBody()
		noPAN(t, "the masked response body", masked)
		if !bytes.Contains(masked, []byte("4242")) || !bytes.Contains(masked, []byte("4444")) || !bytes.Contains(masked, []byte("Ada Lovelace")) {
			t.Errorf("masked body %q lost more than the card numbers", masked)
		}
		var length string
		for _, h := range cr.GetHeaderMutation().GetSetHeaders() {
			if h.GetHeader().GetKey() == "content-length" {
				length = string(h.GetHeader().GetRawValue())
			}
		}
		if length != strconv.Itoa(len(masked)) {
			t.Errorf("content-length set to %q for a %d-byte body", length, len(masked))
		}
		ps.quiet()
		honestID = rq.requestID
	})

	// refused opens a stream with hs and md and checks custos ends the
	// request with a 403 naming why, and nothing else.
	refused := func(t *testing.T, hs [][2]string, md *corev3.Metadata, want string) {
		t.Helper()
		ps := openProc(t, proc, md)
		r := ps.requestHeaders(hs)
		ir := r.GetImmediateResponse()
		if ir == nil {
			t.Fatalf("a stream with %s got %v, want an immediate response", want, r)
		}
		if ir.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
			t.Errorf("immediate response status %v, want 403", ir.GetStatus().GetCode())
		}
		var body struct{ Error, Reason string }
		if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body.Error != want {
			t.Errorf("immediate response body %q, want error %q (%v)", ir.GetBody(), want, err)
		}
		ps.quiet()
		for _, h := range hs {
			if h[0] == "x-request-id" {
				refusals[h[1]] = want
			}
		}
	}
	// honest is a fresh request's Check, as Envoy applies it.
	honest := func(t *testing.T) (*envoyRequest, [][2]string, *corev3.Metadata) {
		t.Helper()
		rq := newEnvoyRequest(t, "GET", "/v1/customers", token)
		hs, md := rq.authorized(t, rq.check(t, authz))
		return rq, hs, md
	}
	grantOf := func(md *corev3.Metadata) map[string]*structpb.Value {
		return md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace].GetFields()
	}
	setHeader := func(hs [][2]string, k, v string) [][2]string {
		hs = slices.Clone(hs)
		for i := range hs {
			if hs[i][0] == k {
				hs[i][1] = v
			}
		}
		return hs
	}

	t.Run("no grant", func(t *testing.T) {
		// ext_proc called for a request ext_authz never saw: Envoy
		// forwards an empty metadata_context.
		rq := newEnvoyRequest(t, "GET", "/v1/customers", "")
		refused(t, rq.headers, &corev3.Metadata{}, "grant_missing")
	})
	t.Run("seal removed", func(t *testing.T) {
		_, hs, md := honest(t)
		delete(grantOf(md), "seal")
		refused(t, hs, md, "grant_unsealed")
	})
	t.Run("another request id", func(t *testing.T) {
		_, hs, md := honest(t)
		other := newEnvoyRequest(t, "GET", "/v1/customers", "")
		refused(t, setHeader(hs, "x-request-id", other.requestID), md, "grant_request_mismatch")
	})
	t.Run("another path", func(t *testing.T) {
		_, hs, md := honest(t)
		refused(t, setHeader(hs, ":path", "/v1/cards"), md, "grant_forged")
	})
	t.Run("another method", func(t *testing.T) {
		_, hs, md := honest(t)
		refused(t, setHeader(hs, ":method", "DELETE"), md, "grant_forged")
	})
	t.Run("tampered seal byte", func(t *testing.T) {
		_, hs, md := honest(t)
		mac, err := base64.RawURLEncoding.DecodeString(grantOf(md)["seal"].GetStringValue())
		if err != nil {
			t.Fatal(err)
		}
		mac[len(mac)-1] ^= 0x01
		grantOf(md)["seal"] = structpb.NewStringValue(base64.RawURLEncoding.EncodeToString(mac))
		refused(t, hs, md, "grant_forged")
	})
	t.Run("tampered groups", func(t *testing.T) {
		_, hs, md := honest(t)
		grantOf(md)["groups"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
			structpb.NewStringValue("agents"), structpb.NewStringValue("dba"),
		}})
		refused(t, hs, md, "grant_forged")
	})
	t.Run("replayed on a second stream", func(t *testing.T) {
		_, hs, md := honest(t)
		ps := openProc(t, proc, md)
		if r := ps.requestHeaders(hs); r.GetRequestHeaders() == nil {
			t.Fatalf("first use of the grant: %v, want request_headers", r)
		}
		ps.quiet()
		// The same request id again: the binding holds, only the use is new.
		refused(t, hs, md, "grant_replayed")
	})
	t.Run("sealed with another key", func(t *testing.T) {
		rq, hs, md := honest(t)
		other := make([]byte, 32)
		if _, err := rand.Read(other); err != nil {
			t.Fatal(err)
		}
		// A valid-looking grant for a principal the token never named.
		g := grantOf(md)
		g["principal"] = structpb.NewStringValue("bob")
		g["seal"] = structpb.NewStringValue(grantSeal(other, md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace], rq.method, rq.path))
		refused(t, hs, md, "grant_forged")
	})
	// Time-bound seals made with custos' own key (read from the data dir,
	// which no caller of the gRPC listener has): the MAC holds, the times
	// do not. No waiting for the 60 s to pass.
	reseal := func(rq *envoyRequest, md *corev3.Metadata, sealedAt, expires time.Time) {
		g := grantOf(md)
		g["sealed_at"] = structpb.NewNumberValue(float64(sealedAt.UnixMilli()))
		g["seal_expires"] = structpb.NewNumberValue(float64(expires.UnixMilli()))
		g["seal"] = structpb.NewStringValue(grantSeal(key, md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace], rq.method, rq.path))
	}
	t.Run("expired", func(t *testing.T) {
		rq, hs, md := honest(t)
		reseal(rq, md, time.Now().Add(-2*extproc.GrantTTL), time.Now().Add(-extproc.GrantTTL))
		refused(t, hs, md, "grant_expired")
	})
	t.Run("valid longer than the TTL", func(t *testing.T) {
		rq, hs, md := honest(t)
		reseal(rq, md, time.Now(), time.Now().Add(time.Hour))
		refused(t, hs, md, "grant_expired")
	})
	t.Run("sealed in the future", func(t *testing.T) {
		rq, hs, md := honest(t)
		at := time.Now().Add(time.Minute)
		reseal(rq, md, at, at.Add(extproc.GrantTTL))
		refused(t, hs, md, "grant_expired")
	})

	t.Run("journal", func(t *testing.T) {
		if honestID == "" || len(refusals) == 0 {
			t.Skip("the requests above did not run")
		}
		p.stop(t)
		byID := map[string][]audit.Record{}
		for _, r := range journalRecords(t, dataDir) {
			if r.Name == audit.EventHTTPRequest {
				id := attrString(&r, audit.AttrSessionID)
				byID[id] = append(byID[id], r)
			}
		}
		if recs := byID[honestID]; len(recs) != 1 || attrString(&recs[0], audit.AttrUserID) != "alice" ||
			attrString(&recs[0], audit.AttrOutcome) != "success" || attrString(&recs[0], audit.AttrHTTPStatusCode) != "200" ||
			attrString(&recs[0], audit.AttrMasked) != "2" {
			t.Errorf("the honest request %s has %d records, want one of alice's success with 2 masked: %v", honestID, len(recs), recs)
		}
		for id, want := range refusals {
			// The replayed grant's request has a record of its first,
			// honest use too.
			i := slices.IndexFunc(byID[id], func(r audit.Record) bool { return attrString(&r, audit.AttrErrorType) == want })
			if i < 0 {
				t.Errorf("no %s record of request %s among %v", want, id, byID[id])
				continue
			}
			r := byID[id][i]
			if attrString(&r, audit.AttrOutcome) != "denied" || attrString(&r, audit.AttrHTTPStatusCode) != "403" {
				t.Errorf("refusal %s not recorded as denied with 403: %s", id, r.Body())
			}
			// Whatever the metadata claimed is not evidence: no
			// principal, the stream's peer instead.
			if u := attrString(&r, audit.AttrUserID); u != "" {
				t.Errorf("refusal %s names the claimed principal %q: %s", id, u, r.Body())
			}
			if e := attrString(&r, audit.AttrError); !strings.Contains(e, "ext_proc stream from 127.0.0.1:") {
				t.Errorf("refusal %s does not name the stream's peer: %q", id, e)
			}
		}
	})
}
