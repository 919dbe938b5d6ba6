package custos

import data.custos.config

# SQL (kind "sql"): one decision for a whole batch, every statement of which
# internal/sqlclass has classified (see README.md for the statement fields).
#
#   - A denial wins: one denied statement denies the batch.
#   - Otherwise anything with an effect (a write, a side effect, a lock, an
#     opaque statement) needs approval from the approver groups.
#   - Otherwise the batch runs. Every allowed decision masks the columns of the
#     cardholder-data tables it touches and turns on PAN detection for all
#     results.
#
# Speed: OPA caches function calls by their arguments, hashing them, so the
# rules below hand functions small values (a command, a flag list), never
# whole statements.

sql_decision := deny(sort(sql_denials)) if count(sql_denials) > 0

sql_decision := {
	"allow": true,
	"reasons": sort(sql_approvals),
	"require_approval": approval,
	"mask": sql_mask,
} if {
	count(sql_denials) == 0
	count(sql_approvals) > 0
}

sql_decision := {
	"allow": true,
	"reasons": [sprintf("read-only statements are allowed for %s", [role])],
	"mask": sql_mask,
} if {
	count(sql_denials) == 0
	count(sql_approvals) == 0
}

# ---------------------------------------------------------------------------
# The statements.

default statements := []

statements := input.sql.statements if is_array(input.sql.statements)

# A statement missing a field gets these: no command, not read-only.
statement_defaults := {
	"command": null, "ddl": false, "read_only": false, "reads": [], "writes": [],
	"functions": [], "flags": [], "columns": [], "settings": [],
	"explains": null, "prepared": null,
}

# The levels hold [statement, runs] for the statements of the batch and those
# nested in them: what an EXPLAIN explains and what an EXECUTE or PREPARE
# names. runs is true for a statement that executes: the batch, what EXPLAIN
# ANALYZE runs, and what EXECUTE runs (EXPLAIN without ANALYZE and PREPARE
# run nothing). PostgreSQL nests two levels at most (EXPLAIN EXECUTE p).
level0 := [[object.union(statement_defaults, s), true] | some s in statements]

level1 := [[object.union(statement_defaults, parent[key]), child_runs(parent_runs, key, parent.command, parent.flags)] |
	some [parent, parent_runs] in level0
	some key in ["explains", "prepared"]
	is_object(parent[key])
]

level2 := [[object.union(statement_defaults, parent[key]), child_runs(parent_runs, key, parent.command, parent.flags)] |
	some [parent, parent_runs] in level1
	some key in ["explains", "prepared"]
	is_object(parent[key])
]

level3 := [[object.union(statement_defaults, parent[key]), child_runs(parent_runs, key, parent.command, parent.flags)] |
	some [parent, parent_runs] in level2
	some key in ["explains", "prepared"]
	is_object(parent[key])
]

sql_denials contains "statements nested more than three levels deep are not allowed" if {
	some [parent, _] in level3
	some key in ["explains", "prepared"]
	is_object(parent[key])
}

child_runs(parent_runs, key, command, flags) if {
	parent_runs
	runs_nested(key, command, flags)
}

else := false

runs_nested("explains", _, flags) if "explain_analyze" in flags

runs_nested("prepared", "EXECUTE", _) := true

tree := array.concat(array.concat(level0, level1), array.concat(level2, level3))

# nodes are all the statements: column rules look at them whether they run
# or not. runs are the statements that execute: effects and forbidden
# operations are looked for there.
nodes := [node | some [node, _] in tree]

runs := [node | some [node, true] in tree]

# has_any is true for a non-empty array (a field may be null).
has_any(values) if some _ in values

functions_text(functions) := concat(", ", sort({lower(f) | some f in functions}))

# Commands that change nothing in the database. They run even when sqlclass
# does not call them read-only (settings are checked on their own below).
session_commands := {
	"", "ABORT", "BEGIN", "CLOSE", "CLOSE CURSOR", "COMMIT", "DEALLOCATE",
	"DEALLOCATE ALL", "DECLARE", "DECLARE CURSOR", "DISCARD", "DISCARD ALL",
	"END", "EXPLAIN", "FETCH", "LISTEN", "MOVE", "PREPARE", "RELEASE",
	"RELEASE SAVEPOINT", "RESET", "ROLLBACK", "ROLLBACK TO", "ROLLBACK TO SAVEPOINT",
	"SAVEPOINT", "SET", "SET CONSTRAINTS", "SET TRANSACTION", "SHOW",
	"START TRANSACTION", "UNLISTEN",
}

# Commands with an effect whatever else sqlclass says about them.
effect_commands := {
	"ANALYZE", "CALL", "CHECKPOINT", "CLUSTER", "DELETE", "DO", "INSERT", "LOAD",
	"LOCK", "LOCK TABLE", "MERGE", "NOTIFY", "REFRESH MATERIALIZED VIEW", "REINDEX",
	"TRUNCATE", "UPDATE", "VACUUM",
}

privilege_commands := {"ALTER DEFAULT PRIVILEGES", "GRANT", "GRANT ROLE", "REVOKE", "REVOKE ROLE"}

role_commands := {"SET ROLE", "SET SESSION AUTHORIZATION"}

read_only_settings := {"default_transaction_read_only", "transaction_read_only"}

role_settings := {"role", "session_authorization"}

# changed_settings holds [statement index in runs, setting] for the settings
# the statements that run change (SHOW changes none), lower case.
changed_settings contains [i, lower(s)] if {
	some i, node in runs
	node.command != "SHOW"
	some s in node.settings
}

# ---------------------------------------------------------------------------
# Denials for everyone: they would undo custos' own controls.

sql_denials contains "the request has no sql field" if not has_sql

has_sql if is_object(input.sql)

# A batch is an array of statements, or null for none.
sql_denials contains "sql.statements is not an array of statements" if {
	has_sql
	not statements_well_formed
}

statements_well_formed if is_array(input.sql.statements)

statements_well_formed if is_null(input.sql.statements)

# Changing the role changes who the database thinks runs every later statement.
sql_denials contains sprintf("changing the role (%s) is not allowed through custos", [runs[i].command]) if {
	some i in role_changes
}

role_changes contains i if {
	some i, node in runs
	"set_role" in node.flags
}

role_changes contains i if {
	some i, node in runs
	node.command in role_commands
}

role_changes contains i if {
	some [i, s] in changed_settings
	s in role_settings
}

# Settings that change how the server parses statements would make the
# classification wrong (standard_conforming_strings hides statements in strings).
sql_denials contains sprintf("setting %s is not allowed through custos", [s]) if {
	some [_, s] in changed_settings
	s in config.denied_settings
	not s in role_settings
}

# custos.* settings name whom the upstream session runs for
# (current_setting('custos.principal')); nobody may change them.
sql_denials contains sprintf("setting %s is not allowed through custos", [s]) if {
	some [_, s] in changed_settings
	denied_setting_prefix(s)
}

denied_setting_prefix(s) if {
	some prefix in config.denied_setting_prefixes
	startswith(s, prefix)
}

# ---------------------------------------------------------------------------
# Guarded operations: never allowed for agents; the dba role may run them with
# approval from another member of the approver groups (custos never lets a
# requester approve their own request).

sql_denials contains sprintf("%s is not allowed for agents", [what]) if {
	role == "agent"
	some what in guarded
}

sql_approvals contains sprintf("%s requires approval from another member of %s", [what, approvers]) if {
	role == "dba"
	some what in guarded
}

guarded contains sprintf("DDL (%s)", [node.command]) if {
	some node in runs
	node.ddl == true
	not node.command in privilege_commands
}

guarded contains node.command if {
	some node in runs
	node.command in privilege_commands
}

guarded contains "changing transaction_read_only or default_transaction_read_only" if {
	some _ in read_only_changes
}

read_only_changes contains i if {
	some i, node in runs
	"sets_read_only" in node.flags
}

read_only_changes contains i if {
	some [i, s] in changed_settings
	s in read_only_settings
}

guarded contains sprintf("COPY %s PROGRAM (it runs a program on the database server)", [copy_direction(node.flags)]) if {
	some node in runs
	"copy_program" in node.flags
}

guarded contains sprintf("COPY %s a server file", [copy_direction(node.flags)]) if {
	some node in runs
	"copy_file" in node.flags
}

copy_direction(flags) := "FROM" if "copy_from" in flags

else := "TO"

guarded contains sprintf("calling dangerous functions (%s)", [functions_text(node.functions)]) if {
	some node in runs
	"dangerous_function" in node.flags
}

guarded contains sprintf("calling %s", [function_name(f)]) if {
	some node in runs
	some f in node.functions
	denied_function(f)
}

denied_function(f) if function_name(f) in config.denied_functions

denied_function(f) if {
	some prefix in config.denied_function_prefixes
	startswith(function_name(f), prefix)
}

# function_name is a function's name without its schema, lower case.
function_name(f) := name if {
	parts := split(lower(f), ".")
	name := parts[count(parts) - 1]
}

# FunctionCall protocol messages (the large-object API behind psql's
# \lo_import) name a function and nothing else; only allow-listed ones run.
guarded contains sprintf("function call %s (not in function_call_allowlist)", [function_name(f)]) if {
	some node in runs
	node.command == "FUNCTION CALL"
	some f in node.functions
	not function_call_allowed(f)
}

guarded contains "a function call naming no function" if {
	some node in runs
	node.command == "FUNCTION CALL"
	not has_any(node.functions)
}

function_call_allowed(f) if function_name(f) in {lower(a) | some a in config.function_call_allowlist}

allowed_function_call("FUNCTION CALL", functions) if {
	has_any(functions)
	every f in functions {
		function_call_allowed(f)
	}
}

# ---------------------------------------------------------------------------
# Agents only: settings, catalogs and cardholder-data columns.

sql_denials contains sprintf("setting %s is not allowed for agents", [s]) if {
	role == "agent"
	some [_, s] in changed_settings
	not agent_setting(s)
	not s in config.denied_settings
	not denied_setting_prefix(s)
	not s in role_settings
	not s in read_only_settings
}

agent_setting(s) if s in config.agent_settings

agent_setting(s) if {
	some prefix in config.agent_setting_prefixes
	startswith(s, prefix)
}

# Catalogs holding sampled column values (pg_statistic and its views hold
# real PANs) or credentials. sqlclass reports an unqualified name in public.
sql_denials contains sprintf("reading %s is not allowed for agents", [table]) if {
	role == "agent"
	some node in nodes
	some table in node.reads
	restricted_table(table)
}

restricted_table(table) if table in config.agent_restricted_tables

restricted_table(table) if {
	startswith(table, "public.")
	sprintf("pg_catalog.%s", [substring(table, count("public."), -1)]) in config.agent_restricted_tables
}

# Cardholder-data columns: an agent may only select them as plain columns
# PostgreSQL reports with their origin (usage "output"), where the masker's
# column rules apply. Any other use is refused unless
# cardholder_column_grants allows it: a filter, join, ordering, grouping,
# set operation (setop), aggregate, function or server side copy reveals
# digits without returning the value, and a value that reaches the client
# without its origin (derived: a set operation, scalar subquery, VALUES,
# whole row, expression) escapes the column rules (a CVV would come through).
sql_denials contains sprintf("column %s.%s may only be selected, not used in %s", [table, column, concat(" or ", usages)]) if {
	role == "agent"
	some [table, column, _] in column_misuse
	usages := sort({u[2] | some u in column_misuse; u[0] == table; u[1] == column})
}

column_misuse contains [table, column, usage] if {
	some [table, column, usage] in cardholder_column_uses
	usage != "output"
	not column_use_granted(table, column, usage)
}

column_use_granted(table, column, usage) if usage in object.get(config.cardholder_column_grants, [table, column], [])

# filter_eq_param (column = $n, one guess per execution) is the narrowest
# filter: a grant of filter covers it, a grant of filter_eq_param alone
# allows nothing wider.
column_use_granted(table, column, "filter_eq_param") if "filter" in object.get(config.cardholder_column_grants, [table, column], [])

# statement_columns holds [table, column, usages, statement index in nodes]
# for the column entries of all statements ("" for a table sqlclass could not
# tell).
statement_columns contains [object.get(col, "table", ""), object.get(col, "column", ""), object.get(col, "usage", []), i] if {
	some i, node in nodes
	some col in node.columns
}

# cardholder_column_uses holds [table, column, usage] for every use of a
# cardholder-data column by any statement, run or not. "*" stands for a whole
# table. A column sqlclass could not attribute to a table counts for every
# cardholder-data table with a column of that name; an unattributed "*" for
# every cardholder-data table the statement reads.
cardholder_column_uses contains [table, column, usage] if {
	some [table, column, usages, _] in statement_columns
	table != ""
	cardholder_column(table, column)
	some usage in usages
}

cardholder_column_uses contains [table, column, usage] if {
	some ["", column, usages, _] in statement_columns
	column != "*"
	some table, columns in cardholder_tables
	columns[column]
	some usage in usages
}

cardholder_column_uses contains [table, "*", usage] if {
	some ["", "*", usages, i] in statement_columns
	some table in nodes[i].reads
	cardholder_tables[table]
	some usage in usages
}

cardholder_column(table, "*") if cardholder_tables[table]

cardholder_column(table, column) if cardholder_tables[table][column]

# ---------------------------------------------------------------------------
# Effects: anything that writes or has a side effect needs approval, whatever
# the role.

sql_approvals contains reason if {
	some node in effect_nodes
	some table in node.writes
	reason := sprintf("writes to %s require approval from %s", [table, approvers])
}

sql_approvals contains sprintf("%s approval from %s", [text, approvers]) if {
	some node in effect_nodes
	some flag, text in flag_texts
	flag in node.flags
}

sql_approvals contains sprintf("functions with side effects require approval from %s (calls %s)", [approvers, functions_text(node.functions)]) if {
	some node in effect_nodes
	"side_effect_function" in node.flags
}

# A function custos cannot prove read-only (a user function, or a built-in's
# name the catalog resolves to a user function too) may do anything, also
# where its command changes nothing by itself: DECLARE runs the cursor's
# query, SELECT from a view what the view's body calls.
sql_approvals contains sprintf("functions custos cannot prove read-only require approval from %s (calls %s)", [approvers, functions_text(node.functions)]) if {
	some node in effect_nodes
	"unknown_function" in node.flags
}

sql_approvals contains sprintf("%s cannot be analysed and requires approval from %s", [opaque_label(node.command), approvers]) if {
	some node in effect_nodes
	"opaque" in node.flags
}

sql_approvals contains sprintf("%s require approval from %s", [command_label(node.command), approvers]) if {
	some node in effect_nodes
	node.command in effect_commands
	not has_any(node.writes)
}

# Anything else that sqlclass does not call read-only, as a last resort.
sql_approvals contains sprintf("%s is not read-only and requires approval from %s", [node_label(node.command), approvers]) if {
	some i, node in effect_nodes
	node.read_only != true
	not node.command in session_commands
	not i in specific_effects
}

# effect_nodes are the statements whose own effects count: not a wrapper (its
# wrapped statement counts instead when it runs), not an allow-listed
# function call.
effect_nodes := [node |
	some node in runs
	not wrapper(node.command, is_object(node.explains), is_object(node.prepared))
	not allowed_function_call(node.command, node.functions)
]

# A wrapper's effects are those of the statement it wraps.
wrapper("EXPLAIN", true, _) := true

wrapper("EXECUTE", _, true) := true

wrapper("PREPARE", _, true) := true

# specific_effects holds the indexes in effect_nodes of the statements that
# one of the rules above (or a guarded operation) names.
specific_effects contains i if {
	some i, node in effect_nodes
	specific_effect(node.command, node.ddl, node.flags)
}

specific_effects contains i if {
	some i, node in effect_nodes
	has_any(node.writes)
}

specific_effects contains i if {
	some i, node in effect_nodes
	some f in node.functions
	denied_function(f)
}

specific_effects contains i if {
	some i, node in effect_nodes
	node.command != "SHOW"
	some s in node.settings
	lower(s) in read_only_settings
}

specific_effect(_, true, _) := true

specific_effect(command, _, _) if command in privilege_commands

specific_effect("FUNCTION CALL", _, _) := true

specific_effect(command, _, _) if command in effect_commands

specific_effect(_, _, flags) if {
	some flag in flags
	flag in effect_flags
}

effect_flags := object.keys(flag_texts) | {
	"copy_file", "copy_program", "dangerous_function", "opaque",
	"sets_read_only", "side_effect_function", "unknown_function",
}

flag_texts := {
	"copy_from": "COPY FROM requires",
	"data_modifying_cte": "data-modifying WITH clauses require",
	"for_update": "row locks (FOR UPDATE / FOR SHARE) require",
	"select_into": "SELECT INTO requires",
}

opaque_label("EXECUTE") := "EXECUTE of a statement custos did not see prepared"

opaque_label(command) := sprintf("%s statement", [command]) if command != "EXECUTE"

command_label("DO") := "DO blocks"

command_label("CALL") := "procedure calls (CALL)"

command_label(command) := sprintf("%s statements", [command]) if not command in {"DO", "CALL"}

node_label(command) := sprintf("%s statement", [command]) if {
	is_string(command)
	command != ""
}

else := "statement"

# ---------------------------------------------------------------------------
# Masking.

sql_mask := {
	"columns": mask_columns,
	"json_paths": {},
	"detect_pan": true,
	"reveal": config.reveal,
}

# Tables the batch touches in any way.
touched_tables contains table if {
	some node in nodes
	some table in node.reads
}

touched_tables contains table if {
	some node in nodes
	some table in node.writes
}

touched_tables contains table if {
	some [table, _, _, _] in statement_columns
	table != ""
}

# mask_rules holds [column, strategy] for the columns of the cardholder-data
# tables the batch touches, and for columns sqlclass could not attribute to a
# table that share a cardholder-data column's name.
mask_rules contains [column, strategy] if {
	some table in touched_tables
	some column, strategy in cardholder_tables[table]
}

mask_rules contains [column, strategy] if {
	some ["", column, _, _] in statement_columns
	some columns in cardholder_tables
	strategy := columns[column]
}

# A column name with rules from several tables gets the strictest one.
mask_columns := {column: strictest(strategies) |
	some [column, _] in mask_rules
	strategies := {s | some [c, s] in mask_rules; c == column}
}

strictness := ["drop", "null", "redact", "hmac", "last4", "bin_last4"]

# strictest is the strictest of a column's strategies, or an unknown one,
# which custos then refuses.
strictest(strategies) := unknown[0] if {
	unknown := sort([s | some s in strategies; not s in strictness])
	count(unknown) > 0
} else := [s | some s in strictness; s in strategies][0]

# ---------------------------------------------------------------------------
# COPY to the client. COPY has no RowDescription: custos masks its rows by
# the table's columns (COPY table TO STDOUT) and by detection, parsing them
# by the statement's format options. Options only shape the bytes, and a
# client choosing them (QUOTE '9', DELIMITER, NULL, ESCAPE, ENCODING) can
# wrap or split a card number: agents get the formats and HEADER only on
# cardholder data. A COPY (query) has no column origins custos can follow,
# so none may carry sensitive authentication data, whoever asks.

# copy_allowed_options are the COPY options agents may give on cardholder data.
copy_allowed_options := {"format", "header"}

copy_formats := {"text", "csv", "binary"}

# copies holds [statement index in runs, copy] for the COPY ... TO the client
# statements that run.
copies contains [i, cp] if {
	some i, node in runs
	node.command == "COPY"
	cp := object.get(node, "copy", null)
	is_object(cp)
	object.get(cp, "direction", "") == "to"
	object.get(cp, "target", "") == "client"
}

# copy_cardholder_tables are the cardholder-data tables a COPY reads.
copy_cardholder_tables(i) := {table |
	some table in runs[i].reads
	cardholder_tables[table]
}

sql_denials contains sprintf("COPY option %s is not allowed for agents on cardholder data (%s): only FORMAT text, csv or binary and HEADER", [upper(option), concat(", ", sort(tables))]) if {
	role == "agent"
	some [i, cp] in copies
	tables := copy_cardholder_tables(i)
	count(tables) > 0
	some option in object.get(cp, "options", [])
	not option in copy_allowed_options
}

sql_denials contains sprintf("COPY format %v is not allowed for agents on cardholder data (%s)", [object.get(cp, "format", null), concat(", ", sort(tables))]) if {
	role == "agent"
	some [i, cp] in copies
	tables := copy_cardholder_tables(i)
	count(tables) > 0
	not object.get(cp, "format", null) in copy_formats
}

sql_denials contains sprintf("COPY (query) would send sensitive authentication data (%s); COPY the table or SELECT, which drop it", [concat(", ", sort(columns))]) if {
	some [i, cp] in copies
	object.get(cp, "query", false) == true
	columns := {sprintf("%s.%s", [table, column]) | some [table, column] in copy_sad_uses(i)}
	count(columns) > 0
}

# copy_sad_uses(i) holds [table, column] for the uses, in any clause, of a
# column the policy drops or nulls (sensitive authentication data) by the
# COPY statement runs[i]: named, through "*", or unattributed by name.
copy_sad_uses(i) := {[table, column] |
	some col in runs[i].columns
	[table, column] := copy_sad_column(i, object.get(col, "table", ""), object.get(col, "column", ""))[_]
}

copy_sad_column(_, table, column) := [[table, column]] if {
	table != ""
	cardholder_tables[table][column] in sad_strategies
}

copy_sad_column(_, table, "*") := [[table, column] |
	some column, strategy in cardholder_tables[table]
	strategy in sad_strategies
] if table != ""

copy_sad_column(i, "", column) := [[table, column] |
	some table in runs[i].reads
	cardholder_tables[table][column] in sad_strategies
] if column != "*"

copy_sad_column(i, "", "*") := [[table, column] |
	some table in runs[i].reads
	some column, strategy in cardholder_tables[table]
	strategy in sad_strategies
]

# sad_strategies are the strategies that never show a value.
sad_strategies := {"drop", "null"}
