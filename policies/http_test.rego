package custos_test

import data.custos

http_input(principal, method) := object.union(base_input(principal, "http"), {
	"resource": {"name": "payments-api", "type": "http", "labels": {"pci": "cde"}},
	"http": {"method": method, "path": "/v1/cards/42", "headers": {"accept": "application/json"}, "query": {}},
})

default_http_mask := {
	"columns": {},
	"json_paths": {"$..pan": "last4", "$..cvv": "drop", "$..track_data": "drop"},
	"detect_pan": true,
	"reveal": "last4",
}

test_http_reads[note] if {
	some note, tc in {
		"agent GET": {"principal": agent, "method": "GET", "role": "agent"},
		"agent HEAD": {"principal": agent, "method": "HEAD", "role": "agent"},
		"agent get in lower case": {"principal": agent, "method": "get", "role": "agent"},
		"dba GET": {"principal": dba, "method": "GET", "role": "dba"},
	}
	method := upper(tc.method)
	custos.decision == {
		"allow": true,
		"reasons": [sprintf("%s requests are allowed for %s", [method, tc.role])],
		"mask": default_http_mask,
	} with input as http_input(tc.principal, tc.method)
}

test_http_writes_need_approval[note] if {
	some note, tc in {
		"agent POST": {"principal": agent, "method": "POST"},
		"agent PUT": {"principal": agent, "method": "PUT"},
		"agent PATCH": {"principal": agent, "method": "PATCH"},
		"agent DELETE": {"principal": agent, "method": "DELETE"},
		"agent OPTIONS": {"principal": agent, "method": "OPTIONS"},
		"agent unknown method": {"principal": agent, "method": "PURGE"},
		"dba POST": {"principal": dba, "method": "POST"},
		"dba DELETE": {"principal": dba, "method": "DELETE"},
	}
	custos.decision == {
		"allow": true,
		"reasons": [sprintf("%s requests require approval from dba", [tc.method])],
		"require_approval": {"approver_groups": ["dba"], "quorum": 1, "ttl": "15m"},
		"mask": default_http_mask,
	} with input as http_input(tc.principal, tc.method)
}

test_http_denied[note] if {
	some note, tc in {
		"agent CONNECT": {
			"input": http_input(agent, "CONNECT"),
			"reasons": ["CONNECT requests are not allowed through custos"],
		},
		"dba TRACE": {
			"input": http_input(dba, "TRACE"),
			"reasons": ["TRACE requests are not allowed through custos"],
		},
		"no http field": {
			"input": base_input(agent, "http"),
			"reasons": ["the request has no http field"],
		},
		"http field not an object": {
			"input": object.union(base_input(agent, "http"), {"http": "GET /"}),
			"reasons": ["the request has no http field"],
		},
		"no method": {
			"input": object.union(base_input(agent, "http"), {"http": {"path": "/"}}),
			"reasons": ["the request has no method"],
		},
		"empty method": {
			"input": http_input(agent, ""),
			"reasons": ["the request has no method"],
		},
		"method not a string": {
			"input": http_input(agent, 7),
			"reasons": ["the request has no method"],
		},
		"unknown principal": {
			"input": http_input(stranger, "GET"),
			"reasons": ["principal \"mallory\" is in none of the groups agents, dba"],
		},
		"agent and dba at once is an agent": {
			"input": http_input(object.union(dba, {"groups": ["dba", "agents"]}), "CONNECT"),
			"reasons": ["CONNECT requests are not allowed through custos"],
		},
	}
	custos.decision == {"allow": false, "reasons": tc.reasons} with input as tc.input
}

test_http_approval_follows_config if {
	d := custos.decision with input as http_input(agent, "POST")
		with data.custos.config.approval as {"approver_groups": ["dba", "security"], "quorum": 2, "ttl": "1h"}
	d.require_approval == {"approver_groups": ["dba", "security"], "quorum": 2, "ttl": "1h"}
	d.reasons == ["POST requests require approval from dba or security"]
}

test_http_json_paths_from_config if {
	paths := {"$.card.number": "last4", "$..cvc": "drop"}
	d := custos.decision with input as http_input(agent, "GET")
		with data.custos.config.http_json_paths as paths
	d.mask.json_paths == paths
}

test_http_json_paths_take_the_strictest_strategy if {
	d := custos.decision with input as http_input(agent, "GET")
		with data.custos.config.cardholder_tables as {
			"public.cards": {"pan": "last4", "cvv": "drop"},
			"public.legacy_cards": {"pan": "redact", "holder": "bin_last4"},
		}
	d.mask.json_paths == {"$..pan": "redact", "$..cvv": "drop", "$..holder": "bin_last4"}
}

test_http_json_paths_without_cardholder_tables if {
	d := custos.decision with input as http_input(agent, "GET")
		with data.custos.config.cardholder_tables as {}
	d.mask.json_paths == {}
}

test_http_reveal_follows_config if {
	d := custos.decision with input as http_input(agent, "GET")
		with data.custos.config.reveal as "bin_last4"
	d.mask.reveal == "bin_last4"
}
