package custos_test

import data.custos

# Statements as internal/sqlclass reports them.

select_orders := stmt({"reads": ["public.orders"], "columns": [{"table": "public.orders", "column": "id", "usage": ["output"]}]})

select_pan := stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "pan", "usage": ["output"]}]})

pan_in(usages) := stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "pan", "usage": usages}]})

write(command, table) := stmt({"command": command, "read_only": false, "writes": [table]})

insert_orders := write("INSERT", "public.orders")

ddl(command) := stmt({"command": command, "ddl": true, "read_only": false})

flagged(command, flags) := stmt({"command": command, "read_only": false, "flags": flags})

set(names) := stmt({"command": "SET", "read_only": false, "settings": names})

function_call(names) := stmt({"command": "FUNCTION CALL", "read_only": false, "functions": names, "flags": ["side_effect_function"]})

explain(inner, flags) := stmt({"command": "EXPLAIN", "flags": flags, "explains": inner})

execute(inner) := stmt({"command": "EXECUTE", "read_only": false, "prepared": inner})

all_cards_columns := {"pan": "last4", "cvv": "drop", "track_data": "drop"}

test_agent_sql[note] if {
	some note, tc in {
		# Reads.
		"read of a plain table": {
			"statements": [select_orders],
			"want": "allow", "reasons": ["read-only statements are allowed for agent"],
		},
		"read of a cardholder-data column": {"statements": [select_pan], "want": "allow"},
		"read of every column": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "*", "usage": ["output"]}]})],
			"want": "allow",
		},
		"empty batch": {"statements": [], "want": "allow"},
		"null batch": {"statements": null, "want": "allow"},
		"empty statement": {"statements": [stmt({"command": "", "read_only": false})], "want": "allow"},
		"session commands": {
			"statements": [
				stmt({"command": "BEGIN", "read_only": false}),
				stmt({"command": "SHOW", "settings": ["search_path"]}),
				stmt({"command": "LISTEN", "read_only": false}),
				stmt({"command": "UNLISTEN", "read_only": false}),
				stmt({"command": "DECLARE", "reads": ["public.orders"]}),
				stmt({"command": "FETCH"}),
				stmt({"command": "CLOSE"}),
				stmt({"command": "DEALLOCATE", "read_only": false}),
				stmt({"command": "COMMIT", "read_only": false}),
			],
			"want": "allow",
		},
		"harmless settings": {
			"statements": [set(["statement_timeout", "TimeZone", "enable_seqscan", "application_name"])],
			"want": "allow",
		},
		"reset all": {"statements": [stmt({"command": "RESET", "read_only": false, "settings": ["all"]})], "want": "allow"},
		"explain of a read": {"statements": [explain(select_orders, [])], "want": "allow"},
		"explain analyze of a read": {"statements": [explain(select_orders, ["explain_analyze"])], "want": "allow"},
		"explain of a write runs nothing": {"statements": [explain(insert_orders, [])], "want": "allow"},
		"explain carrying the write it explains": {
			"statements": [object.union(write("EXPLAIN", "public.orders"), {"explains": insert_orders})],
			"want": "allow",
		},
		"prepare of a write runs nothing": {
			"statements": [stmt({"command": "PREPARE", "read_only": false, "prepared": insert_orders})],
			"want": "allow",
		},
		"execute of a prepared read": {
			"statements": [object.union(execute(select_orders), {"flags": ["opaque"]})],
			"want": "allow",
		},
		"copy to the client": {
			"statements": [stmt({"command": "COPY", "reads": ["public.orders"], "flags": ["copy_to"]})],
			"want": "allow",
		},
		# Writes and other effects.
		"insert": {
			"statements": [insert_orders],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		"update of a non-cardholder column of a cardholder table": {
			"statements": [object.union(write("UPDATE", "public.cards"), {"columns": [{"table": "public.cards", "column": "holder", "usage": ["write"]}]})],
			"want": "approve", "reasons": ["writes to public.cards require approval from dba"],
		},
		"delete, merge and truncate": {
			"statements": [write("DELETE", "public.a"), write("MERGE", "public.b"), write("TRUNCATE", "public.c")],
			"want": "approve",
			"reasons": [
				"writes to public.a require approval from dba",
				"writes to public.b require approval from dba",
				"writes to public.c require approval from dba",
			],
		},
		"truncate without tables": {
			"statements": [stmt({"command": "TRUNCATE", "read_only": false})],
			"want": "approve", "reasons": ["TRUNCATE statements require approval from dba"],
		},
		"copy from stdin": {
			"statements": [object.union(write("COPY", "public.orders"), {"flags": ["copy_from"]})],
			"want": "approve",
			"reasons": ["COPY FROM requires approval from dba", "writes to public.orders require approval from dba"],
		},
		"data-modifying CTE": {
			"statements": [object.union(write("SELECT", "public.orders"), {"flags": ["data_modifying_cte"], "reads": ["public.orders"]})],
			"want": "approve",
			"reasons": ["data-modifying WITH clauses require approval from dba", "writes to public.orders require approval from dba"],
		},
		"select into": {
			"statements": [object.union(write("SELECT", "public.copy"), {"flags": ["select_into"]})],
			"want": "approve",
			"reasons": ["SELECT INTO requires approval from dba", "writes to public.copy require approval from dba"],
		},
		"for update": {
			"statements": [object.union(flagged("SELECT", ["for_update"]), {"reads": ["public.orders"]})],
			"want": "approve", "reasons": ["row locks (FOR UPDATE / FOR SHARE) require approval from dba"],
		},
		"side-effect function": {
			"statements": [object.union(flagged("SELECT", ["side_effect_function"]), {"functions": ["nextval", "lower"]})],
			"want": "approve", "reasons": ["functions with side effects require approval from dba (calls lower, nextval)"],
		},
		"function custos cannot prove read-only": {
			"statements": [object.union(flagged("SELECT", ["unknown_function"]), {"functions": ["public.audit_me", "lower"]})],
			"want": "approve", "reasons": ["functions custos cannot prove read-only require approval from dba (calls lower, public.audit_me)"],
		},
		"cursor over a function custos cannot prove read-only": {
			"statements": [object.union(flagged("DECLARE", ["unknown_function"]), {"functions": ["shadow.lower"], "name": "c"})],
			"want": "approve", "reasons": ["functions custos cannot prove read-only require approval from dba (calls shadow.lower)"],
		},
		"view calling a function custos cannot prove read-only": {
			"statements": [object.union(flagged("SELECT", ["unknown_function"]), {"reads": ["public.v"], "functions": ["public.f"]})],
			"want": "approve", "reasons": ["functions custos cannot prove read-only require approval from dba (calls public.f)"],
		},
		"DO": {
			"statements": [flagged("DO", ["opaque"])],
			"want": "approve",
			"reasons": ["DO blocks require approval from dba", "DO statement cannot be analysed and requires approval from dba"],
		},
		"CALL": {
			"statements": [stmt({"command": "CALL", "read_only": false, "functions": ["archive_cards"]})],
			"want": "approve", "reasons": ["procedure calls (CALL) require approval from dba"],
		},
		"NOTIFY": {
			"statements": [stmt({"command": "NOTIFY", "read_only": false})],
			"want": "approve", "reasons": ["NOTIFY statements require approval from dba"],
		},
		"VACUUM": {
			"statements": [stmt({"command": "VACUUM", "read_only": false, "reads": ["public.orders"]})],
			"want": "approve", "reasons": ["VACUUM statements require approval from dba"],
		},
		"unknown command that is not read-only": {
			"statements": [stmt({"command": "IMPORT SOMETHING", "read_only": false})],
			"want": "approve", "reasons": ["IMPORT SOMETHING statement is not read-only and requires approval from dba"],
		},
		"statement without a command or read_only": {
			"statements": [{"writes": []}],
			"want": "approve", "reasons": ["statement is not read-only and requires approval from dba"],
		},
		"explain analyze of a write": {
			"statements": [explain(insert_orders, ["explain_analyze"])],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		"execute of a prepared write": {
			"statements": [execute(insert_orders)],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		"execute of an explain analyze of a write": {
			"statements": [execute(explain(insert_orders, ["explain_analyze"]))],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		"execute of an unknown statement": {
			"statements": [flagged("EXECUTE", ["opaque"])],
			"want": "approve",
			"reasons": ["EXECUTE of a statement custos did not see prepared cannot be analysed and requires approval from dba"],
		},
		"a write hidden after a read": {
			"statements": [object.union(select_orders, {"flags": ["multi_statement"]}), object.union(write("DELETE", "public.orders"), {"flags": ["multi_statement"]})],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		# Never for agents.
		"DDL": {
			"statements": [ddl("CREATE TABLE")],
			"want": "deny", "reasons": ["DDL (CREATE TABLE) is not allowed for agents"],
		},
		"DDL behind a read denies the batch": {
			"statements": [select_orders, ddl("DROP TABLE")],
			"want": "deny", "reasons": ["DDL (DROP TABLE) is not allowed for agents"],
		},
		"DDL run by EXPLAIN ANALYZE": {
			"statements": [explain(ddl("CREATE TABLE AS"), ["explain_analyze"])],
			"want": "deny", "reasons": ["DDL (CREATE TABLE AS) is not allowed for agents"],
		},
		"GRANT": {
			"statements": [ddl("GRANT")],
			"want": "deny", "reasons": ["GRANT is not allowed for agents"],
		},
		"REVOKE": {
			"statements": [stmt({"command": "REVOKE", "read_only": false})],
			"want": "deny", "reasons": ["REVOKE is not allowed for agents"],
		},
		"SET ROLE": {
			"statements": [stmt({"command": "SET ROLE", "read_only": false, "flags": ["set_role"], "settings": ["role"]})],
			"want": "deny", "reasons": ["changing the role (SET ROLE) is not allowed through custos"],
		},
		"SET SESSION AUTHORIZATION": {
			"statements": [stmt({"command": "SET SESSION AUTHORIZATION", "read_only": false})],
			"want": "deny", "reasons": ["changing the role (SET SESSION AUTHORIZATION) is not allowed through custos"],
		},
		"SET role as a setting": {
			"statements": [set(["role"])],
			"want": "deny", "reasons": ["changing the role (SET) is not allowed through custos"],
		},
		"SET TRANSACTION READ WRITE": {
			"statements": [stmt({"command": "SET", "read_only": false, "flags": ["sets_read_only"]})],
			"want": "deny",
			"reasons": ["changing transaction_read_only or default_transaction_read_only is not allowed for agents"],
		},
		"SET default_transaction_read_only": {
			"statements": [set(["default_transaction_read_only"])],
			"want": "deny",
			"reasons": ["changing transaction_read_only or default_transaction_read_only is not allowed for agents"],
		},
		"a setting not allow-listed": {
			"statements": [set(["search_path"])],
			"want": "deny", "reasons": ["setting search_path is not allowed for agents"],
		},
		"a setting that changes parsing": {
			"statements": [set(["standard_conforming_strings"])],
			"want": "deny", "reasons": ["setting standard_conforming_strings is not allowed through custos"],
		},
		"a custos.* setting": {
			"statements": [set(["custos.principal"])],
			"want": "deny", "reasons": ["setting custos.principal is not allowed through custos"],
		},
		"RESET of a custos.* setting": {
			"statements": [stmt({"command": "RESET", "read_only": false, "settings": ["custos.session_id"]})],
			"want": "deny", "reasons": ["setting custos.session_id is not allowed through custos"],
		},
		"COPY TO PROGRAM": {
			"statements": [object.union(flagged("COPY", ["copy_to", "copy_program"]), {"reads": ["public.orders"]})],
			"want": "deny",
			"reasons": ["COPY TO PROGRAM (it runs a program on the database server) is not allowed for agents"],
		},
		"COPY FROM a server file": {
			"statements": [object.union(write("COPY", "public.orders"), {"flags": ["copy_from", "copy_file"]})],
			"want": "deny", "reasons": ["COPY FROM a server file is not allowed for agents"],
		},
		"dangerous function": {
			"statements": [object.union(flagged("SELECT", ["dangerous_function", "side_effect_function"]), {"functions": ["pg_catalog.pg_read_file"]})],
			"want": "deny",
			"reasons": [
				"calling dangerous functions (pg_catalog.pg_read_file) is not allowed for agents",
				"calling pg_read_file is not allowed for agents",
			],
		},
		"function running hidden SQL": {
			"statements": [stmt({"functions": ["Query_To_XML"]})],
			"want": "deny", "reasons": ["calling query_to_xml is not allowed for agents"],
		},
		"dblink": {
			"statements": [stmt({"functions": ["public.dblink_exec"]})],
			"want": "deny", "reasons": ["calling dblink_exec is not allowed for agents"],
		},
		"FunctionCall message": {
			"statements": [function_call(["lo_open"])],
			"want": "deny", "reasons": ["function call lo_open (not in function_call_allowlist) is not allowed for agents"],
		},
		"FunctionCall message without a function": {
			"statements": [function_call([])],
			"want": "deny", "reasons": ["a function call naming no function is not allowed for agents"],
		},
		"statistics catalog": {
			"statements": [stmt({"reads": ["pg_catalog.pg_stats"]})],
			"want": "deny", "reasons": ["reading pg_catalog.pg_stats is not allowed for agents"],
		},
		"unqualified statistics catalog": {
			"statements": [stmt({"reads": ["public.pg_statistic"]})],
			"want": "deny", "reasons": ["reading public.pg_statistic is not allowed for agents"],
		},
		# Cardholder-data columns.
		"PAN in a filter": {
			"statements": [pan_in(["filter"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
		"PAN selected and ordered by": {
			"statements": [pan_in(["output", "order"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in order"],
		},
		"PAN in a function, grouped and aggregated": {
			"statements": [pan_in(["function", "group", "aggregate"])],
			"want": "deny",
			"reasons": ["column public.cards.pan may only be selected, not used in aggregate or function or group"],
		},
		"PAN copied into another table": {
			"statements": [object.union(write("INSERT", "public.backup"), {"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "pan", "usage": ["write"]}]})],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in write"],
		},
		"CVV returned by a write": {
			"statements": [object.union(write("UPDATE", "public.cards"), {"columns": [{"table": "public.cards", "column": "cvv", "usage": ["returning"]}]})],
			"want": "deny", "reasons": ["column public.cards.cvv may only be selected, not used in returning"],
		},
		"PAN of an unknown table in a filter": {
			"statements": [stmt({"reads": ["public.cards", "public.orders"], "columns": [{"table": "", "column": "pan", "usage": ["filter"]}]})],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
		"PAN without a table field in a filter": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"column": "pan", "usage": ["filter"]}]})],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
		"whole cardholder table copied out": {
			"statements": [stmt({"command": "COPY", "reads": ["public.cards"], "flags": ["copy_to"], "columns": [{"table": "public.cards", "column": "*", "usage": ["copy"]}]})],
			"want": "deny", "reasons": ["column public.cards.* may only be selected, not used in copy"],
		},
		"whole row of an unknown table in a function": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "", "column": "*", "usage": ["function"]}]})],
			"want": "deny", "reasons": ["column public.cards.* may only be selected, not used in function"],
		},
		"PAN filtered in what EXPLAIN ANALYZE runs": {
			"statements": [explain(pan_in(["filter"]), ["explain_analyze"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
		"PAN filtered in a prepared statement": {
			"statements": [execute(pan_in(["filter"]))],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
		"CVV through a set operation": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "cvv", "usage": ["derived", "setop"]}]})],
			"want": "deny", "reasons": ["column public.cards.cvv may only be selected, not used in derived or setop"],
		},
		"CVV through a scalar subquery": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "cvv", "usage": ["derived"]}]})],
			"want": "deny", "reasons": ["column public.cards.cvv may only be selected, not used in derived"],
		},
		"PAN probed by INTERSECT in EXISTS": {
			"statements": [pan_in(["setop"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in setop"],
		},
		"PAN sorted by a recursive CTE's SEARCH": {
			"statements": [pan_in(["function", "order", "setop"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in function or order or setop"],
		},
		"PAN compared to a bound parameter": {
			"statements": [pan_in(["filter_eq_param"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter_eq_param"],
		},
		"derived CVV of an unknown table": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "", "column": "cvv", "usage": ["derived"]}]})],
			"want": "deny", "reasons": ["column public.cards.cvv may only be selected, not used in derived"],
		},
		"derived whole row of an unknown table": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "", "column": "*", "usage": ["derived", "group"]}]})],
			"want": "deny", "reasons": ["column public.cards.* may only be selected, not used in derived or group"],
		},
		"other columns of a cardholder table in a filter": {
			"statements": [stmt({"reads": ["public.cards"], "columns": [{"table": "public.cards", "column": "holder", "usage": ["filter", "order"]}]})],
			"want": "allow",
		},
		"PAN of an unrelated table": {
			"statements": [stmt({"reads": ["public.orders"], "columns": [{"table": "public.orders", "column": "pan", "usage": ["filter"]}]})],
			"want": "allow",
		},
		"denial wins over approval": {
			"statements": [insert_orders, pan_in(["filter"])],
			"want": "deny", "reasons": ["column public.cards.pan may only be selected, not used in filter"],
		},
	}
	d := custos.decision with input as sql_input(agent, tc.statements)
	outcome(d) == tc.want
	object.get(tc, "reasons", d.reasons) == d.reasons
	approval_shape(d)
}

# A decision that needs approval names dba, one approver, 15 minutes.
approval_shape(d) if not d.require_approval

approval_shape(d) if d.require_approval == {"approver_groups": ["dba"], "quorum": 1, "ttl": "15m"}

test_dba_sql[note] if {
	some note, tc in {
		"read": {"statements": [select_pan], "want": "allow", "reasons": ["read-only statements are allowed for dba"]},
		"PAN in a filter": {"statements": [pan_in(["filter"])], "want": "allow"},
		"statistics catalog": {"statements": [stmt({"reads": ["pg_catalog.pg_stats"]})], "want": "allow"},
		"search_path": {"statements": [set(["search_path"])], "want": "allow"},
		"write": {
			"statements": [insert_orders],
			"want": "approve", "reasons": ["writes to public.orders require approval from dba"],
		},
		"DDL": {
			"statements": [ddl("CREATE TABLE")],
			"want": "approve", "reasons": ["DDL (CREATE TABLE) requires approval from another member of dba"],
		},
		"GRANT": {
			"statements": [ddl("GRANT")],
			"want": "approve", "reasons": ["GRANT requires approval from another member of dba"],
		},
		"read-only backstop": {
			"statements": [set(["transaction_read_only"])],
			"want": "approve",
			"reasons": ["changing transaction_read_only or default_transaction_read_only requires approval from another member of dba"],
		},
		"COPY FROM PROGRAM": {
			"statements": [object.union(write("COPY", "public.orders"), {"flags": ["copy_from", "copy_program"]})],
			"want": "approve",
			"reasons": [
				"COPY FROM PROGRAM (it runs a program on the database server) requires approval from another member of dba",
				"COPY FROM requires approval from dba",
				"writes to public.orders require approval from dba",
			],
		},
		"COPY TO a server file": {
			"statements": [object.union(flagged("COPY", ["copy_to", "copy_file"]), {"reads": ["public.orders"]})],
			"want": "approve",
			"reasons": ["COPY TO a server file requires approval from another member of dba"],
		},
		"dangerous function": {
			"statements": [object.union(stmt({"flags": ["dangerous_function"]}), {"functions": ["pg_terminate_backend"]})],
			"want": "approve",
			"reasons": [
				"calling dangerous functions (pg_terminate_backend) requires approval from another member of dba",
				"calling pg_terminate_backend requires approval from another member of dba",
			],
		},
		"FunctionCall message": {
			"statements": [function_call(["lo_import"])],
			"want": "approve",
			"reasons": [
				"calling lo_import requires approval from another member of dba",
				"function call lo_import (not in function_call_allowlist) requires approval from another member of dba",
				"functions with side effects require approval from dba (calls lo_import)",
			],
		},
		"SET ROLE": {
			"statements": [stmt({"command": "SET ROLE", "read_only": false, "flags": ["set_role"]})],
			"want": "deny", "reasons": ["changing the role (SET ROLE) is not allowed through custos"],
		},
		"a setting that changes parsing": {
			"statements": [set(["backslash_quote"])],
			"want": "deny", "reasons": ["setting backslash_quote is not allowed through custos"],
		},
		"a custos.* setting, mixed case": {
			"statements": [set(["Custos.Principal"])],
			"want": "deny", "reasons": ["setting custos.principal is not allowed through custos"],
		},
		"no sql field": {"statements": "none", "want": "deny", "reasons": ["the request has no sql field"]},
		"statements not an array": {
			"statements": "SELECT 1", "want": "deny",
			"reasons": ["sql.statements is not an array of statements"],
		},
		"no statements field": {
			"statements": "no statements", "want": "deny",
			"reasons": ["sql.statements is not an array of statements"],
		},
	}
	inp := sql_input(dba, tc.statements)
	d := custos.decision with input as with_statements(inp, tc.statements)
	outcome(d) == tc.want
	object.get(tc, "reasons", d.reasons) == d.reasons
	approval_shape(d)
}

with_statements(inp, "none") := object.remove(inp, ["sql"])

with_statements(inp, "no statements") := object.union(inp, {"sql": {"normalized": ""}})

with_statements(inp, statements) := inp if not statements in {"none", "no statements"}

test_masks[note] if {
	some note, tc in {
		"plain table": {"statements": [select_orders], "columns": {}},
		"cardholder table read": {"statements": [select_pan], "columns": all_cards_columns},
		"cardholder table written": {"statements": [write("UPDATE", "public.cards")], "columns": all_cards_columns},
		"cardholder table named only by a column": {
			"statements": [stmt({"columns": [{"table": "public.cards", "column": "id", "usage": ["output"]}]})],
			"columns": all_cards_columns,
		},
		"unattributed column with a cardholder name": {
			"statements": [stmt({"reads": ["public.v"], "columns": [{"table": "", "column": "cvv", "usage": ["output"]}]})],
			"columns": {"cvv": "drop"},
		},
		"cardholder table in a prepared statement": {"statements": [execute(select_pan)], "columns": all_cards_columns},
	}
	d := custos.decision with input as sql_input(agent, tc.statements)
	d.mask == {"columns": tc.columns, "json_paths": {}, "detect_pan": true, "reveal": "last4"}
}

test_mask_takes_the_strictest_rule if {
	tables := {
		"public.cards": {"pan": "last4", "cvv": "drop"},
		"public.legacy": {"pan": "redact", "cvv": "null", "name": "hmac"},
	}
	d := custos.decision with input as sql_input(agent, [stmt({"reads": ["public.cards", "public.legacy"]})])
		with data.custos.config.cardholder_tables as tables
	d.mask.columns == {"pan": "redact", "cvv": "drop", "name": "hmac"}
}

test_mask_passes_an_unknown_strategy_on if {
	d := custos.decision with input as sql_input(agent, [select_pan])
		with data.custos.config.cardholder_tables as {"public.cards": {"pan": "rot13"}}
	d.mask.columns == {"pan": "rot13"}
}

test_column_grants if {
	grants := {"public.cards": {"pan": ["filter"]}}
	allowed := custos.decision with input as sql_input(agent, [pan_in(["output", "filter"])])
		with data.custos.config.cardholder_column_grants as grants
	allowed.allow
	not allowed.require_approval
	denied := custos.decision with input as sql_input(agent, [pan_in(["filter", "order"])])
		with data.custos.config.cardholder_column_grants as grants
	denied.reasons == ["column public.cards.pan may only be selected, not used in order"]
}

test_function_call_allowlist if {
	d := custos.decision with input as sql_input(agent, [function_call(["pg_catalog.lo_read"])])
		with data.custos.config.function_call_allowlist as ["LO_READ"]
	d.allow
	not d.require_approval
	mixed := custos.decision with input as sql_input(agent, [function_call(["lo_read", "lo_write"])])
		with data.custos.config.function_call_allowlist as ["lo_read"]
	mixed.reasons == ["function call lo_write (not in function_call_allowlist) is not allowed for agents"]
}

test_runs_and_nodes if {
	inner := insert_orders
	batch := [explain(explain(inner, []), ["explain_analyze"]), execute(explain(pan_in(["filter"]), []))]
	runs := custos.runs with input as sql_input(agent, batch)
	nodes := custos.nodes with input as sql_input(agent, batch)
	count(nodes) == 6

	# The outer EXPLAIN ANALYZE runs the inner EXPLAIN, which runs nothing;
	# EXECUTE runs its EXPLAIN, which runs nothing.
	count(runs) == 4
	not inner in runs
}

test_filter_eq_param_grants if {
	eq := {"public.cards": {"pan": ["filter_eq_param"]}}
	allowed := custos.decision with input as sql_input(agent, [pan_in(["output", "filter_eq_param"])])
		with data.custos.config.cardholder_column_grants as eq
	allowed.allow
	not allowed.require_approval

	# A grant of equality to a parameter allows no other filter, ordering or derived value.
	denied := custos.decision with input as sql_input(agent, [pan_in(["filter", "filter_eq_param", "derived"])])
		with data.custos.config.cardholder_column_grants as eq
	denied.reasons == ["column public.cards.pan may only be selected, not used in derived or filter"]

	# A grant of filter covers its narrowest form.
	wide := custos.decision with input as sql_input(agent, [pan_in(["filter_eq_param"])])
		with data.custos.config.cardholder_column_grants as {"public.cards": {"pan": ["filter"]}}
	wide.allow
}

# ---------------------------------------------------------------------------
# COPY to the client.

copy_stmt(table, copy, columns) := stmt({
	"command": "COPY", "reads": [table], "flags": ["copy_to"], "columns": columns,
	"copy": object.union(
		{
			"direction": "to", "target": "client", "table": table, "columns": [], "query": false,
			"format": "text", "options": [], "header": false,
		},
		copy,
	),
})

copy_cards(copy) := copy_stmt("public.cards", copy, [{"table": "public.cards", "column": "*", "usage": ["output"]}])

copy_query(reads, columns) := object.union(copy_stmt("", {"query": true}, columns), {"reads": reads})

copy_cases := {
	"COPY cards, text": {"statements": [copy_cards({})], "agent": "allow", "dba": "allow"},
	"COPY cards, csv with a header": {
		"statements": [copy_cards({"format": "csv", "options": ["format", "header"], "header": true})],
		"agent": "allow", "dba": "allow",
	},
	"COPY cards, binary": {"statements": [copy_cards({"format": "binary", "options": ["format"]})], "agent": "allow", "dba": "allow"},
	"COPY cards with QUOTE": {
		"statements": [copy_cards({"format": "csv", "options": ["format", "quote"], "quote": "9"})],
		"agent": "deny", "dba": "allow",
		"reasons": ["COPY option QUOTE is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER"],
	},
	"COPY cards with DELIMITER, NULL and ESCAPE": {
		"statements": [copy_cards({"format": "csv", "options": ["delimiter", "escape", "format", "null"]})],
		"agent": "deny", "dba": "allow",
		"reasons": [
			"COPY option DELIMITER is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER",
			"COPY option ESCAPE is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER",
			"COPY option NULL is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER",
		],
	},
	"COPY cards with FORCE_QUOTE and ENCODING": {
		"statements": [copy_cards({"options": ["encoding", "force_quote"]})],
		"agent": "deny", "dba": "allow",
		"reasons": [
			"COPY option ENCODING is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER",
			"COPY option FORCE_QUOTE is not allowed for agents on cardholder data (public.cards): only FORMAT text, csv or binary and HEADER",
		],
	},
	"COPY cards in an unknown format": {
		"statements": [copy_cards({"format": "xml", "options": ["format"]})],
		"agent": "deny", "dba": "allow",
		"reasons": ["COPY format xml is not allowed for agents on cardholder data (public.cards)"],
	},
	"COPY of another table with options": {
		"statements": [copy_stmt("public.orders", {"format": "csv", "options": ["format", "quote"]}, [])],
		"agent": "allow", "dba": "allow",
	},
	"COPY FROM with options is not an output": {
		"statements": [object.union(copy_cards({"direction": "from", "options": ["quote"]}), {"flags": ["copy_from"], "read_only": false, "writes": ["public.cards"]})],
		"agent": "approve", "dba": "approve",
	},
	"COPY (query) of the PAN": {
		"statements": [copy_query(["public.cards"], [{"table": "public.cards", "column": "pan", "usage": ["output"]}])],
		"agent": "allow", "dba": "allow",
	},
	"COPY (query) of the CVV": {
		"statements": [copy_query(["public.cards"], [{"table": "public.cards", "column": "cvv", "usage": ["output"]}])],
		"agent": "deny", "dba": "deny",
		"reasons": ["COPY (query) would send sensitive authentication data (public.cards.cvv); COPY the table or SELECT, which drop it"],
	},
	"COPY (query) of every column": {
		"statements": [copy_query(["public.cards"], [{"table": "public.cards", "column": "*", "usage": ["output"]}])],
		"agent": "deny", "dba": "deny",
		"reasons": ["COPY (query) would send sensitive authentication data (public.cards.cvv, public.cards.track_data); COPY the table or SELECT, which drop it"],
	},
	"COPY (query) of a CVV in a function": {
		"statements": [copy_query(["public.cards"], [{"table": "public.cards", "column": "cvv", "usage": ["function"]}])],
		"agent": "deny", "dba": "deny",
	},
	"COPY (query) of an unattributed CVV": {
		"statements": [copy_query(["public.cards", "public.orders"], [{"table": "", "column": "cvv", "usage": ["output"]}])],
		"agent": "deny", "dba": "deny",
		"reasons": ["COPY (query) would send sensitive authentication data (public.cards.cvv); COPY the table or SELECT, which drop it"],
	},
	"COPY (query) of an unattributed star": {
		"statements": [copy_query(["public.cards"], [{"table": "", "column": "*", "usage": ["output"]}])],
		"agent": "deny", "dba": "deny",
	},
	"COPY (query) of an unattributed harmless column": {
		"statements": [copy_query(["public.cards"], [{"table": "", "column": "holder", "usage": ["output"]}])],
		"agent": "allow", "dba": "allow",
	},
	"COPY (query) of another table": {
		"statements": [copy_query(["public.orders"], [{"table": "public.orders", "column": "*", "usage": ["output"]}])],
		"agent": "allow", "dba": "allow",
	},
	"COPY (query) of cards with QUOTE": {
		"statements": [object.union(copy_query(["public.cards"], [{"table": "public.cards", "column": "pan", "usage": ["output"]}]), {"copy": {"direction": "to", "target": "client", "query": true, "format": "csv", "options": ["format", "quote"]}})],
		"agent": "deny", "dba": "allow",
	},
}

test_copy_decisions if {
	failures := {sprintf("%s as %s: got %s %v", [note, who, outcome(d), d.reasons]) |
		some note, tc in copy_cases
		some who, principal in {"agent": agent, "dba": dba}
		d := custos.decision with input as sql_input(principal, tc.statements)
		not copy_case_holds(tc, who, d)
	}
	print(failures)
	count(failures) == 0
}

copy_case_holds(tc, who, d) if {
	outcome(d) == tc[who]
	copy_reasons_hold(tc, who, d)
}

copy_reasons_hold(tc, _, _) if not tc.reasons

copy_reasons_hold(tc, who, _) if {
	tc.reasons
	tc[who] != "deny"
}

copy_reasons_hold(tc, who, d) if {
	tc[who] == "deny"
	tc.reasons == d.reasons
}
