package sqlclass

import (
	_ "embed"
	"strings"
	"sync"
)

// funcClass is what calling a function may do.
type funcClass int

const (
	funcReadOnly   funcClass = iota // a built-in that cannot write or have side effects
	funcUnknown                     // not a known built-in: it may do anything
	funcSideEffect                  // writes or changes state (sequences, settings, locks, large objects, ...)
	funcDangerous                   // reaches the server's files, other sessions, other servers, or runs SQL text unseen
)

// dangerousFunctions read or write server files, signal other backends, reach other servers,
// change the server's configuration or replication state, or execute SQL given as text (so
// the tables they read are invisible here).
var dangerousFunctions = setOf(
	"pg_terminate_backend", "pg_cancel_backend",
	"pg_read_file", "pg_read_file_old", "pg_read_binary_file", "pg_stat_file",
	"pg_ls_dir", "pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir",
	"pg_ls_logicalmapdir", "pg_ls_logicalsnapdir", "pg_ls_replslotdir", "pg_ls_summariesdir",
	"lo_import", "lo_export",
	"pg_reload_conf", "pg_rotate_logfile", "pg_rotate_logfile_old",
	// adminpack
	"pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_file_read",
	"pg_file_length", "pg_logdir_ls",
	// server and replication control
	"pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop",
	"pg_start_backup", "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume",
	"pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
	"pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
	"pg_drop_replication_slot", "pg_replication_slot_advance", "pg_sync_replication_slots",
	"pg_logical_slot_get_changes", "pg_logical_slot_get_binary_changes",
	"pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_advance",
	"pg_replication_origin_session_setup", "pg_replication_origin_session_reset",
	"pg_replication_origin_xact_setup", "pg_replication_origin_xact_reset",
	"pg_import_system_collations", "pg_log_backend_memory_contexts", "pg_extension_config_dump",
	"pg_stop_making_pinned_objects", "pg_nextoid",
	// SQL text executed where the parser cannot see it, or whole tables read by name
	"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
	"cursor_to_xml", "cursor_to_xmlschema",
	"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
	"schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
	"database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
	"ts_stat", "ts_rewrite", "crosstab", "crosstab2", "crosstab3", "crosstab4", "connectby",
)

// dangerousPrefixes are function families treated as dangerous by name.
var dangerousPrefixes = []string{"dblink", "binary_upgrade_", "pg_background"}

// sideEffectFunctions change state without being dangerous by themselves.
var sideEffectFunctions = setOf(
	"nextval", "setval", "set_config", "setseed",
	"pg_notify", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
	"txid_current", "pg_current_xact_id", "pg_export_snapshot",
	"pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
	"pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
	"pg_stat_reset_subscription_stats", "pg_stat_statements_reset", "pg_stat_clear_snapshot",
	"pg_stat_force_next_flush", "pg_logical_emit_message",
	"brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range",
	"gin_clean_pending_list", "pg_prewarm",
	"loread", "lowrite",
)

// sideEffectPrefixes are function families with side effects.
var sideEffectPrefixes = []string{"pg_advisory_", "pg_try_advisory_", "lo_"}

// aggregateFunctions are the built-in aggregates: a column inside them is used as aggregate.
var aggregateFunctions = setOf(
	"any_value", "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or",
	"corr", "count", "covar_pop", "covar_samp", "cume_dist", "dense_rank", "every",
	"json_agg", "json_agg_strict", "json_object_agg", "json_object_agg_strict",
	"json_object_agg_unique", "json_object_agg_unique_strict", "jsonb_agg", "jsonb_agg_strict",
	"jsonb_object_agg", "jsonb_object_agg_strict", "jsonb_object_agg_unique",
	"jsonb_object_agg_unique_strict", "max", "min", "mode", "percent_rank", "percentile_cont",
	"percentile_disc", "range_agg", "range_intersect_agg", "rank", "regr_avgx", "regr_avgy",
	"regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
	"stddev", "stddev_pop", "stddev_samp", "string_agg", "sum", "var_pop", "var_samp",
	"variance", "xmlagg",
)

//go:embed readonly_functions.txt
var readOnlyFunctionList string

var readOnlyFunctions = sync.OnceValue(func() map[string]struct{} {
	m := make(map[string]struct{}, 2600)
	for line := range strings.Lines(readOnlyFunctionList) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m[line] = struct{}{}
	}
	return m
})

// classifyFunction tells what calling schema.name may do. name is the lower-case base name;
// schema is "" when not written. Side-effecting and dangerous names are recognised in any
// schema (a same-named function elsewhere is no safer to assume); read-only built-ins only
// unqualified or in pg_catalog.
func classifyFunction(schema, name string) funcClass {
	if _, ok := dangerousFunctions[name]; ok {
		return funcDangerous
	}
	for _, p := range dangerousPrefixes {
		if strings.HasPrefix(name, p) {
			return funcDangerous
		}
	}
	if _, ok := sideEffectFunctions[name]; ok {
		return funcSideEffect
	}
	for _, p := range sideEffectPrefixes {
		if strings.HasPrefix(name, p) {
			return funcSideEffect
		}
	}
	if schema != "" && schema != "pg_catalog" {
		return funcUnknown
	}
	if _, ok := readOnlyFunctions()[name]; ok {
		return funcReadOnly
	}
	return funcUnknown
}

func isAggregate(schema, name string) bool {
	if schema != "" && schema != "pg_catalog" {
		return false
	}
	_, ok := aggregateFunctions[name]
	return ok
}

func setOf(names ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// BuiltinReadOnly tells whether name (lower case, unqualified) is a pg_catalog built-in custos
// holds read-only. It speaks of the built-in only: whether a call of the name reaches it is the
// server's resolution (search_path, overloads), which callers holding a catalog check.
func BuiltinReadOnly(name string) bool { return classifyFunction("", name) == funcReadOnly }
