package extproc_test

// An Envoy stand-in: it drives Check and Process the way Envoy's ext_authz
// and ext_proc HTTP filters do (REFERENCE.md §1-2), in front of a real HTTP
// upstream, and reports what the client would get.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/envoyctx"
)

const (
	extProcFilter = "envoy.filters.http.ext_proc"
	// defaultMessageTimeout is ext_proc's message_timeout default.
	defaultMessageTimeout = 200 * time.Millisecond
	// authzTimeout is what custos' xDS configures for ext_authz.
	authzTimeout = 2 * time.Second
	// upstreamHost is the :authority clients send.
	upstreamHost = "payments.example"
	chunkSize    = 64 << 10
)

// route is what Envoy's configuration says for the request's route.
type route struct {
	// ext are the ext_authz context_extensions; nil for a request that
	// matched no route.
	ext map[string]string
	// mode is the ext_proc processing mode (nil: custos' defaults:
	// headers sent, request body none, response body buffered).
	mode *filterv3.ProcessingMode
	// messageTimeout is ext_proc's message_timeout (0: 200 ms);
	// maxMessageTimeout its max_message_timeout (0: overrides are
	// ignored).
	messageTimeout, maxMessageTimeout time.Duration
	// noProtocolConfig leaves protocol_config out of the first message
	// (older Envoys).
	noProtocolConfig bool
	// requestHeadersToRemove are the route's (virtual host's)
	// request_headers_to_remove, applied by the router as the request
	// leaves for the upstream.
	requestHeadersToRemove []string
}

func defaultMode() *filterv3.ProcessingMode {
	return &filterv3.ProcessingMode{
		RequestHeaderMode:   filterv3.ProcessingMode_SEND,
		ResponseHeaderMode:  filterv3.ProcessingMode_SEND,
		RequestBodyMode:     filterv3.ProcessingMode_NONE,
		ResponseBodyMode:    filterv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  filterv3.ProcessingMode_SKIP,
		ResponseTrailerMode: filterv3.ProcessingMode_SKIP,
	}
}

// paymentsRoute is the route of the payments-api service.
func paymentsRoute() route {
	return route{
		ext: map[string]string{
			envoyctx.ContextResource:            "payments-api",
			envoyctx.ContextResourceType:        envoyctx.TypeHTTP,
			envoyctx.ContextLabelPrefix + "pci": "cde",
		},
		maxMessageTimeout: 15 * time.Minute,
		// What custos' xDS serves on every virtual host
		// (xds.TestSnapshotRoutes).
		requestHeadersToRemove: envoyctx.CredentialHeaders,
	}
}

// reply is what the client gets.
type reply struct {
	status int
	header http.Header
	body   []byte
	// from says who answered: "authz", "ext_proc", "envoy" (a local
	// reply: timeout, protocol error) or "upstream".
	from string
}

func (r *reply) String() string {
	return fmt.Sprintf("%d from %s: %s", r.status, r.from, r.body)
}

// envoy is the stand-in.
type envoy struct {
	t        testing.TB
	authz    authv3.AuthorizationClient
	proc     extprocv3.ExternalProcessorClient
	upstream string // base URL
	client   *http.Client
}

func newEnvoy(t testing.TB, conn *grpc.ClientConn, upstream string) *envoy {
	return &envoy{
		t:        t,
		authz:    authv3.NewAuthorizationClient(conn),
		proc:     extprocv3.NewExternalProcessorClient(conn),
		upstream: upstream,
		client: &http.Client{Transport: &http.Transport{
			DisableCompression:  true, // Envoy passes bodies as they come
			MaxIdleConnsPerHost: 16,
		}},
	}
}

// request is a client's request.
type request struct {
	method string
	path   string
	header http.Header
	body   []byte
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requestHeaders are the request's headers as Envoy's filters see them:
// pseudo-headers first, lower-case names, in order.
func (rq *request) requestHeaders(requestID string) [][2]string {
	hs := [][2]string{
		{":authority", upstreamHost},
		{":path", rq.path},
		{":method", rq.method},
		{":scheme", "http"},
	}
	for k, vs := range rq.header {
		for _, v := range vs {
			hs = append(hs, [2]string{strings.ToLower(k), v})
		}
	}
	if len(rq.body) > 0 {
		hs = append(hs, [2]string{"content-length", strconv.Itoa(len(rq.body))})
	}
	hs = append(hs, [2]string{"x-request-id", requestID}, [2]string{"x-forwarded-proto", "http"})
	return hs
}

// do sends rq through the stand-in.
func (e *envoy) do(rt route, rq request) *reply {
	e.t.Helper()
	hs, md, r := e.authorize(rt, rq, newID())
	if r != nil {
		return r
	}
	return e.process(rt, rq, hs, md)
}

// authorize runs ext_authz for rq: it returns the request headers as
// ext_proc sees them and the metadata_context Envoy forwards, or the
// client's reply when the Check refused.
func (e *envoy) authorize(rt route, rq request, requestID string) ([][2]string, *corev3.Metadata, *reply) {
	e.t.Helper()
	if rq.header == nil {
		rq.header = http.Header{}
	}
	hs := rq.requestHeaders(requestID)

	// ext_authz: values in value, repeated headers joined by commas.
	joined := map[string]string{}
	for _, h := range hs {
		if prev, ok := joined[h[0]]; ok {
			joined[h[0]] = prev + "," + h[1]
		} else {
			joined[h[0]] = h[1]
		}
	}
	path, query, _ := strings.Cut(rq.path, "?")
	_ = path
	ctx, cancel := context.WithTimeout(context.Background(), authzTimeout)
	cr, err := e.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer("10.0.0.9", 53122, ""),
		Destination: peer("10.0.0.2", 8080, ""),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       strconv.Itoa(int(time.Now().UnixNano() % 1e9)),
			Method:   rq.method,
			Headers:  joined,
			Path:     rq.path,
			Host:     upstreamHost,
			Scheme:   "http",
			Query:    query,
			Protocol: "HTTP/1.1",
			Size:     int64(len(rq.body)),
		}},
		ContextExtensions: rt.ext,
	}})
	cancel()
	if err != nil {
		// status_on_error defaults to 403.
		return nil, nil, &reply{status: http.StatusForbidden, header: http.Header{}, from: "envoy", body: []byte(err.Error())}
	}
	if codes.Code(cr.GetStatus().GetCode()) != codes.OK {
		d := cr.GetDeniedResponse()
		r := &reply{status: http.StatusForbidden, header: http.Header{}, body: []byte(d.GetBody()), from: "authz"}
		if c := d.GetStatus().GetCode(); c != 0 {
			r.status = int(c)
		}
		for _, h := range d.GetHeaders() {
			r.header.Set(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return nil, nil, r
	}
	ok := cr.GetOkResponse()
	for _, h := range ok.GetHeaders() {
		if len(h.GetHeader().GetRawValue()) > 0 {
			e.t.Errorf("ext_authz header %s set in raw_value: Envoy reads value", h.GetHeader().GetKey())
		}
		hs = setHeader(hs, h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	// After the headers to add, as Envoy does; pseudo-headers and host
	// cannot be removed, names match whatever their case.
	for _, k := range ok.GetHeadersToRemove() {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || k == "host" {
			continue
		}
		hs = removeHeader(hs, k)
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	if dm := cr.GetDynamicMetadata(); dm != nil {
		md.FilterMetadata[envoyctx.ExtAuthzNamespace] = dm
	}
	return hs, md, nil
}

// process runs the ext_proc stream of one request and forwards it.
func (e *envoy) process(rt route, rq request, hs [][2]string, md *corev3.Metadata) *reply {
	mode := rt.mode
	if mode == nil {
		mode = defaultMode()
	}
	ps := e.stream(rt)
	defer ps.close()

	first := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
		m.MetadataContext = md
		if !ps.sentAny && !rt.noProtocolConfig {
			m.ProtocolConfig = &extprocv3.ProtocolConfiguration{
				RequestBodyMode:  mode.GetRequestBodyMode(),
				ResponseBodyMode: mode.GetResponseBodyMode(),
			}
		}
		ps.sentAny = true
		return m
	}

	// Request headers.
	upstreamBody := rq.body
	if mode.GetRequestHeaderMode() != filterv3.ProcessingMode_SKIP {
		m := first(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers:     headerMap(hs),
				EndOfStream: len(rq.body) == 0,
			}},
			Attributes: map[string]*structpb.Struct{extProcFilter: attributes(map[string]any{
				"request.path": rq.path, "request.method": rq.method, "request.id": hs[len(hs)-2][1],
				"source.address": "10.0.0.9:53122",
			})},
		})
		resp, r := ps.exchange(m, "request_headers")
		if r != nil {
			return r
		}
		var ok bool
		if hs, ok = ps.applyHeaders(hs, resp.GetRequestHeaders().GetResponse().GetHeaderMutation()); !ok {
			return ps.fail("bad header mutation")
		}
	}
	if len(rq.body) > 0 && mode.GetRequestBodyMode() == filterv3.ProcessingMode_BUFFERED {
		m := first(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: rq.body, EndOfStream: true},
		}})
		resp, r := ps.exchange(m, "request_body")
		if r != nil {
			return r
		}
		cr := resp.GetRequestBody().GetResponse()
		var ok bool
		if hs, ok = ps.applyHeaders(hs, cr.GetHeaderMutation()); !ok {
			return ps.fail("bad header mutation")
		}
		if b := cr.GetBodyMutation(); b != nil {
			upstreamBody = b.GetBody()
		}
	}

	// Upstream: the router applies the route's header removals.
	for _, k := range rt.requestHeadersToRemove {
		hs = removeHeader(hs, strings.ToLower(k))
	}
	ureq, err := http.NewRequest(rq.method, e.upstream+rq.path, bytes.NewReader(upstreamBody))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range hs {
		if strings.HasPrefix(h[0], ":") || h[0] == "content-length" {
			continue
		}
		ureq.Header.Add(h[0], h[1])
	}
	ureq.Host = upstreamHost
	uresp, err := e.client.Do(ureq)
	if err != nil {
		return &reply{status: http.StatusServiceUnavailable, header: http.Header{}, from: "envoy", body: []byte(err.Error())}
	}
	body, err := io.ReadAll(uresp.Body)
	_ = uresp.Body.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	rhs := [][2]string{{":status", strconv.Itoa(uresp.StatusCode)}}
	for k, vs := range uresp.Header {
		for _, v := range vs {
			rhs = append(rhs, [2]string{strings.ToLower(k), v})
		}
	}
	if uresp.ContentLength >= 0 && uresp.Header.Get("Content-Length") == "" && rq.method != http.MethodHead {
		rhs = append(rhs, [2]string{"content-length", strconv.Itoa(len(body))})
	}
	if rq.method == http.MethodHead {
		body = nil
	}

	// Response headers.
	if mode.GetResponseHeaderMode() != filterv3.ProcessingMode_SKIP {
		m := first(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers:     headerMap(rhs),
				EndOfStream: len(body) == 0,
			}},
			Attributes: map[string]*structpb.Struct{extProcFilter: attributes(map[string]any{
				"response.code": float64(uresp.StatusCode),
			})},
		})
		resp, r := ps.exchange(m, "response_headers")
		if r != nil {
			return r
		}
		var ok bool
		if rhs, ok = ps.applyHeaders(rhs, resp.GetResponseHeaders().GetResponse().GetHeaderMutation()); !ok {
			return ps.fail("bad header mutation")
		}
	}

	// Response body.
	if len(body) > 0 {
		switch mode.GetResponseBodyMode() {
		case filterv3.ProcessingMode_BUFFERED:
			m := first(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true},
			}})
			resp, r := ps.exchange(m, "response_body")
			if r != nil {
				return r
			}
			cr := resp.GetResponseBody().GetResponse()
			var ok bool
			if rhs, ok = ps.applyHeaders(rhs, cr.GetHeaderMutation()); !ok {
				return ps.fail("bad header mutation")
			}
			if b := cr.GetBodyMutation(); b != nil {
				switch mb := b.GetMutation().(type) {
				case *extprocv3.BodyMutation_Body:
					body = mb.Body
				case *extprocv3.BodyMutation_ClearBody:
					body = nil
				}
				// A replaced body needs a content-length that matches.
				if cl := getHeader(rhs, "content-length"); cl != "" && cl != strconv.Itoa(len(body)) {
					return ps.fail(fmt.Sprintf("content-length %s does not match the %d-byte body", cl, len(body)))
				}
			}
		case filterv3.ProcessingMode_STREAMED:
			var out []byte
			for i := 0; i < len(body); i += chunkSize {
				end := min(i+chunkSize, len(body))
				m := first(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocv3.HttpBody{Body: body[i:end], EndOfStream: end == len(body)},
				}})
				resp, r := ps.exchange(m, "response_body")
				if r != nil {
					return r
				}
				chunk := body[i:end]
				if b := resp.GetResponseBody().GetResponse().GetBodyMutation(); b != nil {
					switch mb := b.GetMutation().(type) {
					case *extprocv3.BodyMutation_Body:
						chunk = mb.Body
					case *extprocv3.BodyMutation_ClearBody:
						chunk = nil
					}
				}
				out = append(out, chunk...)
			}
			body = out
			rhs = removeHeader(rhs, "content-length")
		}
	}
	ps.checkQuiet()
	r := &reply{status: uresp.StatusCode, header: http.Header{}, body: body, from: "upstream"}
	for _, h := range rhs {
		if !strings.HasPrefix(h[0], ":") {
			r.header.Add(h[0], h[1])
		}
	}
	if s, err := strconv.Atoi(getHeader(rhs, ":status")); err == nil {
		r.status = s
	}
	return r
}

// procStream is one ext_proc stream from Envoy's side.
type procStream struct {
	e       *envoy
	rt      route
	stream  extprocv3.ExternalProcessor_ProcessClient
	cancel  context.CancelFunc
	recv    chan recvd
	sentAny bool
	once    sync.Once
}

type recvd struct {
	resp *extprocv3.ProcessingResponse
	err  error
}

func (e *envoy) stream(rt route) *procStream {
	ctx, cancel := context.WithCancel(context.Background())
	ctx = metadata.AppendToOutgoingContext(ctx, envoyctx.HeaderResource, rt.ext[envoyctx.ContextResource],
		envoyctx.HeaderResourceType, envoyctx.TypeHTTP)
	st, err := e.proc.Process(ctx)
	if err != nil {
		cancel()
		e.t.Fatalf("open ext_proc stream: %v", err)
	}
	ps := &procStream{e: e, rt: rt, stream: st, cancel: cancel, recv: make(chan recvd, 16)}
	go func() {
		for {
			resp, err := st.Recv()
			ps.recv <- recvd{resp, err}
			if err != nil {
				return
			}
		}
	}()
	return ps
}

// close ends the stream as Envoy does: by cancelling it.
func (ps *procStream) close() { ps.once.Do(ps.cancel) }

// fail is Envoy's answer to a protocol error: 500, stream cancelled.
func (ps *procStream) fail(why string) *reply {
	ps.e.t.Logf("envoy stand-in: ext_proc protocol error: %s", why)
	ps.close()
	return &reply{status: http.StatusInternalServerError, header: http.Header{}, from: "envoy", body: []byte(why)}
}

// exchange sends m and waits for its reply under the message timeout,
// honouring one override_message_timeout per message. It returns the
// reply, or what the client gets instead (immediate response, timeout,
// error).
func (ps *procStream) exchange(m *extprocv3.ProcessingRequest, want string) (*extprocv3.ProcessingResponse, *reply) {
	if err := ps.stream.Send(m); err != nil {
		return nil, ps.fail("send: " + err.Error())
	}
	timeout := ps.rt.messageTimeout
	if timeout == 0 {
		timeout = defaultMessageTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	overridden := false
	for {
		select {
		case <-timer.C:
			ps.close()
			return nil, &reply{status: http.StatusGatewayTimeout, header: http.Header{}, from: "envoy", body: []byte("ext_proc message timeout waiting for " + want)}
		case got := <-ps.recv:
			if got.err != nil {
				return nil, ps.fail("stream error: " + got.err.Error())
			}
			resp := got.resp
			if d := resp.GetOverrideMessageTimeout(); d != nil {
				// Envoy takes one override per message, within
				// max_message_timeout; others are ignored.
				if ps.rt.maxMessageTimeout > 0 && !overridden && d.AsDuration() >= time.Millisecond && d.AsDuration() <= ps.rt.maxMessageTimeout {
					overridden = true
					timer.Reset(d.AsDuration())
				} else {
					ps.e.t.Logf("envoy stand-in: override_message_timeout %s ignored", d.AsDuration())
				}
				continue
			}
			if ir := resp.GetImmediateResponse(); ir != nil {
				ps.close()
				r := &reply{status: int(ir.GetStatus().GetCode()), header: http.Header{}, body: ir.GetBody(), from: "ext_proc"}
				if r.status == 0 {
					r.status = http.StatusOK
				}
				for _, h := range ir.GetHeaders().GetSetHeaders() {
					r.header.Set(h.GetHeader().GetKey(), string(h.GetHeader().GetRawValue()))
				}
				return nil, r
			}
			if got := kindOf(resp); got != want {
				return nil, ps.fail(fmt.Sprintf("reply %s to %s", got, want))
			}
			return resp, nil
		}
	}
}

// checkQuiet fails the test when custos sent more replies than asked for.
func (ps *procStream) checkQuiet() {
	select {
	case got := <-ps.recv:
		if got.err == nil {
			ps.e.t.Errorf("ext_proc sent an extra reply: %v", got.resp)
		}
	case <-time.After(5 * time.Millisecond):
	}
}

func kindOf(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	}
	return fmt.Sprintf("%T", r.GetResponse())
}

// applyHeaders applies an ext_proc header mutation as Envoy does: values
// from raw_value (a value field is an error), pseudo-headers, host and
// x-envoy-* left alone.
func (ps *procStream) applyHeaders(hs [][2]string, mut *extprocv3.HeaderMutation) ([][2]string, bool) {
	for _, o := range mut.GetSetHeaders() {
		h := o.GetHeader()
		if h.GetValue() != "" {
			ps.e.t.Errorf("header mutation %s uses value, not raw_value", h.GetKey())
			return hs, false
		}
		k := strings.ToLower(h.GetKey())
		if strings.HasPrefix(k, ":") || k == "host" || strings.HasPrefix(k, "x-envoy-") {
			continue
		}
		hs = setHeader(hs, k, string(h.GetRawValue()))
	}
	for _, k := range mut.GetRemoveHeaders() {
		if strings.HasPrefix(k, ":") || k == "host" {
			continue
		}
		hs = removeHeader(hs, strings.ToLower(k))
	}
	return hs, true
}

func headerMap(hs [][2]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	return m
}

func setHeader(hs [][2]string, k, v string) [][2]string {
	hs = removeHeader(hs, k)
	return append(hs, [2]string{k, v})
}

func removeHeader(hs [][2]string, k string) [][2]string {
	out := hs[:0:0]
	for _, h := range hs {
		if h[0] != k {
			out = append(out, h)
		}
	}
	return out
}

func getHeader(hs [][2]string, k string) string {
	for _, h := range hs {
		if h[0] == k {
			return h[1]
		}
	}
	return ""
}

func attributes(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

func peer(addr string, port uint32, principal string) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		Principal: principal,
	}
}

// checkConnection is the network ext_authz filter's Check at the start of a
// TCP connection: peers only, the resource in gRPC metadata.
func (e *envoy) checkConnection(resource, clientAddr, principal, sni string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), authzTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, envoyctx.HeaderResource, resource, envoyctx.HeaderResourceType, envoyctx.TypePostgres)
	dst := peer("10.0.0.2", 5432, "")
	dst.Service = sni
	return e.authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer(clientAddr, 40000, principal),
		Destination: dst,
		TlsSession:  &authv3.AttributeContext_TLSSession{Sni: sni},
	}})
}

// dialGRPC serves register's services on a loopback listener and returns a
// client connection.
func dialGRPC(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(extproc.ServerOptions(0)...)
	register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(128<<20), grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.GracefulStop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("grpc serve: %v", err)
		}
	})
	return conn
}

// upstream is a real HTTP service behind the stand-in; it records what it
// receives.
type upstream struct {
	*httptest.Server
	mu  sync.Mutex
	got []*http.Request
	// bodies are the request bodies, in order.
	bodies [][]byte
	// raw are the requests as they came, line, headers and body.
	raw [][]byte
}

func newUpstream(t testing.TB, h http.Handler) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		raw, _ := httputil.DumpRequest(r, true)
		u.mu.Lock()
		u.got = append(u.got, r)
		u.bodies = append(u.bodies, b)
		u.raw = append(u.raw, raw)
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// requests returns what the upstream received so far.
func (u *upstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.got...)
}

// raws returns the requests received so far as they came.
func (u *upstream) raws() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.raw...)
}

func (u *upstream) lastBody() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.bodies) == 0 {
		return nil
	}
	return u.bodies[len(u.bodies)-1]
}

// requireStatus fails unless r has status want.
func requireStatus(t testing.TB, r *reply, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; reply %s", r.status, want, r)
	}
}
