package xds

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// callbacks follow every xDS stream: which node it is, what it was sent,
// and what it acknowledged or refused.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			s.streamsMu.Lock()
			s.streams[id] = &streamState{sent: map[string]sentResponse{}}
			s.streamsMu.Unlock()
			s.metrics.streams.Inc()
			s.log.Debug("xds stream opened", slog.Int64("stream_id", id), slog.String("type_url", typeURL))
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.streamsMu.Lock()
			delete(s.streams, id)
			s.streamsMu.Unlock()
			s.metrics.streams.Dec()
			s.log.Debug("xds stream closed", slog.Int64("stream_id", id), slog.String("node_id", node.GetId()))
		},
		StreamRequestFunc:  s.onRequest,
		StreamResponseFunc: s.onResponse,
		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				s.nack(req.GetNode().GetId(), req.GetTypeUrl(), "", req.GetErrorDetail().GetMessage())
			}
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			s.log.Debug("xds delta stream opened", slog.Int64("stream_id", id), slog.String("type_url", typeURL))
			return nil
		},
	}
}

// onRequest sees every request of a state-of-the-world stream before the
// cache does. An ACK is logged; a NACK is logged, counted and emitted, and
// the request is marked as holding the refused version, so the server
// waits for a new config instead of sending the refused one again (Envoy
// would refuse it again, forever).
func (s *Server) onRequest(id int64, req *discoverygrpc.DiscoveryRequest) error {
	s.streamsMu.Lock()
	st := s.streams[id]
	if st == nil {
		st = &streamState{sent: map[string]sentResponse{}}
		s.streams[id] = st
	}
	if n := req.GetNode().GetId(); n != "" {
		st.node = n
	}
	node := st.node
	sent, hasSent := st.sent[req.GetTypeUrl()]
	warn := !st.warned
	st.warned = true
	s.streamsMu.Unlock()

	if served := s.servedNodes.Load(); warn && (served == nil || !slices.Contains(*served, node)) {
		s.log.Warn("envoy node not served", slog.String("node_id", node), slog.Any("error", errNoNode))
	}
	if req.GetResponseNonce() == "" || !hasSent || req.GetResponseNonce() != sent.nonce {
		return nil // a first request, or one about an older response
	}
	if req.GetErrorDetail() != nil {
		s.nack(node, req.GetTypeUrl(), sent.version, req.GetErrorDetail().GetMessage())
		req.VersionInfo = sent.version
		return nil
	}
	s.metrics.acks.WithLabelValues(shortType(req.GetTypeUrl())).Inc()
	s.log.Info("envoy applied xds config", slog.String("node_id", node),
		slog.String("type_url", req.GetTypeUrl()), slog.String("version", req.GetVersionInfo()))
	return nil
}

func (s *Server) onResponse(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
	s.streamsMu.Lock()
	if st := s.streams[id]; st != nil {
		st.sent[resp.GetTypeUrl()] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	}
	s.streamsMu.Unlock()
	s.log.Debug("xds response sent", slog.Int64("stream_id", id), slog.String("type_url", resp.GetTypeUrl()),
		slog.String("version", resp.GetVersionInfo()), slog.Int("resources", len(resp.GetResources())))
}

// nack records an Envoy refusing a version.
func (s *Server) nack(node, typeURL, version, reason string) {
	s.metrics.nacks.WithLabelValues(shortType(typeURL)).Inc()
	s.log.Error("envoy refused xds config, it keeps its previous one",
		slog.String("node_id", node), slog.String("type_url", typeURL),
		slog.String("version", version), slog.String("reason", reason))
	s.emit(Event{Kind: EventEnvoyRejected, NodeIDs: []string{node}, TypeURL: typeURL, Version: version, Reason: reason})
}

// libLogger sends go-control-plane's own log lines to slog; its
// informational chatter is debug output here.
type libLogger struct{ log *slog.Logger }

func (l libLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, "xds library", slog.String("detail", fmt.Sprintf(format, args...)))
	}
}

func (l libLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l libLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l libLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l libLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }
