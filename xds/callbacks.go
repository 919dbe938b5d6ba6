package xds

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callbacks follow every xDS stream: which node it is, what it was sent,
// and what it acknowledged or refused.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, typeURL string) error {
			s.streamsMu.Lock()
			s.streams[id] = &streamState{peer: peerAddress(ctx), sent: map[string]sentResponse{}}
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
		StreamRequestFunc:      s.onRequest,
		StreamResponseFunc:     s.onResponse,
		StreamDeltaRequestFunc: s.onDeltaRequest,
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, typeURL string) error {
			s.streamsMu.Lock()
			s.deltaStreams[id] = &streamState{peer: peerAddress(ctx)}
			s.streamsMu.Unlock()
			s.log.Debug("xds delta stream opened", slog.Int64("stream_id", id), slog.String("type_url", typeURL))
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.streamsMu.Lock()
			delete(s.deltaStreams, id)
			s.streamsMu.Unlock()
		},
		FetchRequestFunc: func(ctx context.Context, req *discoverygrpc.DiscoveryRequest) error {
			return s.admit(req.GetNode().GetId(), peerAddress(ctx), req.GetTypeUrl())
		},
	}
}

// onRequest sees every request of a state-of-the-world stream before the
// cache does. A node not in xds.node_ids is refused (the stream ends with
// PERMISSION_DENIED). An ACK is logged; a NACK is logged, counted and
// emitted, and the request is marked as holding the refused version, so
// the server waits for a new config instead of sending the refused one
// again (Envoy would refuse it again, forever).
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
	node, peer := st.node, st.peer
	sent, hasSent := st.sent[req.GetTypeUrl()]
	s.streamsMu.Unlock()

	if err := s.admit(node, peer, req.GetTypeUrl()); err != nil {
		return err
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

// onDeltaRequest refuses a node not in xds.node_ids on an incremental
// stream (the node may come on the first request only) and records
// NACKs.
func (s *Server) onDeltaRequest(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
	s.streamsMu.Lock()
	st := s.deltaStreams[id]
	if st == nil {
		st = &streamState{}
		s.deltaStreams[id] = st
	}
	if n := req.GetNode().GetId(); n != "" {
		st.node = n
	}
	node, peer := st.node, st.peer
	s.streamsMu.Unlock()
	if err := s.admit(node, peer, req.GetTypeUrl()); err != nil {
		return err
	}
	if req.GetErrorDetail() != nil {
		s.nack(node, req.GetTypeUrl(), "", req.GetErrorDetail().GetMessage())
	}
	return nil
}

// admit refuses an xDS request from a node not in xds.node_ids: logged
// with the node id and the peer's address, counted and emitted, and
// answered PERMISSION_DENIED.
func (s *Server) admit(node, peer, typeURL string) error {
	if served := s.servedNodes.Load(); served != nil && node != "" && slices.Contains(*served, node) {
		return nil
	}
	s.metrics.refused.Inc()
	s.log.Warn("xds request refused: node id not served",
		slog.String("node_id", node), slog.String("peer_address", peer),
		slog.String("type_url", typeURL), slog.Any("error", errNoNode))
	s.emit(Event{Kind: EventNodeRefused, NodeIDs: []string{node}, TypeURL: typeURL, Peer: peer, Reason: errNoNode.Error()})
	return status.Errorf(codes.PermissionDenied, "xds: node id %q is not served by this control plane", node)
}

// peerAddress is the address of the client of a stream or call.
func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
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
