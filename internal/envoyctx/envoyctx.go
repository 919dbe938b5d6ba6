// Package envoyctx names what custos writes into the Envoy configuration it
// serves (package xds) so that its Envoy callouts (ext_authz and ext_proc)
// can tell which protected resource a call is for. Both sides import these
// names; neither imports the other.
//
// Per protected resource, Envoy is configured to send:
//   - HTTP ext_authz Check: the route's context_extensions hold
//     [ContextResource], [ContextResourceType] and one
//     [ContextLabelPrefix]+name key per label. A request that matched no
//     route carries none of them. The route's metadata (see below) comes
//     along in the Check's route_metadata_context.
//   - network ext_authz Check (Postgres listeners): gRPC request metadata
//     [HeaderResource] and [HeaderResourceType] (a network Check has no
//     context_extensions).
//   - ext_proc streams: gRPC request metadata [HeaderResource] and
//     [HeaderResourceType] from the route's override, and the ext_authz
//     dynamic metadata forwarded under [ExtAuthzNamespace].
//
// Listeners, routes and HTTP service clusters also carry the resource in
// their metadata under [MetadataNamespace] (keys resource, type, labels),
// for access logs and config dumps.
package envoyctx

const (
	// ContextResource is the context_extensions key of the resource name.
	ContextResource = "custos.resource"
	// ContextResourceType is the context_extensions key of the resource
	// type: postgres or http.
	ContextResourceType = "custos.resource_type"
	// ContextLabelPrefix starts one context_extensions key per resource
	// label: custos.label.pci = cde.
	ContextLabelPrefix = "custos.label."

	// HeaderResource is the gRPC request metadata key of the resource name.
	HeaderResource = "x-custos-resource"
	// HeaderResourceType is the gRPC request metadata key of the resource type.
	HeaderResourceType = "x-custos-resource-type"

	// MetadataNamespace is the filter metadata namespace of listeners and
	// routes that names their resource.
	MetadataNamespace = "custos"
	// ExtAuthzNamespace is where Envoy puts the dynamic metadata of an
	// ext_authz OK response; it is forwarded to ext_proc.
	ExtAuthzNamespace = "envoy.filters.http.ext_authz"

	// HeaderPrincipal and HeaderDecisionID are added to allowed requests
	// by ext_authz. Envoy removes any copy a client sent before its filters
	// run, so upstreams can trust them.
	HeaderPrincipal  = "x-custos-principal"
	HeaderDecisionID = "x-custos-decision-id"
)

// Resource types.
const (
	TypePostgres = "postgres"
	TypeHTTP     = "http"
)

// CredentialHeaders are the request headers that may carry a client's
// credential (custos reads the bearer token from Authorization). No
// upstream gets them: ext_authz's OK response removes them
// (headers_to_remove) and every route custos serves strips them again
// (request_headers_to_remove), so a token custos accepts cannot be
// replayed by whoever runs an upstream.
var CredentialHeaders = []string{"authorization", "proxy-authorization"}
