// Package audit records custos' audit evidence: one event per
// decision-bearing action, in an append-only, hash-chained journal with
// signed checkpoints, exported as OpenTelemetry logs from the journal.
//
// # Events
//
// An [Event] carries what PCI DSS 10.2.2 asks of each record: who (user.id,
// and enduser.id for the human an agent acts for), the event type
// (EventName), when (Timestamp), success or failure (custos.outcome,
// db.response.status_code, http.response.status_code), where from
// (client.address) and the resource (custos.resource, db.namespace,
// db.collection.name, url.path). Attribute names follow the OpenTelemetry
// semantic conventions, version [SemconvVersion]; what they do not cover is
// under custos.*. Journal records map one to one onto the OTel log data
// model: EventName, Timestamp, SeverityNumber, attributes, TraceId/SpanId;
// log.record.uid is "<journal id>-<seq>" ([UID]), the same on every
// re-send.
//
// # No clear PAN
//
// Every string attribute is scrubbed before it is encoded ([Scrubber]): a
// PAN becomes "[PAN hmac-sha256=<hex> last4=NNNN]" (HMAC-SHA256 under the
// fingerprint key, mask.Fingerprint), track data is removed, and the count
// is recorded in custos.pan.scrubbed. Raw texts that may hold PANs (SQL
// literals, bound parameters) go in Event.PANSources: only their PANs'
// fingerprints are kept (custos.pan.fingerprints). The encoded record is
// checked once more as a whole; if it still holds anything that looks like
// a PAN (an integer attribute, say) Append refuses it with [ErrClearPAN].
//
// # Files
//
// Under DataDir/audit:
//
//	journal.id                 32 hex digits naming this journal
//	segments/<20-digit seq>.jsonl  records, one per line; the name is the seq of its first record
//	checkpoints.jsonl          signed checkpoints, one JSON object per line: {"note":"<signed note>"}
//	signing.key, .pub          Ed25519 checkpoint key (0600) and its verifier key, when generated
//	fingerprint.key            PAN fingerprint HMAC key (0600), when generated
//	journal.lock               flock held by the writing process
//	quarantine/                torn tails cut off at open, kept as found
//	export.cursor              OTLP export position (see Exporter)
//
// A segment is closed when it reaches Options.SegmentBytes; the next batch
// starts a new one. A record never spans two segments.
//
// # Segments
//
// The open segment is filled with zeros ahead of its records, a megabyte
// at a time (its reserve): a record overwrites blocks that are already
// allocated and written, so the fdatasync of a group commit flushes the
// record's data and the disk cache, without a file system journal commit
// for the file's new size each time, about half the cost on an ext4 disk.
// A record never holds a zero byte (JSON escapes it), so readers end a
// segment at its first zero when only zeros follow. Zeros followed by more
// data are no reserve: Verify names them, and Open treats them as a bad
// line (see Recovery). The reserve is cut when the segment is left for
// the next one and at Close, and at Open after a crash.
//
// # Record encoding
//
// A record is one line of UTF-8 JSON ending in '\n', in this canonical
// form and no other (the decoder re-encodes and compares byte for byte):
//
//	{"v":1,"seq":N,"prev_hash":"<64 hex>","time":"<T>","event":"<name>","severity":S,
//	 ["trace_id":"<32 hex>",]["span_id":"<16 hex>",]"attrs":{<attrs>},"hash":"<64 hex>"}
//
// without whitespace, members in exactly this order; trace_id and span_id
// are left out when unset. seq counts from 1 with no gaps; N and S are
// decimal integers without leading zeros. T is UTC with exactly nine
// fractional digits (2006-01-02T15:04:05.000000000Z). Hex is lowercase.
// attrs is an object whose keys are unique and sorted by their bytes; a
// value is a string, a decimal integer (int64), true/false, or an array
// of strings. Strings escape '"' and '\' with a backslash, newline, carriage
// return and tab as \n \r \t, other bytes below 0x20 as \u00xx (lowercase
// hex), and nothing else: other characters, valid UTF-8, appear as they
// are.
//
// The record's body B is the line without its hash member and newline: the
// bytes up to the last `,"hash":` followed by '}'. Its hash is
//
//	hash_n = SHA-256(hash_{n-1} || B_n)
//
// where hash_{n-1} is the 32 raw bytes of the previous record's hash (32
// zero bytes for seq 1), the same value B_n holds in prev_hash. So a
// record's hash can be checked on its own, and the chain by comparing each
// prev_hash with the hash before it.
//
// # Checkpoints
//
// Every Options.CheckpointInterval, idle or not, and at Close, the writer
// signs the durable head as a C2SP signed note ([Checkpoint]): origin
// "custos.audit/<journal id>", the last seq, the base64 hash of that
// record, and the time. A checkpoint never covers a record that is not yet
// fsynced. Because checkpoints keep coming while nothing happens, a quiet
// period is provable, and records removed from the end (with their later
// checkpoints) leave the gap visible to anyone holding a copy of earlier
// checkpoints, for example in the exported logs' backend.
//
// # Durability
//
// Append returns once its record is written and fsynced. One writer
// goroutine takes every queued record, writes them with one write and one
// fsync (group commit), then answers each appender; appenders arriving
// during an fsync form the next batch. Options.CommitDelay makes a batch
// wait for more records while appends are concurrent (the batch or the
// one before held at least five records, as PostgreSQL's commit_siblings,
// and until a batch holds a lone record):
// fsyncs then start at most once per CommitDelay and each covers more
// records, which is what a disk whose fsync costs CPU needs under load; a
// few sessions' records are fsynced at once, since their round trips, not
// the fsyncs, bound them. If a write or fsync fails, the
// appenders of that batch get [ErrUnavailable] (callers fail closed); the
// next batch reopens the segment, cuts it back to its last durable size,
// and writes a custos.control.failure record (what failed, since when, how
// many appends were refused) before anything else.
//
// [Journal.Enqueue] is Append without the wait: it returns a [Pending] at
// once and its Wait says when the record is kept. pgfilter queues each
// statement's record as the statement completes and waits only before the
// client could see that completion, so that the session goes on reading
// meanwhile. [Journal.Failing] says whether the last write failed, so that
// callers can refuse to act before they would act unrecorded.
//
// Options.SyncInterval lets records that need less be kept with less:
// above zero an appender writes its record into the segment itself (no
// hand-off to the writer goroutine), which is what survives the process
// being killed or crashing. A [Written] record ([Journal.EnqueueAs]) is
// answered then, and the writer goroutine fsyncs within the interval, and
// before every checkpoint, segment change and Close. A [Synced] record
// (Append, Enqueue) is answered once a fsync covers it: its appender
// fsyncs when no fsync is running, or waits for the one running and looks
// again, so that records written meanwhile share the next fsync. Each
// record carries the durability it was kept with (AttrDurability).
// DurableSeq and the OTLP export count only fsynced records.
//
// # Recovery
//
// Open scans the last segment. A bad last line (no newline, not a record,
// or not chained to the one before) and anything after it is a torn write:
// it is moved to quarantine/, the segment is cut back, and a
// custos.control.failure record names the bytes removed and their SHA-256;
// the chain continues from the last good record. Valid records after a bad
// one that a signed checkpoint covers cannot come from a crash: Open
// refuses with [ErrCorrupt]. Every open records custos.audit.started (with
// custos.audit.unclean_shutdown when the previous run did not end with
// custos.audit.stopped), and a checkpoint that covers more than the
// journal holds is recorded as a control failure too.
//
// # Verify and export
//
// [Verify] walks all segments and names the first problem: edited (hash
// mismatch, broken prev_hash link, checkpoint disagreeing with its record),
// deleted (a gap in seq), reordered, truncated (torn tail, or a checkpoint
// covering records that are gone) and bad_signature. [Export] writes a time
// range as CSV or JSON. The [Exporter] ships records as OTLP logs from a
// persisted cursor. [WriteEvidence] writes the auditor bundle for a time
// range; [FindSession] and [WriteReplay] play a Postgres session back from its
// records (statements, decisions, approvals, masked results).//
// # Repeated authentication failures
//
// A refused token (custos.auth.failed, from ext_authz and from the
// Postgres startup) is recorded through [AuthFailures], so that a flood
// of bad tokens cannot cost an fsynced record each. The first failure of
// a key, (client.address, error.type, token fingerprint, custos.resource,
// user.id: the user a Postgres client claimed), is a record of its own,
// durable before the client is refused, as every other record; it
// carries custos.auth.token_fingerprint ([AttrTokenFingerprint]:
// HMAC-SHA256 of the raw token under a key made at process start, 128
// bits in hex, never the token; absent when there was no token). At most
// ten keys of one source and error.type get such a record per second;
// past that (a source sending a new garbage token each time), and for
// repeats of a key, attempts are counted, and once a second
// (AuthFailureOptions.Window, or after 1000 attempts of one key) written
// as aggregate records, one per error.type, resource and user.id:
//
//	custos.auth.failures.count       int: attempts the record stands for (none recorded on its own)
//	custos.auth.failures.first_time  string: RFC 3339 UTC time of the first of them
//	custos.auth.failures.last_time   string: ... and of the last
//	custos.auth.failures.sources     []string: "<address>=<count>" per source, sorted; the counts add up to count
//	custos.auth.failures.tokens      int: distinct tokens presented (0: none; past ten a second, counted up to 1000 per source)
//	custos.auth.token_fingerprint    as above, when they presented exactly one
//
// with the other fields of the first of them (outcome, error.type,
// custos.error, resource, status code, Postgres user and database) and
// client.address set to the first source; what differs per attempt
// (request id, port, path, trace) is left out. Every attempt is in the
// evidence with its source: a record without custos.auth.failures.count
// counts one, an aggregate its sources' counts. A key with no repeat
// for a minute is forgotten: its next failure is a first one again.
// Pending aggregates are written at Close, so a clean stop loses
// nothing; a crash loses at most the last window's counted attempts,
// never a first failure's record.
package audit
