package pgfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
)

// cardsColumns are the columns of the test table public.cards.
var cardsColumns = []attr{{"id", oidInt8}, {"pan", oidText}, {"cvv", oidText}, {"holder", oidText}}

// copyMasker is a masker whose catalog knows public.cards only.
func copyMasker(t testing.TB) *resultMasker {
	t.Helper()
	rm := newTestMasker(t)
	rm.tableColumns = func(_ context.Context, schema, table string) ([]attr, error) {
		if schema == "public" && table == "cards" {
			return cardsColumns, nil
		}
		return nil, nil
	}
	return rm
}

// copyResult is what a client gets for one COPY: the CopyData bytes relayed
// and the message that ends the statement ('C', or 'E' when withheld).
type copyResult struct {
	data []byte
	end  byte
	msg  string
}

// runCopy sends query, then a CopyOutResponse for ncols columns, the chunks
// as CopyData, CopyDone and CommandComplete through the masker.
func runCopy(t testing.TB, rm *resultMasker, query string, binaryFormat bool, ncols int, chunks ...[]byte) copyResult {
	t.Helper()
	ctx := context.Background()
	if query != "" {
		if err := rm.client(&Message{Type: 'Q', Body: append([]byte(query), 0)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := []byte{0}
	if binaryFormat {
		h[0] = 1
	}
	h = binary.BigEndian.AppendUint16(h, uint16(ncols))
	for range ncols {
		h = binary.BigEndian.AppendUint16(h, uint16(h[0]))
	}
	var res copyResult
	send := func(typ byte, body []byte) (*Message, Verdict) {
		m := &Message{Type: typ, Body: bytes.Clone(body)}
		v, err := rm.server(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return m, v
	}
	send('H', h)
	for _, c := range chunks {
		if m, v := send('d', c); v == Forward {
			res.data = append(res.data, m.Body...)
		}
	}
	send('c', nil)
	m, _ := send('C', []byte("COPY 1\x00"))
	res.end = m.Type
	if m.Type == 'E' {
		res.msg = string(m.Body)
	}
	send('Z', []byte("I"))
	return res
}

func TestCopyMaskRows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		query  string
		binary bool
		ncols  int
		chunks []string
		want   string // the relayed bytes; "" with fail
		fail   string // part of the error that replaces the completion
	}{
		{name: "text", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t4242424242424242\t123\tAda\n"},
			want:   "1\t************4242\t\\N\tAda\n"},
		{name: "text without a card", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t\\N\t\\N\tAda\\tL\n"},
			want:   "1\t\\N\t\\N\tAda\\tL\n"},
		{name: "text, two rows in one message", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t4242424242424242\t123\tAda\n2\t5555555555554444\t9876\tBob\n"},
			want:   "1\t************4242\t\\N\tAda\n2\t************4444\t\\N\tBob\n"},
		{name: "text, a row over three messages", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t4242", "42424242424", "2\t123\tAda\n"},
			want:   "1\t************4242\t\\N\tAda\n"},
		{name: "text, a card in free text", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t\\N\t\\N\tcard 4242 4242 4242 4242 ok\n"},
			want:   "1\t\\N\t\\N\tcard **** **** **** 4242 ok\n"},
		{name: "text, a card split by an escape", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t\\N\t\\N\tx\\\\4242424242424242\\n\n"},
			want:   "1\t\\N\t\\N\tx\\\\************4242\\n\n"},
		{name: "text, the delimiter in the masked value", query: "COPY cards TO STDOUT (DELIMITER '*')", ncols: 4,
			chunks: []string{"1*4242424242424242*123*Ada\n"},
			want:   "1*\\*\\*\\*\\*\\*\\*\\*\\*\\*\\*\\*\\*4242*\\N*Ada\n"},
		{name: "text, a custom NULL", query: "COPY cards TO STDOUT (NULL 'none')", ncols: 4,
			chunks: []string{"1\tnone\t123\tAda\n"},
			want:   "1\tnone\tnone\tAda\n"},
		{name: "text, header", query: "COPY cards TO STDOUT (HEADER)", ncols: 4,
			chunks: []string{"id\tpan\tcvv\tholder\n", "1\t4242424242424242\t123\tAda\n"},
			want:   "id\tpan\tcvv\tholder\n1\t************4242\t\\N\tAda\n"},
		{name: "text, a header that does not match", query: "COPY cards TO STDOUT (HEADER)", ncols: 4,
			chunks: []string{"1\t4242424242424242\t123\tAda\n"},
			fail:   "header"},
		{name: "text, a column list", query: "COPY cards (cvv, pan) TO STDOUT", ncols: 2,
			chunks: []string{"123\t4242424242424242\n"},
			want:   "\\N\t************4242\n"},
		{name: "text, an unknown column", query: "COPY cards (nope) TO STDOUT", ncols: 1,
			chunks: []string{"x\n"}, fail: "not in the table"},
		{name: "text, an unknown table", query: "COPY other TO STDOUT", ncols: 1,
			chunks: []string{"x\n"}, fail: "look up"},
		{name: "text, too few columns", query: "COPY cards TO STDOUT", ncols: 3,
			chunks: []string{"1\t2\t3\n"}, fail: "do not match"},
		{name: "text, a row with the wrong field count", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t2\t3\n"}, fail: "columns"},
		{name: "text, an escape PostgreSQL never writes", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t\\x34242424242424242\t\\N\tAda\n"}, fail: "malformed"},
		{name: "text, a NULL marker that is a card", query: "COPY cards TO STDOUT (NULL '4242424242424242')", ncols: 4,
			chunks: []string{"1\t4242424242424242\t123\tAda\n"}, fail: "NULL"},
		{name: "text, ends inside a row", query: "COPY cards TO STDOUT", ncols: 4,
			chunks: []string{"1\t4242424242424242"}, fail: "ends inside a row"},
		{name: "text, an encoding with ASCII inside characters", query: "COPY cards TO STDOUT (ENCODING 'SJIS')", ncols: 4,
			chunks: []string{"1\t\\N\t\\N\tAda\n"}, fail: "ENCODING"},
		{name: "text, latin1", query: "COPY cards TO STDOUT (ENCODING 'LATIN1')", ncols: 4,
			chunks: []string{"1\t4242424242424242\t123\tAda\n"},
			want:   "1\t************4242\t\\N\tAda\n"},
		{name: "csv", query: "COPY cards TO STDOUT (FORMAT csv)", ncols: 4,
			chunks: []string{"1,4242424242424242,123,\"Ada, L\"\n"},
			want:   "1,\"************4242\",,\"Ada, L\"\n"},
		{name: "csv, header", query: "COPY cards TO STDOUT (FORMAT csv, HEADER true)", ncols: 4,
			chunks: []string{"id,pan,cvv,holder\n1,4242424242424242,123,Ada\n"},
			want:   "id,pan,cvv,holder\n1,\"************4242\",,Ada\n"},
		{name: "csv, QUOTE a digit", query: "COPY cards TO STDOUT (FORMAT csv, QUOTE '2')", ncols: 4,
			chunks: []string{"1,24224224224224224224224222,212232,Ada\n"},
			want:   "1,2************4224222,,Ada\n"},
		{name: "csv, DELIMITER a digit", query: "COPY cards TO STDOUT (FORMAT csv, DELIMITER '4')", ncols: 4,
			chunks: []string{"14\"4242424242424242\"41234Ada\n"},
			want:   "14\"************4242\"44Ada\n"},
		{name: "csv, an ESCAPE", query: "COPY cards TO STDOUT (FORMAT csv, ESCAPE 'e', FORCE_QUOTE *)", ncols: 4,
			chunks: []string{"\"1\",\"4242424242424242\",\"123\",\"Adeee\"x\"\n"},
			want:   "\"1\",\"************4242\",,\"Adeee\"x\"\n"},
		{name: "csv, a newline inside quotes over two messages", query: "COPY cards TO STDOUT (FORMAT csv)", ncols: 4,
			chunks: []string{"1,,,\"4242424242424242\n", "x\"\n"},
			want:   "1,,,\"************4242\nx\"\n"},
		{name: "csv, a quote inside an unquoted field", query: "COPY cards TO STDOUT (FORMAT csv)", ncols: 4,
			chunks: []string{"1,42\"42,,Ada\n"}, fail: "malformed"},
		{name: "csv, text after a closing quote", query: "COPY cards TO STDOUT (FORMAT csv)", ncols: 4,
			chunks: []string{"1,\"42\"42,,Ada\n"}, fail: "malformed"},
		{name: "query, SAD named by its header", query: "COPY (SELECT * FROM x) TO STDOUT (HEADER)", ncols: 2,
			chunks: []string{"card_cvv\tnote\n", "123\t4242424242424242\n"},
			want:   "card_cvv\tnote\n\\N\t************4242\n"},
		{name: "query, no header", query: "COPY (SELECT 1) TO STDOUT", ncols: 2,
			chunks: []string{"123\t{\"cvv\": \"123\", \"n\": \"4242424242424242\"}\n"},
			want:   "123\t{\"cvv\": null, \"n\": \"************4242\"}\n"},
		{name: "no statement seen", ncols: 1, chunks: []string{"x\n"}, fail: "which COPY"},
		{name: "format not the statement's", query: "COPY cards TO STDOUT", binary: true, ncols: 4,
			chunks: []string{"x"}, fail: "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rm := copyMasker(t)
			var chunks [][]byte
			for _, c := range tt.chunks {
				chunks = append(chunks, []byte(c))
			}
			res := runCopy(t, rm, tt.query, tt.binary, tt.ncols, chunks...)
			if tt.fail != "" {
				if res.end != 'E' || !strings.Contains(res.msg, tt.fail) {
					t.Fatalf("completion %c %q, want an error about %q", res.end, res.msg, tt.fail)
				}
				if mask.Contains(res.data) {
					t.Errorf("a card relayed before the error: %q", res.data)
				}
				return
			}
			if res.end != 'C' {
				t.Fatalf("completion %c %q", res.end, res.msg)
			}
			if string(res.data) != tt.want {
				t.Errorf("relayed\n got %q\nwant %q", res.data, tt.want)
			}
		})
	}
}

// binaryCopy builds a binary COPY stream of rows (nil: NULL).
func binaryCopy(rows ...[][]byte) []byte {
	b := append([]byte(nil), binarySignature...)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 4)
	b = append(b, "ext!"...)
	for _, r := range rows {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		for _, v := range r {
			if v == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

func TestCopyMaskBinary(t *testing.T) {
	t.Parallel()
	id := binary.BigEndian.AppendUint64(nil, 4242424242424242)
	in := binaryCopy(
		[][]byte{id, []byte("4242424242424242"), []byte("123"), []byte("Ada")},
		[][]byte{binary.BigEndian.AppendUint64(nil, 2), nil, nil, []byte("Bob")},
	)
	want := binaryCopy(
		[][]byte{binary.BigEndian.AppendUint64(nil, 1000000000004242), []byte("************4242"), nil, []byte("Ada")},
		[][]byte{binary.BigEndian.AppendUint64(nil, 2), nil, nil, []byte("Bob")},
	)
	// Whole, and split at every byte: the same bytes reach the client.
	for cut := 0; cut <= len(in); cut++ {
		rm := copyMasker(t)
		chunks := [][]byte{in}
		if cut > 0 && cut < len(in) {
			chunks = [][]byte{in[:cut], in[cut:]}
		}
		res := runCopy(t, rm, "COPY cards TO STDOUT (FORMAT binary)", true, 4, chunks...)
		if res.end != 'C' {
			t.Fatalf("cut %d: completion %c %q", cut, res.end, res.msg)
		}
		if masked := mask.Contains(res.data); masked || !bytes.Equal(res.data[:len(res.data)-2], want[:len(want)-2]) {
			t.Fatalf("cut %d: relayed\n got %q\nwant %q", cut, res.data, want)
		}
	}
	for name, bad := range map[string][]byte{
		"signature":          append([]byte("PGCOPY\n\xfe\r\n\x00"), make([]byte, 8)...),
		"field count":        binaryCopy([][]byte{id}),
		"negative length":    append(binaryCopy()[:23], 0, 4, 0xff, 0xff, 0xff, 0xf0),
		"after the trailer":  append(binaryCopy(), 0, 4),
		"ends inside a row":  binaryCopy()[:len(binaryCopy())-2],
		"ends in the header": binarySignature[:5],
	} {
		rm := copyMasker(t)
		res := runCopy(t, rm, "COPY cards TO STDOUT (FORMAT binary)", true, 4, bad)
		if res.end != 'E' {
			t.Errorf("%s: completion %c, want an error", name, res.end)
		}
	}
}

// TestCopyMaskSplits relays text and csv rows split at every byte: the
// client gets the same bytes as from one message.
func TestCopyMaskSplits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ query, in string }{
		{"COPY cards TO STDOUT (HEADER)", "id\tpan\tcvv\tholder\n1\t4242424242424242\t123\tA\\\\d\\ta\n2\t\\N\t\\N\tx\n"},
		{"COPY cards TO STDOUT (FORMAT csv, QUOTE '2', HEADER)", "id,pan,cvv,holder\n1,24224224224224224224224222,212232,2A,\nb2\n"},
		{"COPY cards TO STDOUT (FORMAT csv, ESCAPE '!')", "1,\"4242424242424242\",\"!\"123\",\"!!x\"\n"},
	} {
		whole := runCopy(t, copyMasker(t), tc.query, false, 4, []byte(tc.in))
		if whole.end != 'C' || mask.Contains(whole.data) {
			t.Fatalf("%s: %c %q %q", tc.query, whole.end, whole.msg, whole.data)
		}
		for cut := 1; cut < len(tc.in); cut++ {
			res := runCopy(t, copyMasker(t), tc.query, false, 4, []byte(tc.in[:cut]), []byte(tc.in[cut:]))
			if res.end != 'C' || !bytes.Equal(res.data, whole.data) {
				t.Fatalf("%s cut at %d: %c %q\n got %q\nwant %q", tc.query, cut, res.end, res.msg, res.data, whole.data)
			}
		}
	}
}

func TestAsciiSafeEncoding(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"UTF8": true, "utf-8": true, "LATIN1": true, "iso_8859_5": true, "WIN1252": true, "EUC_JP": true, "SQL_ASCII": true,
		"SJIS": false, "Shift_JIS_2004": false, "BIG5": false, "GBK": false, "GB18030": false, "UHC": false, "JOHAB": false,
		"latin": false, "": false, "win932": false,
	} {
		if got := asciiSafeEncoding(name); got != want {
			t.Errorf("asciiSafeEncoding(%q) = %v, want %v", name, got, want)
		}
	}
}

// FuzzCopyRows feeds arbitrary COPY data, in arbitrary pieces, under
// arbitrary options: the masker must never panic, and what it relays,
// parsed back by PostgreSQL's rules, holds no test card and nothing in the
// CVV column.
func FuzzCopyRows(f *testing.F) {
	f.Add(uint8(0), []byte("1\t4242424242424242\t123\tAda\n"), uint16(3))
	f.Add(uint8(1), []byte("1,\"4242424242424242\",123,\"A\nda\"\n"), uint16(9))
	f.Add(uint8(2), []byte("1,24224224224224224224224222,212232,Ada\n"), uint16(20))
	f.Add(uint8(3), binaryCopy([][]byte{[]byte("1"), []byte("4242424242424242"), []byte("123"), []byte("Ada")}), uint16(7))
	f.Add(uint8(4), []byte("1*4242424242424242*123*Ada\n"), uint16(0))
	f.Add(uint8(5), []byte("14\"4242424242424242\"41234Ada\n"), uint16(30))
	queries := []string{
		"COPY cards TO STDOUT",
		"COPY cards TO STDOUT (FORMAT csv)",
		"COPY cards TO STDOUT (FORMAT csv, QUOTE '2')",
		"COPY cards TO STDOUT (FORMAT binary)",
		"COPY cards TO STDOUT (DELIMITER '*', HEADER)",
		"COPY cards TO STDOUT (FORMAT csv, ESCAPE 'e', DELIMITER '4')",
		"COPY (SELECT 1) TO STDOUT (FORMAT csv, HEADER)",
	}
	f.Fuzz(func(t *testing.T, qi uint8, data []byte, cut uint16) {
		q := queries[int(qi)%len(queries)]
		rm := copyMasker(t)
		chunks := [][]byte{data}
		if c := int(cut); c > 0 && c < len(data) {
			chunks = [][]byte{data[:c], data[c:]}
		}
		bin := strings.Contains(q, "binary")
		res := runCopy(t, rm, q, bin, 4, chunks...)
		if bin || len(res.data) == 0 {
			return
		}
		// Parse the relayed bytes back with a fresh parser.
		check := copyMasker(t)
		if err := check.client(&Message{Type: 'Q', Body: append([]byte(q), 0)}, nil); err != nil {
			t.Fatal(err)
		}
		op, _ := check.front()
		cp := &copyStream{}
		if cp.configure(op.copies.take(), 0) != "" {
			return
		}
		header := cp.header
		rest := res.data
		for len(rest) > 0 {
			var n int
			var complete bool
			var reason string
			if cp.format == copyText {
				n, complete, reason = cp.splitText(rest)
			} else {
				n, complete, reason = cp.splitCSV(rest)
			}
			if reason != "" || !complete {
				t.Fatalf("relayed bytes do not parse (%s): %q", reason, res.data)
			}
			for i, raw := range cp.raw {
				quoted := cp.format == copyCSV && cp.quoted[i]
				null := !quoted && bytes.Equal(raw, cp.null)
				if null {
					continue
				}
				v, ok := cp.unescape(raw, quoted)
				if !ok {
					t.Fatalf("relayed field does not unescape: %q", raw)
				}
				if mask.Contains(v) {
					t.Fatalf("clear card in %q", res.data)
				}
				if !header && i == 2 && !strings.Contains(q, "SELECT") {
					t.Fatalf("CVV column relayed: %q in %q", v, res.data)
				}
			}
			header = false
			rest = rest[n:]
		}
	})
}

// TestCopyMaskStatementFlows: each CopyOutResponse takes its own statement,
// in a multi-statement query and through a prepared statement.
func TestCopyMaskStatementFlows(t *testing.T) {
	t.Parallel()
	rm := copyMasker(t)
	// Two COPYs in one query: the second, csv with a column list.
	if err := rm.client(&Message{Type: 'Q', Body: []byte("COPY cards TO STDOUT; COPY cards (cvv, pan) TO STDOUT (FORMAT csv)\x00")}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	relay := func(typ byte, body string) *Message {
		m := &Message{Type: typ, Body: []byte(body)}
		if _, err := rm.server(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	relay('H', "\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00")
	if m := relay('d', "1\t4242424242424242\t123\tAda\n"); string(m.Body) != "1\t************4242\t\\N\tAda\n" {
		t.Errorf("first of two: %q", m.Body)
	}
	relay('c', "")
	relay('C', "COPY 1\x00")
	relay('H', "\x00\x00\x02\x00\x00\x00\x00")
	if m := relay('d', "123,4242424242424242\n"); string(m.Body) != ",\"************4242\"\n" {
		t.Errorf("second of two: %q", m.Body)
	}
	relay('c', "")
	if m := relay('C', "COPY 1\x00"); m.Type != 'C' {
		t.Errorf("second completion %c", m.Type)
	}
	relay('Z', "I")

	// Extended protocol: Parse, ParseComplete, Bind, Execute.
	rm = copyMasker(t)
	for _, m := range []*Message{
		{Type: 'P', Body: []byte("s1\x00COPY cards (cvv) TO STDOUT\x00\x00\x00")},
		{Type: 'S'},
	} {
		if err := rm.client(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	relay('1', "")
	relay('Z', "I")
	var sent []pgproto3.FrontendMessage
	for _, m := range []*Message{
		{Type: 'B', Body: []byte("\x00s1\x00\x00\x00\x00\x00\x00\x00")},
		{Type: 'E', Body: []byte("\x00\x00\x00\x00\x00")},
		{Type: 'S'},
	} {
		if err := rm.client(m, recordConn{&sent}); err != nil {
			t.Fatal(err)
		}
	}
	// The server answers in order: BindComplete, then the Describe
	// custos sent for the portal (NoData: a COPY returns no rows).
	relay('2', "")
	if v, err := rm.server(ctx, &Message{Type: 'n'}); err != nil || v != Drop {
		t.Fatalf("the internal Describe's NoData: %v %v, want it dropped", v, err)
	}
	relay('H', "\x00\x00\x01\x00\x00")
	if m := relay('d', "123\n"); string(m.Body) != "\\N\n" {
		t.Errorf("extended protocol: %q", m.Body)
	}
	relay('c', "")
	if m := relay('C', "COPY 1\x00"); m.Type != 'C' {
		t.Errorf("extended completion %c %q", m.Type, m.Body)
	}
}
