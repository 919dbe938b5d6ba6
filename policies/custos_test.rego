package custos_test

import data.custos

# Inputs shared by the tests of this package.

agent := {"sub": "agent-7", "iss": "https://issuer.example", "groups": ["agents"], "claims": {}}

dba := {"sub": "alice", "iss": "https://issuer.example", "groups": ["dba"], "claims": {}}

stranger := {"sub": "mallory", "iss": "https://issuer.example", "groups": ["sales"], "claims": {}}

base_input(principal, kind) := {
	"version": 1,
	"kind": kind,
	"principal": principal,
	"session": {"id": "s1", "client_address": "10.0.0.9", "application_name": "psql", "database": "payments"},
	"resource": {"name": "payments-db", "type": "postgres", "labels": {"pci": "cde"}},
}

sql_input(principal, statements) := object.union(base_input(principal, "sql"), {"sql": {
	"normalized": "",
	"fingerprint": "",
	"statements": statements,
}})

# stmt is a read-only statement of sqlclass with the given fields replaced.
stmt(fields) := object.union(
	{
		"command": "SELECT", "ddl": false, "read_only": true, "reads": [], "writes": [],
		"functions": [], "flags": [], "columns": [], "settings": [],
	},
	fields,
)

# outcome is "allow", "approve" or "deny".
outcome(d) := "deny" if not d.allow

outcome(d) := "approve" if {
	d.allow
	d.require_approval
}

outcome(d) := "allow" if {
	d.allow
	not d.require_approval
}

test_decision_by_principal_and_kind[note] if {
	some note, tc in {
		"agent connects": {
			"input": base_input(agent, "connection"),
			"want": {"allow": true, "reasons": ["agent may connect"]},
		},
		"dba connects": {
			"input": base_input(dba, "connection"),
			"want": {"allow": true, "reasons": ["dba may connect"]},
		},
		"unknown group": {
			"input": base_input(stranger, "connection"),
			"want": {"allow": false, "reasons": ["principal \"mallory\" is in none of the groups agents, dba"]},
		},
		"no groups": {
			"input": base_input(object.remove(stranger, ["groups"]), "sql"),
			"want": {"allow": false, "reasons": ["principal \"mallory\" is in none of the groups agents, dba"]},
		},
		"no principal": {
			"input": object.remove(base_input(agent, "sql"), ["principal"]),
			"want": {"allow": false, "reasons": ["principal \"\" is in none of the groups agents, dba"]},
		},
		"unknown kind": {
			"input": base_input(agent, "grpc"),
			"want": {"allow": false, "reasons": ["request kind \"grpc\" is not handled by this policy"]},
		},
		"no kind": {
			"input": object.remove(base_input(agent, "sql"), ["kind"]),
			"want": {"allow": false, "reasons": ["request kind \"\" is not handled by this policy"]},
		},
		"newer input version": {
			"input": object.union(base_input(agent, "connection"), {"version": 2}),
			"want": {"allow": false, "reasons": ["policy input version 2 is not supported (want [1])"]},
		},
		"no input version": {
			"input": object.remove(base_input(agent, "connection"), ["version"]),
			"want": {"allow": false, "reasons": ["policy input version null is not supported (want [1])"]},
		},
	}
	custos.decision == tc.want with input as tc.input
}

test_agent_role_wins_over_dba if {
	both := object.union(dba, {"groups": ["dba", "agents"]})
	custos.role == "agent" with input as base_input(both, "connection")
	d := custos.decision with input as sql_input(both, [stmt({"command": "CREATE TABLE", "ddl": true, "read_only": false})])
	d.reasons == ["DDL (CREATE TABLE) is not allowed for agents"]
}

test_roles_follow_data if {
	d := custos.decision with input as base_input(stranger, "connection")
		with data.custos.config.roles as {"agent": ["sales"], "dba": []}
	d.allow
}

test_approvers_named_from_data if {
	d := custos.decision with input as sql_input(agent, [stmt({"command": "INSERT", "read_only": false, "writes": ["public.orders"]})])
		with data.custos.config.approval as {"approver_groups": ["dba", "security"], "quorum": 2, "ttl": "5m"}
	d.require_approval == {"approver_groups": ["dba", "security"], "quorum": 2, "ttl": "5m"}
	d.reasons == ["writes to public.orders require approval from dba or security"]
}

network_input(addr) := {
	"version": 1,
	"kind": "connection",
	"principal": {"sub": "", "iss": "", "groups": [], "claims": {"destination_address": "10.0.0.5:5432"}},
	"session": {"client_address": addr},
	"resource": {"name": "payments-db", "type": "postgres", "labels": {}},
}

test_network_connection_admitted_by_default if {
	d := custos.decision with input as network_input("192.0.2.7")
	d.allow
	d.reasons == ["network connection from 192.0.2.7 admitted; the session authenticates with a token"]
	v6 := custos.decision with input as network_input("2001:db8::1")
	v6.allow
}

test_network_connection_outside_client_cidrs if {
	d := custos.decision with input as network_input("192.0.2.7")
		with data.custos.config.network.client_cidrs as ["10.0.0.0/8"]
	not d.allow
	d.reasons == ["network connection refused: the client address is outside data.custos.config.network.client_cidrs"]
	inside := custos.decision with input as network_input("10.1.2.3")
		with data.custos.config.network.client_cidrs as ["10.0.0.0/8"]
	inside.allow
}

test_network_connection_with_mtls_principal if {
	d := custos.decision with input as object.union(network_input("192.0.2.7"), {"principal": {"sub": "spiffe://example.org/agent", "iss": "", "groups": []}})
	d.allow
}

test_network_connection_without_address_refused if {
	d := custos.decision with input as object.remove(network_input(""), ["session"])
	not d.allow
}
