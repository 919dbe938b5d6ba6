package custos_test

import data.custos

note_in(usages) := stmt({"reads": ["public.tickets"], "columns": [{"table": "public.tickets", "column": "note", "usage": usages}]})

discovered_note := {"cardholder_tables": {"public.tickets": {"note": "last4"}}}

test_discovered_column_is_cardholder_data if {
	# Before discovery: a function of the note is an ordinary read.
	before := custos.decision with input as sql_input(agent, [note_in(["function"])])
	before.allow
	not before.require_approval
	before.mask.columns == {}

	# Once discovery found card numbers in it: masked as a PAN column and
	# refused in a function for agents.
	after := custos.decision with input as sql_input(agent, [note_in(["function"])])
		with data.custos.discovered as discovered_note
	not after.allow
	after.reasons == ["column public.tickets.note may only be selected, not used in function"]

	read := custos.decision with input as sql_input(agent, [note_in(["output"])])
		with data.custos.discovered as discovered_note
	read.allow
	read.mask.columns == {"note": "last4"}
}

test_declared_strategy_wins_over_discovery if {
	d := custos.decision with input as sql_input(agent, [select_pan])
		with data.custos.discovered as {"cardholder_tables": {"public.cards": {"pan": "last4", "cvv": "last4", "memo": "last4"}}}
	d.mask.columns == {"pan": "last4", "cvv": "drop", "track_data": "drop", "memo": "last4"}
}

test_malformed_discovery_is_ignored if {
	d := custos.decision with input as sql_input(agent, [select_pan])
		with data.custos.discovered as {"cardholder_tables": "oops"}
	d.mask.columns == all_cards_columns
}
