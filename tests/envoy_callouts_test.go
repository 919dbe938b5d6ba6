package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
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
		h := map[string]string{":method": method, ":path": "/v1/customers", ":authority": "api.example.com", ":scheme": "https"}
		for k, v := range headers {
			h[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1", 40000)},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "req-1", Method: method, Path: "/v1/customers", Host: "api.example.com", Scheme: "https", Headers: h,
			}},
		}})
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

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
