package custos_test

import data.custos

test_http_denied_until_rules_exist[note] if {
	some note, tc in {
		"agent GET": {
			"input": object.union(base_input(agent, "http"), {"http": {"method": "GET", "path": "/v1/cards", "headers": {}, "query": {}}}),
			"want": {"allow": false, "reasons": ["no HTTP rule allows GET /v1/cards yet"]},
		},
		"dba POST": {
			"input": object.union(base_input(dba, "http"), {"http": {"method": "POST", "path": "/v1/refunds"}}),
			"want": {"allow": false, "reasons": ["no HTTP rule allows POST /v1/refunds yet"]},
		},
		"no http field": {
			"input": base_input(agent, "http"),
			"want": {"allow": false, "reasons": ["no HTTP rule allows   yet"]},
		},
		"unknown principal": {
			"input": base_input(stranger, "http"),
			"want": {"allow": false, "reasons": ["principal \"mallory\" is in none of the groups agents, dba"]},
		},
	}
	custos.decision == tc.want with input as tc.input
}
