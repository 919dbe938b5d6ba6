// Package pgfilter is custos' PostgreSQL wire proxy: it accepts real
// Postgres clients, authenticates each connection with an OIDC token, logs in
// upstream with the gateway-held credential and relays every message between
// the two, with a hook point on both directions for policy, approvals,
// masking and audit.
//
// # Message flow
//
// Startup (one goroutine per connection, bounded by a deadline):
//
//	client                         custos                          upstream
//	  | SSLRequest ---------------> |  'S' + TLS handshake            |
//	  |   (bytes sent before the handshake are refused)               |
//	  | GSSENCRequest ------------> |  'N'                            |
//	  | 0x16 (direct TLS, ALPN "postgresql") -> TLS handshake         |
//	  | CancelRequest ------------> |  mapped key -> CancelRequest -> |
//	  | StartupMessage -----------> |  allow-listed parameters only;  |
//	  |                             |  3.2 / _pq_ -> NegotiateProtocolVersion
//	  | <- AuthenticationCleartextPassword (or SASL OAUTHBEARER)      |
//	  | PasswordMessage (the JWT) ->|  authn.Verify, user == claim    |
//	  |                             |  pgconn.Connect (SCRAM, TLS) -> |
//	  |                             |  <- ParameterStatus, BackendKeyData, ReadyForQuery
//	  | <- AuthenticationOk, ParameterStatus..., BackendKeyData (custos-issued key), ReadyForQuery
//
// Relay (after pgconn.Hijack): two goroutines, one per direction, each
// reading whole frames (type byte + length) from its side and writing them
// to the other. Frames are not decoded unless a hook asked for that message
// type; a large frame nobody inspects is streamed through without being
// held in memory. Writes are batched and flushed when the reading side has
// nothing more buffered, so pipelined messages and result sets leave in few
// syscalls. Client-bound writes are serialised by a mutex because hooks,
// session timers and shutdown also speak to the client (NoticeResponse,
// ErrorResponse).
//
// A session ends when either side closes, on Terminate, when its token
// expires (plus a grace), after the idle timeout, or on shutdown; custos
// tells the client why with a FATAL ErrorResponse.
package pgfilter
