package tests

// End-to-end tests of card-data masking: real PostgreSQL, real clients
// (pgx, pgconn, psql, node-postgres, postgres.js) through a masking custos
// proxy. Every assertion is on what the client received: the bytes off the
// wire (pgx and pgconn connections record everything they read), what psql
// printed, what the Node.js drivers decoded. A test-side checker, written
// independently of internal/mask, fails on any full card number in them.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// --- card numbers, computed and checked on the test side ------------------------------------------

// luhnOK reports whether the digit string d passes the Luhn check.
func luhnOK(d string) bool {
	sum, double := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i] - '0')
		if double {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

// luhnComplete appends the Luhn check digit to prefix.
func luhnComplete(prefix string) string {
	for c := byte('0'); c <= '9'; c++ {
		if d := prefix + string(c); luhnOK(d) {
			return d
		}
	}
	panic("unreachable")
}

// cardBrand says whether the digits have the IIN and length of a card brand
// (REFERENCE §7): Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
// Maestro.
func cardBrand(d string) bool {
	n := len(d)
	if n < 12 || n > 19 {
		return false
	}
	pre := func(k int) int {
		v, _ := strconv.Atoi(d[:k])
		return v
	}
	in := func(k, lo, hi int) bool { p := pre(k); return p >= lo && p <= hi }
	between := func(lo, hi int) bool { return n >= lo && n <= hi }
	switch {
	case d[0] == '4' && (n == 13 || n == 16 || n == 19):
		return true
	case (in(2, 51, 55) || in(4, 2221, 2720)) && n == 16:
		return true
	case (in(2, 34, 34) || in(2, 37, 37)) && n == 15:
		return true
	case (in(4, 6011, 6011) || in(3, 644, 649) || in(2, 65, 65) || in(6, 622126, 622925)) && between(16, 19):
		return true
	case in(4, 3528, 3589) && between(16, 19):
		return true
	case (in(3, 300, 305) || in(4, 3095, 3095) || in(2, 36, 36) || in(2, 38, 39)) && between(14, 19):
		return true
	case in(2, 62, 62) && between(16, 19):
		return true
	case (in(2, 50, 50) || in(2, 56, 69)) && between(12, 19):
		return true
	}
	return false
}

// oneDigitOrCounting: a run of one repeated digit, or counting up or down
// (0123456789012), is never a card number.
func oneDigitOrCounting(d string) bool {
	same, up, down := true, true, true
	for i := 1; i < len(d); i++ {
		a, b := d[i-1], d[i]
		same = same && a == b
		up = up && (b == a+1 || (a == '9' && b == '0'))
		down = down && (b+1 == a || (a == '0' && b == '9'))
	}
	return same || up || down
}

func panLike(d string) bool { return luhnOK(d) && cardBrand(d) && !oneDigitOrCounting(d) }

// groupDigits writes d in groups of the given sizes joined by sep.
func groupDigits(d, sep string, sizes ...int) string {
	var parts []string
	for _, s := range sizes {
		if s >= len(d) {
			break
		}
		parts = append(parts, d[:s])
		d = d[s:]
	}
	if d != "" {
		parts = append(parts, d)
	}
	return strings.Join(parts, sep)
}

type testPAN struct {
	brand, digits, formatted string
}

// maskPANs are the card numbers every fixture holds: the standard test
// numbers of every brand, and computed ones for the lengths those lack
// (12, 13, 14, 15, 16, 19 digits), each also written with separators.
var maskPANs = func() []testPAN {
	visa19 := luhnComplete("424242424242424242")
	union19 := luhnComplete("621234567890123456")
	disc19 := luhnComplete("601100099013942412")
	maestro12 := luhnComplete("50181234567")
	return []testPAN{
		{"visa", "4242424242424242", groupDigits("4242424242424242", " ", 4, 4, 4, 4)},
		{"mastercard", "5555555555554444", groupDigits("5555555555554444", "-", 4, 4, 4, 4)},
		{"amex", "378282246310005", groupDigits("378282246310005", " ", 4, 6, 5)},
		{"discover", "6011111111111117", groupDigits("6011111111111117", "-", 4, 4, 4, 4)},
		{"diners", "3056930009020004", groupDigits("3056930009020004", " ", 4, 4, 4, 4)},
		{"unionpay", "6200000000000005", groupDigits("6200000000000005", "-", 4, 4, 4, 4)},
		{"visa debit", "4000056655665556", groupDigits("4000056655665556", " ", 4, 4, 4, 4)},
		{"mastercard 2-series", "2223003122003222", groupDigits("2223003122003222", "-", 4, 4, 4, 4)},
		{"visa 13", "4222222222222", groupDigits("4222222222222", " ", 4, 4, 5)},
		{"jcb", "3530111333300000", groupDigits("3530111333300000", " ", 4, 4, 4, 4)},
		{"diners 14", "36227206271667", groupDigits("36227206271667", "-", 4, 6, 4)},
		{"discover 2", "6011000990139424", groupDigits("6011000990139424", " ", 4, 4, 4, 4)},
		{"maestro 16", "6759649826438453", groupDigits("6759649826438453", "-", 4, 4, 4, 4)},
		{"visa 19", visa19, groupDigits(visa19, " ", 4, 4, 4, 4)},
		{"unionpay 19", union19, groupDigits(union19, "-", 4, 4, 4, 4)},
		{"discover 19", disc19, groupDigits(disc19, " ", 4, 4, 4, 4)},
		{"maestro 12", maestro12, groupDigits(maestro12, " ", 4, 4)},
	}
}()

// seededPANs are the demo database's cards.
var seededPANs = []string{"4242424242424242", "5555555555554444", "378282246310005", "6011111111111117",
	"3056930009020004", "6200000000000005", "4000056655665556", "2223003122003222"}

func TestMaskTestPANsAreValid(t *testing.T) {
	t.Parallel()
	lengths := map[int]bool{}
	for _, p := range maskPANs {
		if !panLike(p.digits) {
			t.Errorf("%s %s is not a valid PAN for the test checker", p.brand, p.digits)
		}
		if got := findPANs([]byte("x " + p.formatted + " x")); len(got) == 0 {
			t.Errorf("the checker misses %q", p.formatted)
		}
		lengths[len(p.digits)] = true
	}
	for _, n := range []int{12, 13, 14, 15, 16, 19} {
		if !lengths[n] {
			t.Errorf("no %d-digit PAN in the fixtures", n)
		}
	}
	for _, s := range []string{"4242424242424241", "100000000001", "+1 415 555 0100", "2024-01-15 10:30:00+00",
		"4242 4242 4242 4241", "1000000000004242", "************4242", "550e8400-e29b-41d4-a716-446655440000"} {
		if got := findPANs([]byte(s)); len(got) != 0 {
			t.Errorf("the checker flags %q: %q", s, got)
		}
	}
}

// --- the checker --------------------------------------------------------------------------------

func isDigitByte(c byte) bool { return c >= '0' && c <= '9' }

// findPANs returns the card numbers in b: runs of digit groups joined by
// one consistent separator (space or dash), any consecutive groups of which
// hold 12 to 19 digits with a brand's IIN and length and the Luhn check.
// It is deliberately stricter than the masker: no group-size rule and no
// boundary rule but "not more digits".
func findPANs(b []byte) []string {
	var out []string
	type grp struct {
		s, e int
		sep  byte // the separator before the group
	}
	for i := 0; i < len(b); {
		if !isDigitByte(b[i]) {
			i++
			continue
		}
		var gs []grp
		j := i
		var sep byte
		for {
			k := j
			for k < len(b) && isDigitByte(b[k]) {
				k++
			}
			gs = append(gs, grp{j, k, sep})
			if k+1 < len(b) && (b[k] == ' ' || b[k] == '-') && isDigitByte(b[k+1]) {
				sep, j = b[k], k+1
				continue
			}
			j = k
			break
		}
		for a := range gs {
			var d []byte
			for c := a; c < len(gs); c++ {
				if c > a+1 && gs[c].sep != gs[a+1].sep {
					break
				}
				d = append(d, b[gs[c].s:gs[c].e]...)
				if len(d) > 19 {
					break
				}
				if len(d) >= 12 && panLike(string(d)) {
					out = append(out, string(b[gs[a].s:gs[c].e]))
				}
			}
		}
		i = j
	}
	return out
}

var (
	// A digit written as a JSON escape (\u0034 is '4'), also with COPY's
	// doubled backslash.
	jsonDigitEscape = regexp.MustCompile(`\\+u003([0-9])`)
	// bytea's hex form, with any number of backslashes before the x.
	byteaHex = regexp.MustCompile(`\\+x((?:[0-9a-fA-F]{2}){6,})`)
	// A number in scientific notation (a PAN stored as a double).
	sciNumber = regexp.MustCompile(`[0-9]\.[0-9]+[eE]\+?[0-9]+`)
)

// textViews returns b and the other ways a client would read it: JSON
// digit escapes decoded, bytea hex decoded, scientific numbers expanded.
func textViews(b []byte) [][]byte {
	views := [][]byte{b}
	if u := jsonDigitEscape.ReplaceAll(b, []byte("$1")); !bytes.Equal(u, b) {
		views = append(views, u)
	}
	for _, m := range byteaHex.FindAllSubmatch(b, -1) {
		if raw, err := hex.DecodeString(string(m[1])); err == nil {
			views = append(views, raw)
		}
	}
	for _, m := range sciNumber.FindAll(b, -1) {
		f, ok := new(big.Float).SetPrec(200).SetString(string(m))
		if ok && f.IsInt() {
			views = append(views, []byte(f.Text('f', 0)))
		}
	}
	return views
}

// binaryForms are the binary encodings of a PAN a client could decode:
// int8, float8 (when exact) and the base-10000 digits of a numeric.
func binaryForms(d string) map[string][]byte {
	forms := map[string][]byte{}
	n, err := strconv.ParseInt(d, 10, 64)
	if err == nil {
		forms["int8"] = binary.BigEndian.AppendUint64(nil, uint64(n))
		if n < 1<<53 {
			forms["float8"] = binary.BigEndian.AppendUint64(nil, math.Float64bits(float64(n)))
		}
	}
	p := d
	if r := len(p) % 4; r != 0 {
		p = strings.Repeat("0", 4-r) + p
	}
	var groups []uint16
	for i := 0; i < len(p); i += 4 {
		g, _ := strconv.Atoi(p[i : i+4])
		groups = append(groups, uint16(g))
	}
	for len(groups) > 0 && groups[len(groups)-1] == 0 {
		groups = groups[:len(groups)-1]
	}
	var num []byte
	for _, g := range groups {
		num = binary.BigEndian.AppendUint16(num, g)
	}
	if len(groups) >= 3 {
		forms["numeric digits"] = num
	}
	return forms
}

type knownForm struct {
	what string
	b    []byte
}

var knownForms = func() []knownForm {
	var out []knownForm
	add := func(d, formatted string) {
		out = append(out, knownForm{"PAN " + d, []byte(d)})
		if formatted != "" {
			out = append(out, knownForm{"PAN " + formatted, []byte(formatted)})
		}
		for k, v := range binaryForms(d) {
			out = append(out, knownForm{k + " PAN " + d, v})
		}
	}
	for _, p := range maskPANs {
		add(p.digits, p.formatted)
	}
	for _, d := range seededPANs {
		switch len(d) {
		case 15:
			add(d, groupDigits(d, " ", 4, 6, 5))
		default:
			add(d, groupDigits(d, " ", 4, 4, 4))
		}
	}
	return out
}()

// panLeaks lists the card numbers a client could read in b.
func panLeaks(b []byte) []string {
	var out []string
	for _, v := range textViews(b) {
		for _, p := range findPANs(v) {
			i := bytes.Index(v, []byte(p))
			out = append(out, fmt.Sprintf("%q in …%q…", p, v[max(0, i-40):min(len(v), i+len(p)+40)]))
		}
	}
	for _, f := range knownForms {
		for off := 0; ; {
			i := bytes.Index(b[off:], f.b)
			if i < 0 {
				break
			}
			i += off
			off = i + 1
			// A textual form with more digits glued on is another number.
			if isDigitByte(f.b[0]) && ((i > 0 && isDigitByte(b[i-1])) || (i+len(f.b) < len(b) && isDigitByte(b[i+len(f.b)]))) {
				continue
			}
			out = append(out, fmt.Sprintf("%s at byte %d: …%q…", f.what, i, b[max(0, i-40):min(len(b), i+len(f.b)+40)]))
			break
		}
	}
	return out
}

// noPAN fails t if b holds a card number.
func noPAN(t testing.TB, where string, b []byte) {
	t.Helper()
	leaks := panLeaks(b)
	if len(leaks) > 8 {
		leaks = append(leaks[:8], fmt.Sprintf("and %d more", len(leaks)-8))
	}
	for _, l := range leaks {
		t.Errorf("%s: full card number reached the client: %s", where, l)
	}
}

func noPANString(t testing.TB, where, s string) { t.Helper(); noPAN(t, where, []byte(s)) }

// --- clients that record what they receive -------------------------------------------------------

// wireLog holds every byte a connection read from custos.
type wireLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *wireLog) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.b.Bytes())
}

type recordingConn struct {
	net.Conn
	log *wireLog
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.log.mu.Lock()
		c.log.b.Write(p[:n])
		c.log.mu.Unlock()
	}
	return n, err
}

// maskEnv is a masking proxy without TLS (loopback), so that clients can
// record the cleartext protocol they receive.
func maskEnv(t *testing.T, tls bool) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, NoTLS: !tls})
}

// recordedConfig is a pgx configuration whose connection records what it
// reads, and whose log is checked for card numbers when the test ends.
func recordedConfig(t *testing.T, env *pgfiltertest.Env, user string) (*pgx.ConnConfig, *wireLog) {
	t.Helper()
	cfg, err := pgx.ParseConfig(env.ConnString(user, env.Token(t, user, "agents")))
	if err != nil {
		t.Fatal(err)
	}
	log := &wireLog{}
	var d net.Dialer
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return recordingConn{c, log}, nil
	}
	t.Cleanup(func() { noPAN(t, "everything "+user+"'s connection received", log.bytes()) })
	return cfg, log
}

func connectRecorded(t *testing.T, env *pgfiltertest.Env, user string) (*pgx.Conn, *wireLog) {
	t.Helper()
	cfg, log := recordedConfig(t, env, user)
	return connectConfig(t, cfg), log
}

// direct connects to the upstream as its superuser, past custos.
func direct(t *testing.T, env *pgfiltertest.Env) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// --- rendering what a client decoded -----------------------------------------------------------

// render writes a value pgx decoded as the text a program would show.
func render(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case []byte:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case pgtype.Numeric:
		b, err := x.MarshalJSON()
		if err != nil {
			return fmt.Sprintf("numeric(%v)", err)
		}
		return string(b)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = render(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// decodeRaw decodes one raw column value the way a client would, with the
// test's own knowledge of binary formats, and renders it as text.
func decodeRaw(oid uint32, format int16, raw []byte) string {
	if raw == nil {
		return "NULL"
	}
	if format == 0 {
		return string(raw)
	}
	// A pgtype.Map is not safe for concurrent use: one per value.
	tm := pgtype.NewMap()
	if _, ok := tm.TypeForOID(oid); ok {
		var v any
		if err := tm.Scan(oid, 1, raw, &v); err == nil {
			return render(v)
		}
	}
	if s, ok := decodeComposite(raw, 0); ok {
		return s
	}
	return string(raw)
}

// decodeComposite decodes a binary composite (record or table row type):
// a field count, then per field its type, length and value.
func decodeComposite(raw []byte, depth int) (string, bool) {
	if len(raw) < 4 || depth > 4 {
		return "", false
	}
	n := int(binary.BigEndian.Uint32(raw))
	pos := 4
	var parts []string
	for range n {
		if len(raw) < pos+8 {
			return "", false
		}
		oid := binary.BigEndian.Uint32(raw[pos:])
		l := int(int32(binary.BigEndian.Uint32(raw[pos+4:])))
		pos += 8
		if l < 0 {
			parts = append(parts, "NULL")
			continue
		}
		if len(raw) < pos+l {
			return "", false
		}
		parts = append(parts, decodeRaw(oid, 1, raw[pos:pos+l]))
		pos += l
	}
	if pos != len(raw) {
		return "", false
	}
	return "(" + strings.Join(parts, ",") + ")", true
}

// --- the fixture table ---------------------------------------------------------------------------

var maskTableSeq atomic.Int64

const (
	fixtureCVV      = "731"
	fixturePINBlock = "0412AC89FFFFFFFF"
	cleanID         = 1000
)

// The clean row holds digit runs that are not card numbers; every client
// must see it exactly as PostgreSQL sends it.
var cleanValues = map[string]string{
	"pan":     "4242424242424241",
	"pan_fmt": "+1 415 555 0100",
	"note":    "order 100000000001 placed 2024-01-15 10:30:00+00, call +1 415 555 0100, ref 4242424242424241, uuid 550e8400-e29b-41d4-a716-446655440000",
}

// fixtureColumns are the fixture's columns, in order.
const fixtureColumns = "id, label, pan, pan_fmt, pan_i8, pan_num, pan_num2, pan_f8, pans, pans_i8, doc, doc_json, cvv, pin_block, note, swipe"

// maskFixture creates a table of its own (past custos, as the superuser)
// holding every test PAN in every column type, plus the clean row, and
// returns its name. The gateway role may read and write it.
func maskFixture(t *testing.T, env *pgfiltertest.Env) string {
	t.Helper()
	name := fmt.Sprintf("mask_e2e_%d_%d", os.Getpid(), maskTableSeq.Add(1))
	ctx := testCtx(t)
	c := direct(t, env)
	if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (
		id int8 PRIMARY KEY, label text, pan text UNIQUE, pan_fmt varchar(40), pan_i8 int8, pan_num numeric,
		pan_num2 numeric(24,2), pan_f8 float8, pans text[], pans_i8 int8[], doc jsonb, doc_json json,
		cvv text, pin_block text, note text, swipe text);
		GRANT ALL ON %s TO %s`, name, name, env.Resource.User)); err != nil {
		t.Fatal(err)
	}
	ins := fmt.Sprintf(`INSERT INTO %s (%s) VALUES ($1, $2, $3, $4, $5::int8, $6::numeric, $7::numeric, $8::float8,
		$9::text[], $10::int8[], $11::jsonb, $12::json, $13, $14, $15, $16)`, name, fixtureColumns)
	for i, p := range maskPANs {
		var f8 *string
		if n, _ := strconv.ParseInt(p.digits, 10, 64); n < 1<<53 {
			f8 = &p.digits
		}
		esc := `\u003` + p.digits[:1] + p.digits[1:]
		doc := fmt.Sprintf(`{"card": {"number": "%s", "display": "%s", "n": %s}, "list": [%s, "%s"], "cvv": "%s", "order": 100000000001}`,
			p.digits, p.formatted, p.digits, p.digits, p.formatted, fixtureCVV)
		docJSON := fmt.Sprintf(`{"esc": "%s", "n": %s, "sci": %s, "nested": {"pan": "%s"}}`,
			esc, p.digits, sci(p.digits), p.formatted)
		swipe := fmt.Sprintf("%%B%s^DOE/JOHN^25121011000000000000?", p.digits)
		if i%2 == 1 {
			swipe = fmt.Sprintf(";%s=25121011000000000000?", p.digits)
		}
		if _, err := c.Exec(ctx, ins, i+1, p.brand, p.digits, p.formatted, p.digits, p.digits, p.digits, f8,
			"{"+p.digits+`,"`+p.formatted+`"}`, "{"+p.digits+",100000000001}", doc, docJSON, fixtureCVV, fixturePINBlock,
			fmt.Sprintf("called 2024-01-15 10:30:00+00, card %s, order 100000000001", p.formatted), swipe); err != nil {
			t.Fatalf("insert %s: %v", p.brand, err)
		}
	}
	if _, err := c.Exec(ctx, ins, cleanID, "clean", cleanValues["pan"], cleanValues["pan_fmt"], "100000000001",
		"4242424242424241", "100000000001.50", "1705314600000",
		`{2024-01-15,"order 100000000001","4242 4242 4242 4241"}`, "{100000000001,4242424242424241}",
		`{"order": 100000000001, "phone": "+1 415 555 0100", "at": "2024-01-15T10:30:00Z", "n": 4242424242424241, "ref": "4242-4242-4242-4241"}`,
		`{"order": 100000000001, "at": 1705314600000, "n": 4242424242424241}`, nil, nil, cleanValues["note"], nil); err != nil {
		t.Fatalf("insert the clean row: %v", err)
	}
	return name
}

// sci writes d in scientific notation, as a JSON number (4.242424242424242e15).
func sci(d string) string {
	return d[:1] + "." + d[1:] + "e" + strconv.Itoa(len(d)-1)
}

// maskedLast4 is the default display of a PAN: every digit but the last
// four replaced by '*', separators kept.
func maskedLast4(s string) string {
	n := 0
	for i := range len(s) {
		if isDigitByte(s[i]) {
			n++
		}
	}
	b := []byte(s)
	seen := 0
	for i, c := range b {
		if isDigitByte(c) {
			if seen < n-4 {
				b[i] = '*'
			}
			seen++
		}
	}
	return string(b)
}

// rowsAsText reads every row of a pgx query, rendering each value.
func rowsAsText(t *testing.T, rows pgx.Rows) (names []string, out [][]string) {
	t.Helper()
	defer rows.Close()
	for _, fd := range rows.FieldDescriptions() {
		names = append(names, fd.Name)
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = render(v)
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names, out
}

// checkFixtureRows checks rows of SELECT fixtureColumns ... ORDER BY id as
// a client decoded them: masked PANs, NULL SAD, the clean row unchanged
// (as the direct connection read it).
func checkFixtureRows(t *testing.T, where string, names []string, rows, want [][]string) {
	t.Helper()
	if len(rows) != len(maskPANs)+1 {
		t.Fatalf("%s: %d rows, want %d", where, len(rows), len(maskPANs)+1)
	}
	col := map[string]int{}
	for i, n := range names {
		col[n] = i
	}
	for i, p := range maskPANs {
		r := rows[i]
		noPANString(t, where+" "+p.brand, strings.Join(r, "|"))
		if got := r[col["pan"]]; got != maskedLast4(p.digits) {
			t.Errorf("%s %s: pan %q, want %q", where, p.brand, got, maskedLast4(p.digits))
		}
		if got := r[col["pan_fmt"]]; got != maskedLast4(p.formatted) {
			t.Errorf("%s %s: pan_fmt %q, want %q", where, p.brand, got, maskedLast4(p.formatted))
		}
		if got := r[col["pan_i8"]]; got == p.digits || len(got) != len(p.digits) || !strings.HasSuffix(got, p.digits[len(p.digits)-4:]) {
			t.Errorf("%s %s: pan_i8 %q, want a %d-digit number ending in %s", where, p.brand, got, len(p.digits), p.digits[len(p.digits)-4:])
		}
		for _, c := range []string{"cvv", "pin_block"} {
			if got := r[col[c]]; got != "NULL" {
				t.Errorf("%s %s: %s = %q, want NULL", where, p.brand, c, got)
			}
		}
		if got := r[col["swipe"]]; strings.Contains(got, "2512101") {
			t.Errorf("%s %s: track data shown: %q", where, p.brand, got)
		}
	}
	if want != nil {
		clean, wantClean := rows[len(rows)-1], want[len(want)-1]
		for i := range clean {
			if clean[i] != wantClean[i] {
				t.Errorf("%s: clean row, column %s changed:\n got %q\nwant %q", where, names[i], clean[i], wantClean[i])
			}
		}
	}
}

// --- pgx: every query mode, binary and text formats ------------------------------------------------

func TestMaskPgxQueryModes(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	d := direct(t, env)
	ctx := testCtx(t)
	q := fmt.Sprintf("SELECT %s FROM %s ORDER BY id", fixtureColumns, table)
	modes := map[string]pgx.QueryExecMode{
		"cache statement": pgx.QueryExecModeCacheStatement, "cache describe": pgx.QueryExecModeCacheDescribe,
		"describe exec": pgx.QueryExecModeDescribeExec, "exec": pgx.QueryExecModeExec, "simple": pgx.QueryExecModeSimpleProtocol,
	}
	for name, mode := range modes {
		// Twice: the second use of a cached statement carries no RowDescription.
		for round := 1; round <= 2; round++ {
			where := fmt.Sprintf("%s round %d", name, round)
			r, err := c.Query(ctx, q, mode)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			names, rows := rowsAsText(t, r)
			r, err = d.Query(ctx, q, mode)
			if err != nil {
				t.Fatal(err)
			}
			_, want := rowsAsText(t, r)
			checkFixtureRows(t, where, names, rows, want)
		}
		// With a parameter: the extended protocol's Bind carries one.
		r, err := c.Query(ctx, fmt.Sprintf("SELECT pan AS x, cvv AS y, pin_block AS z, pan_i8 AS w, pans_i8, doc FROM %s WHERE id = $1", table), mode, 1)
		if err != nil {
			t.Fatalf("%s aliases: %v", name, err)
		}
		_, rows := rowsAsText(t, r)
		if len(rows) != 1 || rows[0][0] != "************4242" || rows[0][1] != "NULL" || rows[0][2] != "NULL" || rows[0][3] == "4242424242424242" {
			t.Errorf("%s: aliased columns: %q", name, rows)
		}
	}

	t.Run("expressions", func(t *testing.T) {
		// Values computed in the query: no table column behind them, only
		// content detection. One query each, so one failure hides no other.
		exprs := []string{"pan::int8", "pan::numeric(30,4)", "pan_i8::float8", "ARRAY[pan_num, 1.5]", "to_jsonb(pan_i8)",
			"to_json(pan)", "upper(pan_fmt)", "'card ' || pan_fmt || ' exp 12/30'", "pan::bpchar(20)", "pan::name",
			"ARRAY[pan_f8]", "jsonb_build_object('a', jsonb_build_array(pan_i8, pan))", "convert_to(pan, 'UTF8')",
			"ROW(pan, pan_i8, pan_num)", "int8range(pan_i8, pan_i8, '[]')", "numrange(pan_num, pan_num, '[]')"}
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
			for _, e := range exprs {
				rows, err := c.Query(ctx, fmt.Sprintf("SELECT %s FROM %s ORDER BY id", e, table), mode)
				if err != nil {
					t.Fatalf("mode %v: %s: %v", mode, e, err)
				}
				i := 0
				for rows.Next() {
					vals, err := rows.Values()
					if err != nil {
						t.Errorf("mode %v: %s: the client cannot decode the value: %v", mode, e, err)
						break
					}
					if i < len(maskPANs) {
						noPANString(t, fmt.Sprintf("mode %v: %s, %s", mode, e, maskPANs[i].brand), render(vals[0]))
					}
					i++
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					t.Errorf("mode %v: %s: %v", mode, e, err)
				}
			}
		}
	})

	t.Run("batch", func(t *testing.T) {
		// Several statements pipelined with one Sync.
		b := &pgx.Batch{}
		b.Queue(q)
		b.Queue("SELECT $1::text AS echo, $2::int8 AS n", "card 4242 4242 4242 4242", int64(5555555555554444))
		b.Queue(fmt.Sprintf("SELECT %s FROM %s WHERE id > $1 ORDER BY id", fixtureColumns, table), 0)
		br := c.SendBatch(ctx, b)
		for i := range 3 {
			r, err := br.Query()
			if err != nil {
				t.Fatalf("batch query %d: %v", i, err)
			}
			names, rows := rowsAsText(t, r)
			if i == 1 {
				if len(rows) != 1 || rows[0][0] != "card **** **** **** 4242" || rows[0][1] == "5555555555554444" {
					t.Errorf("batch echo: %q", rows)
				}
				continue
			}
			checkFixtureRows(t, fmt.Sprintf("batch query %d", i), names, rows, nil)
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("demo cards", func(t *testing.T) {
		r, err := c.Query(ctx, "SELECT c.*, cu.note FROM cards c LEFT JOIN customers cu ON cu.card_id = c.id ORDER BY c.id")
		if err != nil {
			t.Fatal(err)
		}
		names, rows := rowsAsText(t, r)
		if len(rows) != len(seededPANs) {
			t.Fatalf("%d cards", len(rows))
		}
		for i, row := range rows {
			noPANString(t, "cards", strings.Join(row, "|"))
			for j, n := range names {
				if n == "cvv" && row[j] != "NULL" {
					t.Errorf("card %d: cvv %q", i+1, row[j])
				}
			}
		}
	})
}

// --- pgconn: exact bytes, text and binary result formats --------------------------------------------

// rawQuery runs sql with the given result format for every column and
// returns the field descriptions and raw values.
func rawQuery(t *testing.T, c *pgconn.PgConn, sql string, format int16) ([]pgconn.FieldDescription, [][][]byte) {
	t.Helper()
	rr := c.ExecParams(testCtx(t), sql, nil, nil, nil, []int16{format})
	var rows [][][]byte
	for rr.NextRow() {
		var row [][]byte
		for _, v := range rr.Values() {
			row = append(row, bytes.Clone(v))
		}
		rows = append(rows, row)
	}
	fds := rr.FieldDescriptions()
	if _, err := rr.Close(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return fds, rows
}

func TestMaskPgconnRawFormats(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	d := direct(t, env)
	queries := map[string]string{
		"table":          fmt.Sprintf("SELECT %s FROM %s ORDER BY id", fixtureColumns, table),
		"aliases":        fmt.Sprintf("SELECT pan AS a, pan_i8 AS b, pan_num AS c, pan_f8 AS d, pans AS e, pans_i8 AS f, doc AS g, doc_json AS h FROM %s ORDER BY id", table),
		"row_to_json":    fmt.Sprintf("SELECT row_to_json(t) FROM %s t ORDER BY id", table),
		"to_jsonb":       fmt.Sprintf("SELECT to_jsonb(t) FROM %s t ORDER BY id", table),
		"record":         fmt.Sprintf("SELECT ROW(id, pan, pan_i8, pan_num, pan_f8, pans_i8, doc) FROM %s ORDER BY id", table),
		"table row type": fmt.Sprintf("SELECT t FROM %s t ORDER BY id", table),
		"arrays":         fmt.Sprintf("SELECT ARRAY[pan_num], ARRAY[pan_i8, pan_i8], ARRAY[ROW(pan, pan_i8)], ARRAY[doc] FROM %s ORDER BY id", table),
		"ranges":         fmt.Sprintf("SELECT int8range(pan_i8, pan_i8, '[]'), numrange(pan_num, pan_num, '[]') FROM %s ORDER BY id", table),
		"aggregates":     fmt.Sprintf("SELECT array_agg(pan_i8 ORDER BY id), json_agg(pan_num ORDER BY id), string_agg(pan_fmt, ', ' ORDER BY id) FROM %s", table),
	}
	for name, q := range queries {
		for _, format := range []int16{0, 1} {
			where := fmt.Sprintf("%s, format %d", name, format)
			fds, rows := rawQuery(t, c.PgConn(), q, format)
			_, want := rawQuery(t, d.PgConn(), q, format)
			if len(rows) != len(want) {
				t.Errorf("%s: %d rows, direct %d", where, len(rows), len(want))
				continue
			}
			for i, row := range rows {
				var decoded []string
				for j, v := range row {
					noPAN(t, fmt.Sprintf("%s row %d col %s raw", where, i, fds[j].Name), v)
					decoded = append(decoded, decodeRaw(fds[j].DataTypeOID, fds[j].Format, v))
				}
				noPANString(t, fmt.Sprintf("%s row %d decoded", where, i), strings.Join(decoded, " | "))
				if strings.Contains(name, "json") || strings.Contains(name, "row") || name == "record" {
					if s := strings.Join(decoded, " "); strings.Contains(s, fixturePINBlock) || strings.Contains(s, `"`+fixtureCVV+`"`) || strings.Contains(s, ","+fixtureCVV+",") {
						t.Errorf("%s row %d: sensitive authentication data shown: %.300s", where, i, s)
					}
				}
			}
			// The clean row (the last, by id) is not touched, byte for byte
			// (JSON objects of whole rows lose their SAD members).
			if name != "aggregates" && name != "row_to_json" && name != "to_jsonb" && len(rows) > 0 {
				last := len(rows) - 1
				for j := range rows[last] {
					if name == "table" && (fds[j].Name == "cvv" || fds[j].Name == "pin_block") {
						continue
					}
					if !bytes.Equal(rows[last][j], want[last][j]) {
						t.Errorf("%s: clean row column %s changed:\n got %q\nwant %q", where, fds[j].Name, rows[last][j], want[last][j])
					}
				}
			}
		}
	}
}

// --- cursors ---------------------------------------------------------------------------------------

func TestMaskCursors(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	ctx := testCtx(t)

	for _, binaryCursor := range []bool{false, true} {
		kind := "CURSOR"
		if binaryCursor {
			kind = "BINARY CURSOR"
		}
		// The simple protocol: a BINARY cursor's rows are binary even so.
		sql := fmt.Sprintf("BEGIN; DECLARE mc %s FOR SELECT %s FROM %s ORDER BY id; FETCH 2 FROM mc; FETCH 5 FROM mc; FETCH ALL FROM mc; CLOSE mc; COMMIT",
			kind, fixtureColumns, table)
		results, err := c.PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		n := 0
		for _, res := range results {
			for _, row := range res.Rows {
				var decoded []string
				for j, v := range row {
					fd := res.FieldDescriptions[j]
					if binaryCursor && fd.Format != 1 {
						t.Fatalf("%s: column %s in format %d", kind, fd.Name, fd.Format)
					}
					noPAN(t, kind+" raw "+fd.Name, v)
					decoded = append(decoded, decodeRaw(fd.DataTypeOID, fd.Format, v))
					if (fd.Name == "cvv" || fd.Name == "pin_block") && v != nil && n < len(maskPANs) {
						t.Errorf("%s: %s = %q, want NULL", kind, fd.Name, v)
					}
				}
				noPANString(t, kind+" decoded", strings.Join(decoded, " | "))
				if n < len(maskPANs) && decoded[2] != maskedLast4(maskPANs[n].digits) {
					t.Errorf("%s row %d: pan %q", kind, n, decoded[2])
				}
				n++
			}
		}
		if n != len(maskPANs)+1 {
			t.Errorf("%s: %d rows fetched", kind, n)
		}
	}

	t.Run("extended FETCH", func(t *testing.T) {
		// pgx prepares FETCH, asks binary for int8 and numeric columns.
		for _, kind := range []string{"CURSOR", "BINARY CURSOR", "CURSOR WITH HOLD"} {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("DECLARE mx %s FOR SELECT %s FROM %s ORDER BY id", kind, fixtureColumns, table)); err != nil {
				t.Fatal(err)
			}
			var names []string
			var all [][]string
			for {
				r, err := tx.Query(ctx, "FETCH 4 FROM mx")
				if err != nil {
					t.Fatal(err)
				}
				nm, rows := rowsAsText(t, r)
				names = nm
				if len(rows) == 0 {
					break
				}
				all = append(all, rows...)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if kind == "CURSOR WITH HOLD" {
				if _, err := c.Exec(ctx, "CLOSE mx"); err != nil {
					t.Fatal(err)
				}
			}
			checkFixtureRows(t, "extended FETCH "+kind, names, all, nil)
		}
	})
}

// --- COPY TO STDOUT ----------------------------------------------------------------------------------

// binaryCopyTuples splits binary COPY data into tuples of raw fields.
func binaryCopyTuples(t *testing.T, b []byte) [][][]byte {
	t.Helper()
	sig := []byte("PGCOPY\n\xff\r\n\x00")
	if !bytes.HasPrefix(b, sig) || len(b) < 19 {
		t.Fatalf("binary COPY: bad header %q", b[:min(len(b), 19)])
	}
	pos := 19 + int(binary.BigEndian.Uint32(b[15:]))
	var out [][][]byte
	for {
		if len(b) < pos+2 {
			t.Fatalf("binary COPY: truncated at %d", pos)
		}
		n := int(int16(binary.BigEndian.Uint16(b[pos:])))
		pos += 2
		if n < 0 {
			return out
		}
		var tup [][]byte
		for range n {
			l := int(int32(binary.BigEndian.Uint32(b[pos:])))
			pos += 4
			if l < 0 {
				tup = append(tup, nil)
				continue
			}
			tup = append(tup, b[pos:pos+l])
			pos += l
		}
		out = append(out, tup)
	}
}

// fixtureOIDs are the type OIDs of fixtureColumns, for decoding binary COPY.
var fixtureOIDs = []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID, pgtype.VarcharOID, pgtype.Int8OID,
	pgtype.NumericOID, pgtype.NumericOID, pgtype.Float8OID, pgtype.TextArrayOID, pgtype.Int8ArrayOID,
	pgtype.JSONBOID, pgtype.JSONOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID}

func TestMaskCopyPgx(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	d := direct(t, env)
	ctx := testCtx(t)
	copyOut := func(conn *pgconn.PgConn, sql string) []byte {
		t.Helper()
		var buf bytes.Buffer
		if _, err := conn.CopyTo(ctx, &buf, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return buf.Bytes()
	}
	sources := map[string]string{
		"table": table,
		"query": fmt.Sprintf("(SELECT %s FROM %s ORDER BY id)", fixtureColumns, table),
	}
	for sname, src := range sources {
		for _, format := range []string{"text", "csv", "binary"} {
			where := fmt.Sprintf("COPY %s %s", sname, format)
			got := copyOut(c.PgConn(), fmt.Sprintf("COPY %s TO STDOUT (FORMAT %s)", src, format))
			noPAN(t, where, got)
			if format == "binary" {
				for i, tup := range binaryCopyTuples(t, got) {
					var decoded []string
					for j, v := range tup {
						decoded = append(decoded, decodeRaw(fixtureOIDs[j], 1, v))
					}
					noPANString(t, fmt.Sprintf("%s tuple %d decoded", where, i), strings.Join(decoded, " | "))
				}
			}
		}
	}
	// Expressions of every numeric type, in binary COPY (fields carry no
	// type), and in text.
	exprs := fmt.Sprintf(`(SELECT pan_i8, pan_num, pan_num2, pan_f8, pan_i8::numeric(30,2), pans_i8, ARRAY[pan_num],
		ROW(pan_i8, pan_num, pan), int8range(pan_i8, pan_i8, '[]'), doc, to_json(pan_i8) FROM %s ORDER BY id)`, table)
	exprOIDs := []uint32{pgtype.Int8OID, pgtype.NumericOID, pgtype.NumericOID, pgtype.Float8OID, pgtype.NumericOID,
		pgtype.Int8ArrayOID, pgtype.NumericArrayOID, pgtype.RecordOID, pgtype.Int8rangeOID, pgtype.JSONBOID, pgtype.JSONOID}
	for _, format := range []string{"text", "csv", "binary"} {
		where := "COPY expressions " + format
		got := copyOut(c.PgConn(), fmt.Sprintf("COPY %s TO STDOUT (FORMAT %s)", exprs, format))
		noPAN(t, where, got)
		if format == "binary" {
			for i, tup := range binaryCopyTuples(t, got) {
				var decoded []string
				for j, v := range tup {
					decoded = append(decoded, decodeRaw(exprOIDs[j], 1, v))
				}
				noPANString(t, fmt.Sprintf("%s tuple %d decoded", where, i), strings.Join(decoded, " | "))
			}
		}
	}
	// The clean row comes out byte for byte as PostgreSQL writes it.
	for _, format := range []string{"text", "csv", "binary"} {
		q := fmt.Sprintf("COPY (SELECT id, label, pan, pan_fmt, pan_i8, pan_num, pan_num2, pan_f8, pans, pans_i8, doc, doc_json, note FROM %s WHERE id = %d) TO STDOUT (FORMAT %s)", table, cleanID, format)
		if got, want := copyOut(c.PgConn(), q), copyOut(d.PgConn(), q); !bytes.Equal(got, want) {
			t.Errorf("COPY %s of the clean row changed:\n got %q\nwant %q", format, got, want)
		}
	}
}

// --- errors, notices, column names, parameter status --------------------------------------------------

func TestMaskErrorsAndNotices(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	cfg, _ := recordedConfig(t, env, "alice")
	var mu sync.Mutex
	var notices []*pgconn.Notice
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n)
		mu.Unlock()
	}
	c := connectConfig(t, cfg)
	ctx := testCtx(t)

	pgErrText := func(e *pgconn.PgError) string {
		return strings.Join([]string{e.Severity, e.Code, e.Message, e.Detail, e.Hint, e.Where, e.SchemaName, e.TableName,
			e.ColumnName, e.DataTypeName, e.ConstraintName, e.File, e.Routine, e.InternalQuery}, "\x00")
	}
	errCases := []struct {
		name, sql string
		args      []any
		code      string
	}{
		{"cast", "SELECT '4242 4242 4242 4242'::int", nil, "22P02"},
		{"cast undelimited", "SELECT '5555555555554444'::int", nil, "22003"},
		{"cast parameter", "SELECT $1::int", []any{"378282246310005"}, "22003"},
		{"cast simple protocol", "SELECT '6011-1111-1111-1117'::int", []any{pgx.QueryExecModeSimpleProtocol}, "22P02"},
		{"unique violation", fmt.Sprintf("INSERT INTO %s (id, pan) VALUES (9999, '4242424242424242')", table), nil, "23505"},
		{"raise with detail and hint", `DO $$ BEGIN RAISE EXCEPTION 'card % declined', '4000056655665556'
			USING DETAIL = 'pan=2223003122003222', HINT = 'try 6200-0000-0000-0005', ERRCODE = 'P0001'; END $$`, nil, "P0001"},
		{"context of a failing statement", "DO $$ BEGIN PERFORM '3056930009020004'::int; END $$", nil, "22003"},
		{"check violation", `CREATE TEMP TABLE errchk (pan text CHECK (length(pan) < 5));
			INSERT INTO errchk VALUES ('4242424242424242')`, nil, "23514"},
		{"json", "SELECT '{\"pan\": 4242424242424242'::jsonb", nil, "22P02"},
		{"column name", "SELECT 1 AS x, * FROM no_such_table_4242424242424242", nil, "42P01"},
	}
	for _, tc := range errCases {
		_, err := c.Exec(ctx, tc.sql, tc.args...)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Errorf("%s: want a PostgreSQL error, got %v", tc.name, err)
			continue
		}
		if pe.Code != tc.code {
			t.Errorf("%s: SQLSTATE %s (%s), want %s", tc.name, pe.Code, pe.Message, tc.code)
		}
		noPANString(t, "error "+tc.name, pgErrText(pe))
	}
	var pe *pgconn.PgError
	if _, err := c.Exec(ctx, "SELECT '4242 4242 4242 4242'::int"); !errors.As(err, &pe) || !strings.Contains(pe.Message, `"**** **** **** 4242"`) {
		t.Errorf("cast error: %v, want the value masked to its last four", err)
	}

	// Notices: RAISE at every level a client sees, with the PAN in each field.
	if _, err := c.Exec(ctx, `DO $$ BEGIN
		RAISE NOTICE 'card %', '4242424242424242' USING DETAIL = 'also 5555 5555 5555 4444', HINT = '378282246310005';
		RAISE WARNING 'warn %', '6011-1111-1111-1117';
		RAISE INFO '%', '{"pan": "3530111333300000"}';
		RAISE NOTICE 'order 100000000001 on 2024-01-15, call +1 415 555 0100, ref 4242424242424241';
		END $$`); err != nil {
		t.Fatal(err)
	}
	// Notices from the extended protocol, in a function.
	if _, err := c.Exec(ctx, `CREATE FUNCTION pg_temp.say(p text) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN RAISE NOTICE 'saying %', p; RETURN p; END $$`); err != nil {
		t.Fatal(err)
	}
	var said string
	if err := c.QueryRow(ctx, "SELECT pg_temp.say($1)", "36227206271667").Scan(&said); err != nil {
		t.Fatal(err)
	}
	if said != maskedLast4("36227206271667") {
		t.Errorf("function result %q", said)
	}
	mu.Lock()
	got := append([]*pgconn.Notice(nil), notices...)
	mu.Unlock()
	if len(got) != 5 {
		t.Errorf("%d notices, want 5", len(got))
	}
	for i, n := range got {
		noPANString(t, fmt.Sprintf("notice %d", i), pgErrText((*pgconn.PgError)(n)))
	}
	if len(got) >= 4 && got[3].Message != "order 100000000001 on 2024-01-15, call +1 415 555 0100, ref 4242424242424241" {
		t.Errorf("notice without a card number changed: %q", got[3].Message)
	}
	if len(got) >= 1 && got[0].Message != "card ************4242" {
		t.Errorf("notice: %q, want the card masked to its last four", got[0].Message)
	}

	// Column names.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		r, err := c.Query(ctx, `SELECT 1 AS "4242424242424242", 2 AS "card 5555-5555-5555-4444", 3 AS "order 100000000001"`, mode)
		if err != nil {
			t.Fatal(err)
		}
		names, _ := rowsAsText(t, r)
		noPANString(t, "column names", strings.Join(names, "|"))
		if len(names) == 3 && names[2] != "order 100000000001" {
			t.Errorf("column name without a card number changed: %q", names[2])
		}
	}

	// ParameterStatus: the server reports application_name when it is set.
	if _, err := c.Exec(ctx, "SET application_name = 'app 4242 4242 4242 4242'"); err != nil {
		t.Fatal(err)
	}
	noPANString(t, "ParameterStatus application_name", c.PgConn().ParameterStatus("application_name"))
	var app string
	if err := c.QueryRow(ctx, "SHOW application_name").Scan(&app); err != nil {
		t.Fatal(err)
	}
	noPANString(t, "SHOW application_name", app)
	if _, err := c.Exec(ctx, "SET application_name = 'order 100000000001'"); err != nil {
		t.Fatal(err)
	}
	if got := c.PgConn().ParameterStatus("application_name"); got != "order 100000000001" {
		t.Errorf("application_name without a card number: %q", got)
	}
}

// --- LISTEN / NOTIFY ---------------------------------------------------------------------------------

func TestMaskNotifications(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	listener, _ := connectRecorded(t, env, "alice")
	notifier := connect(t, env, "bob")
	ctx := testCtx(t)
	if _, err := listener.Exec(ctx, `LISTEN mask_e2e; LISTEN "chan 4242424242424242"`); err != nil {
		t.Fatal(err)
	}
	payloads := []string{
		"card 4242424242424242",
		"5555 5555 5555 4444",
		`{"pan": "378282246310005", "n": 6011111111111117}`,
		"6200-0000-0000-0005 and 3056930009020004",
		maskPANs[13].digits, // 19 digits
		"order 100000000001, call +1 415 555 0100 at 2024-01-15 10:30:00, ref 4242424242424241",
	}
	for _, p := range payloads {
		if _, err := notifier.Exec(ctx, "SELECT pg_notify('mask_e2e', $1)", p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := notifier.Exec(ctx, `NOTIFY "chan 4242424242424242", 'x'`); err != nil {
		t.Fatal(err)
	}
	for i := range len(payloads) + 1 {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		noPANString(t, "notification channel", n.Channel)
		noPANString(t, "notification payload", n.Payload)
		if i < len(payloads) && i == len(payloads)-1 && n.Payload != payloads[i] {
			t.Errorf("payload without a card number changed: %q", n.Payload)
		}
		if i == 0 && n.Payload != "card ************4242" {
			t.Errorf("payload %q, want the card masked to its last four", n.Payload)
		}
	}
}

// --- sensitive authentication data -------------------------------------------------------------------

func TestMaskSensitiveAuthenticationData(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	ctx := testCtx(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		for _, q := range []string{
			fmt.Sprintf("SELECT cvv, pin_block FROM %s WHERE id = 1", table),
			fmt.Sprintf("SELECT cvv AS code, pin_block AS pb FROM %s WHERE id = 1", table),
			fmt.Sprintf("SELECT t.cvv AS \"Card Holder\", t.pin_block AS x FROM %s t WHERE id = 1", table),
			"SELECT cvv AS a, cvv AS b FROM cards WHERE id = 1",
			"SELECT '731'::text AS cvv, '0412AC89FFFFFFFF' AS pin_block",
			"SELECT '123' AS card_cvv2, '1234' AS \"PIN\"",
		} {
			r, err := c.Query(ctx, q, mode)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			_, rows := rowsAsText(t, r)
			if len(rows) != 1 {
				t.Fatalf("%s: %d rows", q, len(rows))
			}
			for i, v := range rows[0] {
				if v != "NULL" {
					t.Errorf("mode %v, %s: column %d = %q, want NULL", mode, q, i, v)
				}
			}
		}
	}
	// Track data in text: removed whole, never shown masked.
	var s1, s2 string
	if err := c.QueryRow(ctx, fmt.Sprintf("SELECT (SELECT swipe FROM %s WHERE id = 1), (SELECT swipe FROM %s WHERE id = 2)", table, table)).Scan(&s1, &s2); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{s1, s2} {
		if strings.Contains(s, "DOE/JOHN") || strings.Contains(s, "2512101") || !strings.Contains(s, mask.TrackDataRemoved) {
			t.Errorf("track data: %q", s)
		}
	}
	// Whole rows: the SAD column inside a row_to_json object or a row value.
	for _, q := range []string{
		fmt.Sprintf("SELECT row_to_json(t) FROM %s t WHERE id = 1", table),
		fmt.Sprintf("SELECT to_jsonb(t) FROM %s t WHERE id = 1", table),
		fmt.Sprintf("SELECT doc, doc_json FROM %s t WHERE id = 1", table),
		fmt.Sprintf("SELECT t FROM %s t WHERE id = 1", table),
		// A whole row cast to text (t::text) is plain text by then: a CVV
		// in it cannot be told from other digits. Policy refuses that use
		// of a cardholder-data table's columns; the masker alone cannot.
	} {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
			r, err := c.Query(ctx, q, mode)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			_, rows := rowsAsText(t, r)
			s := strings.Join(rows[0], " ")
			noPANString(t, q, s)
			if strings.Contains(s, fixturePINBlock) || strings.Contains(s, `"`+fixtureCVV+`"`) || strings.Contains(s, ","+fixtureCVV+",") {
				t.Errorf("mode %v, %s: sensitive authentication data shown: %.300s", mode, q, s)
			}
		}
	}
}

// --- psql ----------------------------------------------------------------------------------------

func TestMaskPsql(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, true)
	table := maskFixture(t, env)
	p := newPsql(t, env, "alice")
	dir := t.TempDir()
	q := fmt.Sprintf("SELECT %s FROM %s ORDER BY id", fixtureColumns, table)
	check := func(where string, r result) {
		t.Helper()
		noPANString(t, where+" stdout", r.stdout)
		// psql shows the statement it sent itself under an error ("LINE 1:
		// SELECT ..." and a caret): that is the client's own input.
		var server []string
		lines := strings.Split(r.stderr, "\n")
		for i := 0; i < len(lines); i++ {
			if strings.HasPrefix(lines[i], "LINE ") {
				i++ // and the caret line
				continue
			}
			server = append(server, lines[i])
		}
		noPANString(t, where+" stderr", strings.Join(server, "\n"))
	}
	t.Run("select", func(t *testing.T) {
		for name, args := range map[string][]string{
			"aligned":              {"-c", q},
			"unaligned":            {"-A", "-t", "-c", q},
			"expanded":             {"-x", "-c", q},
			"FETCH_COUNT (cursor)": {"-v", "FETCH_COUNT=3", "-A", "-t", "-c", q},
			"json":                 {"-A", "-t", "-c", fmt.Sprintf("SELECT json_agg(t) FROM %s t", table)},
			"demo":                 {"-c", "SELECT * FROM cards", "-c", "SELECT * FROM customers"},
		} {
			r := p.run(nil, append([]string{"-v", "ON_ERROR_STOP=1"}, args...)...)
			if r.code != 0 {
				t.Fatalf("%s: %s", name, r)
			}
			check("psql "+name, r)
			if !strings.Contains(r.stdout, "************4242") {
				t.Errorf("psql %s: no masked card in the output:\n%.500s", name, r.stdout)
			}
		}
		out := p.ok("-F", "|", "-c", fmt.Sprintf("SELECT pan, pan_fmt, note, cvv IS NULL FROM %s WHERE id = %d", table, cleanID))
		if want := cleanValues["pan"] + "|" + cleanValues["pan_fmt"] + "|" + cleanValues["note"] + "|t\n"; out != want {
			t.Errorf("clean row through psql:\n got %q\nwant %q", out, want)
		}
		out = p.ok("-c", fmt.Sprintf("SELECT cvv, pin_block, cvv AS c2 FROM %s WHERE id = 1", table))
		if out != "||\n" {
			t.Errorf("SAD columns through psql: %q, want NULLs", out)
		}
	})
	t.Run("copy", func(t *testing.T) {
		for _, format := range []string{"text", "csv", "binary"} {
			for _, src := range []string{table, "(" + q + ")"} {
				r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", fmt.Sprintf(`\copy %s TO STDOUT WITH (FORMAT %s)`, src, format))
				if r.code != 0 {
					t.Fatalf("\\copy %s: %s", format, r)
				}
				check(`\copy `+format, r)
				if format != "binary" && !strings.Contains(r.stdout, "************4242") {
					t.Errorf("\\copy %s: no masked card in the output:\n%.500s", format, r.stdout)
				}
			}
			// To a file, through the same COPY TO STDOUT.
			file := filepath.Join(dir, "out."+format)
			p.ok("-c", fmt.Sprintf(`\copy %s TO '%s' WITH (FORMAT %s)`, table, file, format))
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			noPAN(t, `\copy to a file, `+format, b)
		}
	})
	t.Run("errors and notices", func(t *testing.T) {
		r := p.run(nil, "-c", "SELECT '4242 4242 4242 4242'::int",
			"-c", fmt.Sprintf("INSERT INTO %s (id, pan) VALUES (9998, '%s')", table, maskPANs[1].digits),
			"-c", "DO $$ BEGIN RAISE NOTICE 'card % / %', '378282246310005', '6011 1111 1111 1117'; END $$",
			"-c", "DO $$ BEGIN PERFORM '3056930009020004'::int; END $$",
			"-c", "SELECT pg_notify('x', '4242424242424242')")
		check("psql errors", r)
		for _, want := range []string{`"**** **** **** 4242"`, "NOTICE:  card ***********0005 / **** **** **** 1117", "already exists"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("psql stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})
	t.Run("large objects", func(t *testing.T) {
		// \lo_export reads through the FunctionCall message (lo_read);
		// lo_get returns a bytea.
		oid := strings.TrimSpace(p.ok("-c", "SELECT lo_from_bytea(0, convert_to('card 4242424242424242, ref 5555-5555-5555-4444', 'UTF8'))"))
		t.Cleanup(func() { p.run(nil, "-c", "SELECT lo_unlink("+oid+")") })
		file := filepath.Join(dir, "lo.out")
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", fmt.Sprintf(`\lo_export %s '%s'`, oid, file))
		if r.code != 0 {
			t.Fatalf("\\lo_export: %s", r)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		noPAN(t, `\lo_export`, b)
		if !bytes.Contains(b, []byte("************4242")) {
			t.Errorf("\\lo_export: %q", b)
		}
		r = p.run(nil, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", "SELECT lo_get("+oid+")", "-c", "SELECT encode(lo_get("+oid+"), 'escape')")
		if r.code != 0 {
			t.Fatal(r)
		}
		check("lo_get", r)
	})
}

// --- Node.js drivers ---------------------------------------------------------------------------------

func TestMaskNodeClients(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, true)
	table := maskFixture(t, env)
	got := runNodeEnv(t, env, "mask_clients.js", "alice", []string{"CUSTOS_MASK_TABLE=" + table}, "pg", "postgres")
	for name, raw := range got {
		if name == "received" {
			continue
		}
		noPAN(t, "node "+name, raw)
	}
	var recv map[string]string
	if err := json.Unmarshal(got["received"], &recv); err != nil {
		t.Fatalf("received: %v", err)
	}
	for client, b64 := range recv {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 1000 {
			t.Errorf("%s received only %d bytes", client, len(b))
		}
		noPAN(t, "everything "+client+" received", b)
	}
	var first map[string]any
	if err := json.Unmarshal(got["pg simple"], &first); err != nil {
		t.Fatal(err)
	}
	if first["pan"] != "************4242" || first["cvv"] != nil {
		t.Errorf("pg simple: first row %v", first)
	}
}

// runNodeEnv is runNode with extra environment variables.
func runNodeEnv(t *testing.T, env *pgfiltertest.Env, script, user string, vars []string, packages ...string) map[string]json.RawMessage {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: run `make deps`")
	}
	abs, err := filepath.Abs(filepath.Join(nodeDir, script))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", p, "package.json")); err != nil {
			t.Fatalf("npm package %q is missing from tests/node/node_modules: run `make deps`", p)
		}
	}
	r := run(t, clientEnviron(append([]string{
		"CUSTOS_PG_HOST=" + env.Host,
		"CUSTOS_PG_PORT=" + env.Port,
		"CUSTOS_DATABASE=" + pgfiltertest.Database,
		"CUSTOS_USER=" + user,
		"CUSTOS_TOKEN=" + env.Token(t, user, "agents"),
		"CUSTOS_CA_FILE=" + env.CertFile,
		"NODE_PATH=" + filepath.Join(filepath.Dir(abs), "node_modules"),
	}, vars...)...), nil, node, abs)
	var res nodeResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("node %s printed no JSON result: %v\n%s", script, err, r)
	}
	if !res.OK || r.code != 0 {
		t.Fatalf("node %s: check %q failed (code %q): %s\nstderr:\n%s", script, res.Failed, res.Code, res.Error, r.stderr)

	}
	return res.Checks
}

// --- the extended protocol, message by message ------------------------------------------------------

// rawExchange sends msgs, then reads until ReadyForQuery, returning the
// DataRow values and what else came back (message type names).
func rawExchange(t *testing.T, c *pgconn.PgConn, msgs ...pgproto3.FrontendMessage) (rows [][][]byte, kinds []string) {
	t.Helper()
	rows, _, kinds = exchange(t, c, true, msgs...)
	return rows, kinds
}

// exchange is rawExchange that also returns the CopyData bytes; an
// ErrorResponse fails the test when failOnError, else it is a kind
// "Error <code> <message>".
func exchange(t *testing.T, c *pgconn.PgConn, failOnError bool, msgs ...pgproto3.FrontendMessage) (rows [][][]byte, copyData []byte, kinds []string) {
	t.Helper()
	fe := c.Frontend()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Conn().SetReadDeadline(time.Time{}) }()
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			var row [][]byte
			for _, v := range m.Values {
				row = append(row, bytes.Clone(v))
			}
			rows = append(rows, row)
			continue
		case *pgproto3.CopyData:
			copyData = append(copyData, m.Data...)
			continue
		case *pgproto3.ErrorResponse:
			if !failOnError {
				kinds = append(kinds, "Error "+m.Code+" "+m.Message)
				continue
			}
			t.Errorf("server error: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return rows, copyData, kinds
		}
		kinds = append(kinds, fmt.Sprintf("%T", msg)[len("*pgproto3."):])
	}
}

// Clients that skip Describe, limit rows per Execute, or pipeline several
// portals with different result formats before one Sync.
func TestMaskRawProtocol(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	pc := c.PgConn()
	q := fmt.Sprintf("SELECT pan, pan_i8, pan_num, pan_f8, pans_i8, doc, cvv FROM %s ORDER BY id", table)
	oids := []uint32{pgtype.TextOID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float8OID, pgtype.Int8ArrayOID, pgtype.JSONBOID, pgtype.TextOID}
	checkRows := func(where string, rows [][][]byte, formats []int16) {
		t.Helper()
		if len(rows) != len(maskPANs)+1 {
			t.Errorf("%s: %d rows, want %d", where, len(rows), len(maskPANs)+1)
		}
		for i, row := range rows {
			var decoded []string
			for j, v := range row {
				f := int16(0)
				switch len(formats) {
				case 1:
					f = formats[0]
				case len(row):
					f = formats[j]
				}
				decoded = append(decoded, decodeRaw(oids[j], f, v))
			}
			noPANString(t, fmt.Sprintf("%s row %d", where, i), strings.Join(decoded, " | "))
			if i < len(maskPANs) && row[6] != nil {
				t.Errorf("%s row %d: cvv %q, want NULL", where, i, row[6])
			}
		}
	}

	// No Describe at all: custos must learn the row's types itself, and the
	// client must see no RowDescription it did not ask for.
	for _, formats := range [][]int16{nil, {1}, {0, 1, 1, 1, 1, 1, 0}} {
		rows, kinds := rawExchange(t, pc,
			&pgproto3.Parse{Query: q},
			&pgproto3.Bind{ResultFormatCodes: formats},
			&pgproto3.Execute{},
			&pgproto3.Sync{})
		checkRows(fmt.Sprintf("no Describe, formats %v", formats), rows, formats)
		if want := []string{"ParseComplete", "BindComplete", "CommandComplete"}; !slices.Equal(kinds, want) {
			t.Errorf("no Describe, formats %v: the client got %v, want %v", formats, kinds, want)
		}
	}

	// A named statement described once, then portals with a row limit
	// (PortalSuspended), two of them pipelined before one Sync.
	_, kinds := rawExchange(t, pc, &pgproto3.Parse{Name: "mask_raw", Query: q}, &pgproto3.Describe{ObjectType: 'S', Name: "mask_raw"}, &pgproto3.Sync{})
	if !slices.Contains(kinds, "RowDescription") {
		t.Fatalf("Describe: %v", kinds)
	}
	for _, formats := range [][]int16{{1}, {0, 1, 0, 1, 0, 1, 0}} {
		msgs := []pgproto3.FrontendMessage{
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "mask_raw", ResultFormatCodes: formats},
			&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "mask_raw"},
		}
		for range (len(maskPANs) + 1 + 4) / 5 {
			msgs = append(msgs, &pgproto3.Execute{Portal: "p1", MaxRows: 5}, &pgproto3.Execute{Portal: "p2", MaxRows: 5})
		}
		msgs = append(msgs, &pgproto3.Sync{})
		rows, kinds := rawExchange(t, pc, msgs...)
		// The rows alternate: up to five of p1, then as many of p2.
		var p1, p2 [][][]byte
		for i, left := 0, len(maskPANs)+1; left > 0 && i < len(rows); left -= 5 {
			n := min(5, left, (len(rows)-i)/2)
			p1 = append(p1, rows[i:i+n]...)
			p2 = append(p2, rows[i+n:i+2*n]...)
			i += 2 * n
		}
		checkRows(fmt.Sprintf("row limit, formats %v", formats), p1, formats)
		checkRows("row limit, text", p2, nil)
		if n := strings.Count(strings.Join(kinds, " "), "PortalSuspended"); n < 6 {
			t.Errorf("row limit: %d PortalSuspended (%v)", n, kinds)
		}
	}
}

// Pipelines: the unnamed statement and portal are parsed and bound again
// before the server has answered the previous Execute.
func TestMaskPipelines(t *testing.T) {
	t.Parallel()
	env := maskEnv(t, false)
	table := maskFixture(t, env)
	c, _ := connectRecorded(t, env, "alice")
	pc := c.PgConn()
	ctx := testCtx(t)
	q1 := fmt.Sprintf("SELECT pan, pan_i8, doc FROM %s WHERE id = 1", table)
	q2 := "SELECT $1::text AS echo, $2::int8 AS n, $3::jsonb AS j"
	params := [][]byte{[]byte("card 4242 4242 4242 4242"), []byte("5555555555554444"), []byte(`{"pan": "378282246310005"}`)}
	check := func(t *testing.T, where string, rows [][][]byte, oids []uint32, formats []int16) {
		t.Helper()
		for i, row := range rows {
			var decoded []string
			for j, v := range row {
				decoded = append(decoded, decodeRaw(oids[j], formats[min(j, len(formats)-1)], v))
			}
			s := strings.Join(decoded, " | ")
			noPANString(t, fmt.Sprintf("%s row %d", where, i), s)
			if strings.Contains(s, "NULL") {
				t.Errorf("%s row %d: a value became NULL: %s", where, i, s)
			}
		}
	}

	t.Run("pgconn pipeline", func(t *testing.T) {
		p := pc.StartPipeline(ctx)
		for range 2 {
			p.SendQueryParams(q1, nil, nil, nil, []int16{0, 1, 1})
			p.SendQueryParams(q2, params, nil, nil, []int16{0, 1, 1})
		}
		p.SendPipelineSync()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			res, err := p.GetResults()
			if err != nil {
				t.Fatal(err)
			}
			rr, ok := res.(*pgconn.ResultReader)
			if !ok {
				t.Fatalf("result %d: %T", i, res)
			}
			r := rr.Read()
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			oids := []uint32{pgtype.TextOID, pgtype.Int8OID, pgtype.JSONBOID}
			check(t, fmt.Sprintf("pipeline result %d", i), r.Rows, oids, []int16{0, 1, 1})
		}
		if _, err := p.GetResults(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unnamed statements without Describe", func(t *testing.T) {
		p2 := make([]pgproto3.FrontendMessage, 0, 9)
		p2 = append(p2,
			&pgproto3.Parse{Query: q1}, &pgproto3.Bind{ResultFormatCodes: []int16{0, 1, 1}}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: q2, ParameterOIDs: []uint32{pgtype.TextOID, pgtype.Int8OID, pgtype.JSONBOID}},
			&pgproto3.Bind{Parameters: params, ResultFormatCodes: []int16{0, 1, 1}}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		rows, _ := rawExchange(t, pc, p2...)
		if len(rows) != 2 {
			t.Fatalf("%d rows", len(rows))
		}
		check(t, "first statement", rows[:1], []uint32{pgtype.TextOID, pgtype.Int8OID, pgtype.JSONBOID}, []int16{0, 1, 1})
		check(t, "second statement", rows[1:], []uint32{pgtype.TextOID, pgtype.Int8OID, pgtype.JSONBOID}, []int16{0, 1, 1})
	})

	// Statements of different shapes, both described, bound one after the
	// other to the unnamed portal before one Sync (what pgx's SendBatch does).
	qa := fmt.Sprintf("SELECT pan_i8, pan, pan_num FROM %s WHERE id = $1", table)
	qb := fmt.Sprintf("SELECT note, pan_num, pan_i8 FROM %s WHERE id = $1", table)
	_, kinds := rawExchange(t, pc,
		&pgproto3.Parse{Name: "mask_pa", Query: qa, ParameterOIDs: []uint32{pgtype.Int8OID}}, &pgproto3.Describe{ObjectType: 'S', Name: "mask_pa"},
		&pgproto3.Parse{Name: "mask_pb", Query: qb, ParameterOIDs: []uint32{pgtype.Int8OID}}, &pgproto3.Describe{ObjectType: 'S', Name: "mask_pb"},
		&pgproto3.Sync{})
	if strings.Count(strings.Join(kinds, " "), "RowDescription") != 2 {
		t.Fatalf("Describe: %v", kinds)
	}
	id := [][]byte{[]byte("1")}
	t.Run("described statements, one portal", func(t *testing.T) {
		rows, _ := rawExchange(t, pc,
			&pgproto3.Bind{PreparedStatement: "mask_pa", Parameters: id, ResultFormatCodes: []int16{1, 0, 1}}, &pgproto3.Execute{},
			&pgproto3.Bind{PreparedStatement: "mask_pb", Parameters: id, ResultFormatCodes: []int16{0, 1, 1}}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		if len(rows) != 2 {
			t.Fatalf("%d rows", len(rows))
		}
		check(t, "statement a", rows[:1], []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.NumericOID}, []int16{1, 0, 1})
		check(t, "statement b", rows[1:], []uint32{pgtype.TextOID, pgtype.NumericOID, pgtype.Int8OID}, []int16{0, 1, 1})
	})
	t.Run("undescribed then described", func(t *testing.T) {
		// The first portal's statement is not described (custos asks);
		// the second's is described in the same pipeline.
		rows, _ := rawExchange(t, pc,
			&pgproto3.Parse{Query: qa, ParameterOIDs: []uint32{pgtype.Int8OID}},
			&pgproto3.Bind{Parameters: id, ResultFormatCodes: []int16{1, 0, 1}}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: qb, ParameterOIDs: []uint32{pgtype.Int8OID}}, &pgproto3.Describe{ObjectType: 'S'},
			&pgproto3.Bind{Parameters: id, ResultFormatCodes: []int16{0, 1, 1}}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		if len(rows) != 2 {
			t.Fatalf("%d rows", len(rows))
		}
		check(t, "statement a", rows[:1], []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.NumericOID}, []int16{1, 0, 1})
		check(t, "statement b", rows[1:], []uint32{pgtype.TextOID, pgtype.NumericOID, pgtype.Int8OID}, []int16{0, 1, 1})
	})
}
