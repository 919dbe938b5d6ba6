package custos

import data.custos.config

# HTTP (kind "http"): one decision per request, from its method.
#
#   - A denial wins: CONNECT and TRACE (a tunnel past custos; an echo of the
#     request's headers, the bearer token included) and requests without an
#     http field are denied for everyone.
#   - GET and HEAD read: they run at once for agents and dba.
#   - Every other method may change something upstream: it needs approval
#     from the approver groups, whatever the role (custos never lets a
#     requester approve their own request, so a dba's write needs another
#     member).
#   - Everything that runs has its response masked: the JSON paths of the
#     cardholder-data columns, PAN detection in every value and header.
#
# Reasons name the method, never the path: paths may hold identifiers
# (card numbers included) and reasons are logged and shown to approvers.

http_decision := deny(sort(http_denials)) if count(http_denials) > 0

http_decision := {
	"allow": true,
	"reasons": [sprintf("%s requests require approval from %s", [http_method, approvers])],
	"require_approval": approval,
	"mask": http_mask,
} if {
	count(http_denials) == 0
	not http_method in http_read_methods
}

http_decision := {
	"allow": true,
	"reasons": [sprintf("%s requests are allowed for %s", [http_method, role])],
	"mask": http_mask,
} if {
	count(http_denials) == 0
	http_method in http_read_methods
}

# Methods that only read (RFC 9110 safe methods, OPTIONS aside: CORS
# preflights are answered by the services' own routes or need approval).
http_read_methods := {"GET", "HEAD"}

http_denied_methods := {"CONNECT", "TRACE"}

http_method := upper(input.http.method) if is_string(input.http.method)

http_denials contains "the request has no http field" if not has_http

has_http if is_object(input.http)

http_denials contains "the request has no method" if {
	has_http
	not http_method
}

http_denials contains "the request has no method" if http_method == ""

http_denials contains sprintf("%s requests are not allowed through custos", [http_method]) if {
	http_method in http_denied_methods
}

# The masking of every HTTP response: cardholder-data columns by name at any
# depth of a JSON body (data.custos.config.http_json_paths replaces them when
# set), and PAN detection everywhere.
http_mask := {
	"columns": {},
	"json_paths": http_json_paths,
	"detect_pan": true,
	"reveal": config.reveal,
}

default http_json_paths := {}

http_json_paths := config.http_json_paths if configured_json_paths

http_json_paths := {sprintf("$..%s", [column]): strictest(strategies) |
	some column in cardholder_columns
	strategies := {s | some columns in cardholder_tables; s := columns[column]}
} if not configured_json_paths

configured_json_paths if is_object(config.http_json_paths)

cardholder_columns contains column if {
	some columns in cardholder_tables
	some column, _ in columns
}

# strictest picks the strategy showing least from a set of strategies (the
# order of internal/mask: drop, null, redact, hmac, last4, bin_last4).
strategy_rank := {"drop": 0, "null": 1, "redact": 2, "hmac": 3, "last4": 4, "bin_last4": 5}

strictest(strategies) := s if {
	ranks := {strategy_rank[x] | some x in strategies}
	some s in strategies
	strategy_rank[s] == min(ranks)
}
