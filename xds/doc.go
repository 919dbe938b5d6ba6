// Package xds is custos' control plane for Envoy: it turns custos' config
// into Envoy listeners, routes, clusters and endpoints and serves them over
// ADS (and the per-type discovery services) with go-control-plane.
//
// [Snapshot] is a pure function of the config. Every resource is checked
// with its proto validation, typed configs included ([Validate]), and the
// snapshot with Consistent() before it is served; each resource type's
// version is a hash of its content, so a config that changes nothing
// pushes nothing, and a change pushes only the types it touches.
//
// What a config becomes (names are Envoy resource names):
//
//	resources[i] (postgres)  listener postgres-NAME on xds.listen_host:xds.postgres_ports[NAME]
//	                           network ext_authz (gRPC, cluster custos-grpc, x-custos-resource: NAME)
//	                           -> postgres_proxy (contrib; stat_prefix NAME)
//	                           -> tcp_proxy (stat_prefix NAME) to cluster custos-pgfilter
//	http_services             listener http on xds.listen_host:xds.http_port (TLS with xds.http_tls)
//	                           HTTP connection manager, routes from RDS "http":
//	                           ext_authz -> ext_proc -> router; x-custos-principal and
//	                           x-custos-decision-id from clients removed before any filter
//	http_services[i]          virtual host NAME (its domains), a route per path prefix
//	                           (matched on segment boundaries) with ext_authz
//	                           context_extensions (resource, labels) and an ext_proc override
//	                           (processing mode, x-custos-resource), to cluster service-NAME
//	                           (TLS per the service's tls)
//	custos itself             clusters custos-grpc (HTTP/2, keepalive; mutual TLS with
//	                           xds.grpc_tls: Envoy's client certificate, custos' CA and
//	                           name, ALPN h2) and custos-pgfilter
//
// A cluster whose address is an IP literal gets its endpoints over EDS
// (ClusterLoadAssignment of the same name); one with a host name is a
// STRICT_DNS cluster that Envoy resolves itself, since EDS endpoints must
// be IP addresses. Listeners, routes and service clusters carry the
// resource (name, type, labels) in their metadata under "custos".
//
// [Server] serves the snapshot to every node id in xds.node_ids, and only
// to them: a request of any other node (ADS, per-type and delta streams,
// unary fetches) ends with PERMISSION_DENIED, logged with the node id and
// the peer's address, counted and emitted as [EventNodeRefused]. It keeps
// the last good snapshot: [Server.Update] (and [Server.ReloadFile]) refuse an
// invalid config with an error wrapping [ErrInvalid], log it, count it and
// emit an [Event], and Envoy keeps what it has. Envoy's answers are
// followed per stream: an ACK is logged; a NACK is logged, counted and
// emitted, and the refused version is not sent again (the server waits for
// the next config). [ServerOptions] are the keepalive and stream limits of
// the gRPC server xDS shares with custos' other Envoy services.
//
// [WriteYAML] prints a snapshot for people (custos xds dump, and the
// golden files under testdata/).
//
// The keys custos' callouts read are in internal/envoyctx.
package xds
