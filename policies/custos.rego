# METADATA
# title: custos default policy
# description: |
#   The default PCI policy of custos. custos evaluates data.custos.decision for
#   every connection, SQL statement batch and HTTP request; policies/README.md
#   documents the input and the decision. Anything no rule allows is denied.
package custos

import data.custos.config

# The input versions this policy understands.
supported_versions := {1}

version := object.get(input, "version", null)

# role is the principal's role: "agent" or "dba", from the groups listed in
# data.custos.config.roles. A principal in both is an agent (the stricter role);
# a principal in neither has no role and is denied everything.
role := "agent" if in_role("agent")

role := "dba" if {
	not in_role("agent")
	in_role("dba")
}

in_role(name) if {
	some group in input.principal.groups
	group in config.roles[name]
}

known_groups := sort({group | some groups in config.roles; some group in groups})

# approvers names the approver groups in reasons: "dba", or "dba or security".
approvers := concat(" or ", config.approval.approver_groups)

approval := {
	"approver_groups": config.approval.approver_groups,
	"quorum": config.approval.quorum,
	"ttl": config.approval.ttl,
}

deny(reasons) := {"allow": false, "reasons": reasons}

# decision is what custos asks for. Exactly one of the rules below applies to
# an input; the default covers anything else (and an input without a kind).
default decision := {"allow": false, "reasons": ["denied by default: no policy rule applies"]}

decision := deny([sprintf("policy input version %v is not supported (want %v)", [version, sort(supported_versions)])]) if {
	not version in supported_versions
}

decision := deny([sprintf("principal %q is in none of the groups %s", [object.get(input, ["principal", "sub"], ""), concat(", ", known_groups)])]) if {
	version in supported_versions
	not role
	not network_connection
}

# A network connection (kind "connection" without a token issuer) is Envoy's
# check of a new TCP connection to a Postgres listener, before any token:
# pgfilter authenticates the session that follows and every statement is
# decided on its own. It is admitted from the client networks listed in
# data.custos.config.network.client_cidrs (every address by default).
network_connection if {
	input.kind == "connection"
	object.get(input, ["principal", "iss"], "") == ""
	count(object.get(input, ["principal", "groups"], [])) == 0
}

decision := network_decision if {
	version in supported_versions
	network_connection
}

network_decision := {"allow": true, "reasons": [sprintf("network connection from %s admitted; the session authenticates with a token", [client_address])]} if {
	client_address := object.get(input, ["session", "client_address"], "")
	ip_address(client_address)
	some cidr in config.network.client_cidrs
	net.cidr_contains(cidr, client_address)
}

ip_address(addr) if net.cidr_is_valid(concat("/", [addr, "32"]))

ip_address(addr) if net.cidr_is_valid(concat("/", [addr, "128"]))

default network_decision := {"allow": false, "reasons": ["network connection refused: the client address is outside data.custos.config.network.client_cidrs"]}

decision := connection_decision if {
	version in supported_versions
	role
	input.kind == "connection"
}

decision := sql_decision if {
	version in supported_versions
	role
	input.kind == "sql"
}

decision := http_decision if {
	version in supported_versions
	role
	input.kind == "http"
}

decision := deny([sprintf("request kind %q is not handled by this policy", [kind])]) if {
	version in supported_versions
	role
	kind := object.get(input, "kind", "")
	not kind in {"connection", "sql", "http"}
}

# A connection (kind "connection") is opened by any principal with a role; each
# statement sent over it is decided on its own.
connection_decision := {"allow": true, "reasons": [sprintf("%s may connect", [role])]}
