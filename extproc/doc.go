// Package extproc is custos' side of Envoy's HTTP path: the external
// authorization service (envoy.service.auth.v3.Authorization, for the HTTP
// and the network ext_authz filters) and the external processing service
// (envoy.service.ext_proc.v3.ExternalProcessor). [Register] puts both on
// custos' gRPC server.
//
// # One HTTP request
//
//	client -> Envoy: request headers
//	Envoy -> Check (ext_authz)
//	    Authorization: Bearer <jwt> -> authn.Verifier -> principal
//	        missing or refused -> 401, WWW-Authenticate: Bearer ... (503 while the issuer is unreachable)
//	    policy input kind "http": principal, method, path, query, headers (no
//	    credentials), resource from the route's context_extensions
//	    (envoyctx.ContextResource, ContextResourceType, ContextLabelPrefix*) or,
//	    for a request that matched no route, the request's host
//	        deny -> 403 {"reason", "reasons", "decision_id"}
//	        allow, or allow pending approval -> OK with x-custos-principal,
//	        x-custos-decision-id, and dynamic metadata (see grant.go) that Envoy
//	        stores under envoyctx.ExtAuthzNamespace
//	Envoy -> Process (ext_proc, one stream per request), metadata_context
//	carrying the ext_authz namespace
//	    request headers
//	        no decision in the metadata -> immediate 403 (fail closed)
//	        allowed -> CONTINUE
//	        needs approval -> parked (below), on these headers, or on the
//	        buffered request body when protocol_config says Envoy buffers it
//	    request body -> CONTINUE, or parked
//	    response headers -> card numbers in header values masked; a
//	    content-encoding custos cannot undo -> immediate 502
//	    response body
//	        BUFFERED: decompressed (gzip, deflate), masked (JSON by the
//	        decision's json_paths and PAN detection; anything else as text),
//	        compressed again, content-length set to the new length
//	        BUFFERED_PARTIAL cut at Envoy's limit -> immediate 502
//	        STREAMED: chunks held (each answered with an empty body) and the
//	        masked whole sent in place of the last one
//	    trailers -> empty reply
//	Envoy cancels the stream at the end: codes.Canceled is a normal end.
//
// Every message gets exactly one reply of its own kind, or an immediate
// response that ends the request.
//
// # Parking
//
// A request the decision sends for approval is recorded with the approval
// service (kind http, summary "METHOD path", pinned by approval.PinHash to
// the method, the path with its query and a SHA-256 of the body; see
// pinText). custos then asks Envoy to wait (override_message_timeout, once
// per message, never above Options.MaxMessageTimeout, the filter's
// max_message_timeout) and waits for the decision:
//
//	approved -> the approval is consumed and the request continues, with
//	            x-custos-approval-id added
//	denied, expired, withdrawn, not decided in time -> immediate 403
//	            {"reason", "decision_id", "approval_id"}
//	the client goes away (stream cancelled) -> the request is withdrawn
//
// # Connections
//
// A Check without HTTP attributes comes from the network ext_authz filter
// at the start of a TCP connection (Postgres): policy input kind
// "connection" with the peer certificate's principal as principal.sub (no
// issuer, no groups: no token has been seen yet), the client address, the
// SNI and destination in principal.claims, and the resource named by the
// gRPC metadata envoyctx.HeaderResource. Anything but a plain allow denies,
// and Envoy closes the connection.
//
// # Audit
//
// With Options.Audit, every HTTP request leaves one event: a refused token
// (custos.auth.failed) or a policy denial (custos.http.request, denied)
// from Check; from Process, the request's end: its status, what was
// masked, its approval, recorded durably before the last reply lets the
// response go (a record that cannot be written withholds the response:
// 503), or the refusal, or the stream ending early. Refused connections
// are recorded as custos.connection.opened, denied.
// With Options.AuthFailures, refused tokens go through the audit
// package's failure aggregator instead: the first refusal of a source,
// reason and token is recorded before the 401 as any other record,
// repeats are counted and recorded together each second with every
// source's count (internal/audit, "Repeated authentication failures").
// The verifier refuses a token it refused a moment ago from memory
// (internal/authn), so a replayed bad token costs neither a signature
// check nor a JWKS fetch.
//
// Every failure refuses: no token, a token or decision that cannot be
// checked, a body that cannot be inspected, an audit record that cannot be
// written.
package extproc
