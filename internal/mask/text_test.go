package mask

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// testKey is an HMAC key for tests.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func newTestMasker(t testing.TB) *Masker {
	t.Helper()
	m, err := New(Options{HMACKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The standard public test numbers: detected like any other PAN.
var testPANs = []string{
	"4242424242424242",    // Visa
	"4222222222222",       // Visa, 13 digits
	"4000000000000000006", // Visa, 19 digits
	"5555555555554444",    // Mastercard
	"2223003122003222",    // Mastercard 2-series
	"2221000000000009",    // Mastercard 2-series, low end
	"2720999999999996",    // Mastercard 2-series, high end
	"378282246310005",     // Amex
	"6011111111111117",    // Discover
	"6011000990139424",    // Discover
	"6011123456789012348", // Discover, 19 digits
	"6440000000000005",    // Discover 644
	"6500000000000002",    // Discover 65
	"6221260000000000",    // Discover (UnionPay co-brand) 622126
	"3530111333300000",    // JCB
	"3056930009020004",    // Diners
	"30569309025904",      // Diners, 14 digits
	"3095000000000000",    // Diners 3095
	"3600000000000008",    // Diners 36
	"3800000000000006",    // Diners 38
	"3600000000000000004", // Diners, 19 digits
	"6200000000000005",    // UnionPay
	"6212345678901234569", // UnionPay, 19 digits
	"501800000009",        // Maestro, 12 digits
	"5018000000000000007", // Maestro, 19 digits
	"6720000000000000007", // Maestro 67, 19 digits
}

func TestTestPANsAreDetected(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	for _, pan := range testPANs {
		if brand([]byte(pan)) == "" || !luhn([]byte(pan)) {
			t.Errorf("%s: fixture is not a valid PAN", pan)
		}
		if !Contains([]byte(pan)) {
			t.Errorf("Contains(%s) = false", pan)
		}
		out, c := m.Text(nil, []byte(pan), Last4)
		want := strings.Repeat("*", len(pan)-4) + pan[len(pan)-4:]
		if string(out) != want || c.PANs != 1 {
			t.Errorf("Text(%s) = %q, %+v; want %q", pan, out, c, want)
		}
	}
}

func TestTextLast4(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	tests := []struct {
		name, in, want string
	}{
		// Shapes of one PAN.
		{"plain", "4242424242424242", "************4242"},
		{"spaces", "4242 4242 4242 4242", "**** **** **** 4242"},
		{"dashes", "4242-4242-4242-4242", "****-****-****-4242"},
		{"amex 4-6-5", "3782 822463 10005", "**** ****** *0005"},
		{"amex plain", "378282246310005", "***********0005"},
		{"diners 4-6-4", "3056 930902 5904", "**** ****** 5904"},
		{"visa 13 4-4-5", "4222 2222 22222", "**** **** *2222"},
		{"visa 19 4-4-4-4-3", "4000 0000 0000 0000 006", "**** **** **** ***0 006"},
		{"maestro 12", "501800000009", "********0009"},
		{"mastercard 2-series", "2223003122003222", "************3222"},
		{"grouped 4-12", "4242 424242424242", "**** ********4242"},

		// Where PANs turn up.
		{"csv", "1,4242424242424242,John Doe\n2,5555555555554444,Jane\n", "1,************4242,John Doe\n2,************4444,Jane\n"},
		{"csv quoted", `"4242 4242 4242 4242","x"`, `"**** **** **** 4242","x"`},
		{"tsv", "1\t4242424242424242\t0", "1\t************4242\t0"},
		{"json string", `{"pan":"4242424242424242"}`, `{"pan":"************4242"}`},
		{"json number", `{"pan":4242424242424242}`, `{"pan":************4242}`},
		{"integer syntax error", `invalid input syntax for type integer: "4242 4242 4242 4242"`, `invalid input syntax for type integer: "**** **** **** 4242"`},
		{"duplicate key", `Key (pan)=(4242424242424242) already exists.`, `Key (pan)=(************4242) already exists.`},
		{"sentence end", "your card 4242424242424242.", "your card ************4242."},
		{"url path", "/v1/cards/4242424242424242/charge", "/v1/cards/************4242/charge"},
		{"query string", "?pan=4242424242424242&cvc=1", "?pan=************4242&cvc=1"},
		{"underscore", "pm_4242424242424242", "pm_************4242"},
		{"colon", "pan:4242424242424242", "pan:************4242"},
		{"negative", "-4242424242424242", "-************4242"},
		{"after a number", "3 4242424242424242", "3 ************4242"},
		{"before a number", "4242424242424242 7", "************4242 7"},
		{"after a date", "2024-01-15 4242424242424242", "2024-01-15 ************4242"},
		{"non-ascii before", "№4242424242424242", "№************4242"},
		{"newlines", "a\n4242424242424242\nb", "a\n************4242\nb"},
		{"two in a row", "4242424242424242 5555555555554444", "************4242 ************4444"},
		{"many", "4242424242424242,378282246310005;6011111111111117", "************4242,***********0005;************1117"},
		{"twenty digits grouped", "4242 4242 4242 4242 4242", "**** **** **** **** 4242"},
		{"repeated PAN glued by dash", "4242424242424242-4242424242424242", "************4242-************4242"},
		{"track 1 without end of name", "%B4242424242424242^DOE", "%B************4242^DOE"},

		// Not PANs.
		{"letter before", "x4242424242424242", "x4242424242424242"},
		{"letter after", "4242424242424242x", "4242424242424242x"},
		{"hex literal", "0x4242424242424242", "0x4242424242424242"},
		{"star before", "*4242424242424242", "*4242424242424242"},
		{"twenty digits", "42424242424242424242", "42424242424242424242"},
		{"nineteen digits invalid", "4242424242424242427", "4242424242424242427"},
		{"nineteen digits valid", "4242424242424242428", "***************2428"},
		{"luhn invalid", "4242424242424241", "4242424242424241"},
		{"no brand", "1234567812345670", "1234567812345670"},
		{"visa wrong length", "42424242424242", "42424242424242"},
		{"amex wrong length", "3782822463100056", "3782822463100056"},
		{"mixed separators", "4242-4242 4242-4242", "4242-4242 4242-4242"},
		{"double space", "4242  4242 4242 4242", "4242  4242 4242 4242"},
		{"short groups", "42 42 42 42 42 42 42 42", "42 42 42 42 42 42 42 42"},
		{"uuid", "550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"},
		{"uuid with a PAN-like part", "123e4567-e89b-12d3-a456-501800000009", "123e4567-e89b-12d3-a456-501800000009"},
		{"uuid all digits", "12345678-1234-1234-1234-501800000009", "12345678-1234-1234-1234-501800000009"},
		{"hex token", "4242-4242-4242-4242-cafe", "4242-4242-4242-4242-cafe"},
		{"hex token before", "cafe-4242-4242-4242-4242", "cafe-4242-4242-4242-4242"},
		{"long part is no hex token", "cafe-4242424242424242", "cafe-************4242"},
		{"md5", "d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e"},
		{"sha1", "4242424242424242ab0e65a7e1c5b2e4a2f0b0d1", "4242424242424242ab0e65a7e1c5b2e4a2f0b0d1"},
		{"timestamp", "2024-01-15 12:30:45.123456+00", "2024-01-15 12:30:45.123456+00"},
		{"compact timestamp", "20240115123045", "20240115123045"},
		{"unix millis", "1705312245123", "1705312245123"},
		{"phone", "+1 555 123 4567", "+1 555 123 4567"},
		{"international phone", "+6281234567899", "+6281234567899"},
		{"decimal fraction", "0.4242424242424242", "0.4242424242424242"},
		{"decimal integer part", "4242424242424242.50", "4242424242424242.50"},
		{"repeated digit", "6666666666666", "6666666666666"},
		{"sequential", "4567890123456789012", "4567890123456789012"},
		{"sequential short", "567890123456", "567890123456"},
		{"already masked", "************4242", "************4242"},
		{"already masked bin", "424242******4242", "424242******4242"},
		{"masked grouped", "**** **** **** 4242", "**** **** **** 4242"},
		{"order id", "order 1000234 for 12 items at 2024-03-01", "order 1000234 for 12 items at 2024-03-01"},
		{"ip", "10.0.0.1:5432", "10.0.0.1:5432"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := []byte(tt.in)
			out, c := m.Text(nil, src, Last4)
			if string(out) != tt.want {
				t.Fatalf("Text(%q)\n got %q\nwant %q", tt.in, out, tt.want)
			}
			if changed := tt.in != tt.want; changed != !c.IsZero() || changed != Contains(src) {
				t.Errorf("changed=%v, counts %+v, Contains %v", changed, c, Contains(src))
			}
			if tt.in == tt.want && len(src) > 0 && &out[0] != &src[0] {
				t.Errorf("unchanged text was copied")
			}
			again, c2 := m.Text(nil, out, Last4)
			if !bytes.Equal(again, out) || !c2.IsZero() {
				t.Errorf("not idempotent: %q", again)
			}
		})
	}
}

func TestTextTrackData(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	tests := []struct {
		name, in, want string
		sad, pans      int
	}{
		{"track 1", "%B4242424242424242^DOE/JOHN^25121010000000000000?", TrackDataRemoved, 1, 0},
		{"track 1 with LRC and text", "swipe %B4242424242424242^DOE/JOHN^2512101000000000?; ok", "swipe [track data removed]; ok", 1, 0},
		{"track 1 lowercase name", "%B5555555555554444^doe/jane^2601201?", TrackDataRemoved, 1, 0},
		{"track 1 no end sentinel", "%B4242424242424242^DOE/JOHN^2512101000000 APPROVED", "[track data removed] APPROVED", 1, 0},
		{"track 1 without %", "B4242424242424242^DOE/JOHN^2512101?", TrackDataRemoved, 1, 0},
		{"track 1 luhn-invalid PAN", "%B4242424242424241^DOE/JOHN^2512101?", TrackDataRemoved, 1, 0},
		{"track 1 no sentinels", "4242424242424242^DOE/JOHN^2512101000", TrackDataRemoved, 1, 0},
		{"track 1 grouped amex", "%B3782 822463 10005^DOE/JOHN^2512101?", TrackDataRemoved, 1, 0},
		{"track 2", ";4242424242424242=25121010000000000000?", TrackDataRemoved, 1, 0},
		{"track 2 no end sentinel", ";4242424242424242=2512101000 next", "[track data removed] next", 1, 0},
		{"track 2 no sentinels", "4242424242424242=2512101000", TrackDataRemoved, 1, 0},
		{"track 2 after a PAN", "5555555555554444 4242424242424242=2512101?", "************4444 [track data removed]", 1, 1},
		{"track 2 in a message", `value "4242424242424242=2512101123" is bad`, `value "[track data removed]" is bad`, 1, 0},
		{"both tracks", "%B4242424242424242^DOE/JOHN^2512101?;4242424242424242=2512101?", TrackDataRemoved + TrackDataRemoved, 2, 0},
		{"not track 2: short", "4242424242424242=12", "************4242=12", 0, 1},
		{"not track 2: invalid PAN", "4242424242424241=2512101", "4242424242424241=2512101", 0, 0},
		{"not track 1: no second caret", "4242424242424242^DOE", "************4242^DOE", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, c := m.Text(nil, []byte(tt.in), Last4)
			if string(out) != tt.want || c.SAD != tt.sad || c.PANs != tt.pans {
				t.Fatalf("Text(%q)\n got %q %+v\nwant %q sad=%d pans=%d", tt.in, out, c, tt.want, tt.sad, tt.pans)
			}
		})
	}
}

func TestTextStrategies(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	h, _ := Fingerprint(testKey, []byte("4242424242424242"))
	tests := []struct {
		s        Strategy
		in, want string
	}{
		{"", "pan 4242424242424242 ok", "pan ************4242 ok"},
		{Last4, "pan 4242 4242 4242 4242 ok", "pan **** **** **** 4242 ok"},
		{BINLast4, "pan 4242424242424242 ok", "pan 424242******4242 ok"},
		{BINLast4, "4242-4242-4242-4242", "4242-42**-****-4242"},
		{BINLast4, "378282246310005", "378282*****0005"},
		{BINLast4, "30569309025904", "**********5904"}, // 14 digits: last four only
		{BINLast4, "501800000009", "********0009"},
		{Redact, "pan 4242424242424242 ok", "pan [REDACTED] ok"},
		{Null, "pan 4242424242424242 ok", "pan [REDACTED] ok"},
		{Drop, "pan 4242424242424242 ok", "pan [REDACTED] ok"},
		{"bogus", "pan 4242424242424242 ok", "pan [REDACTED] ok"},
		{HMAC, "pan 4242424242424242 ok", "pan " + h + " ok"},
		{HMAC, "pan 4242 4242 4242 4242 ok", "pan " + h + " ok"},
		{Redact, "%B4242424242424242^DOE/JOHN^2512101?", TrackDataRemoved},
	}
	for _, tt := range tests {
		out, _ := m.Text(nil, []byte(tt.in), tt.s)
		if string(out) != tt.want {
			t.Errorf("Text(%q, %q) = %q, want %q", tt.in, tt.s, out, tt.want)
		}
		again, c := m.Text(nil, out, tt.s)
		if !bytes.Equal(again, out) || !c.IsZero() {
			t.Errorf("Text(%q, %q) not idempotent: %q", out, tt.s, again)
		}
	}
}

func TestTextHMACWithoutKeyRedacts(t *testing.T) {
	t.Parallel()
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := m.Text(nil, []byte("4242424242424242"), HMAC)
	if string(out) != Redacted {
		t.Fatalf("got %q", out)
	}
}

func TestTextAppendsToDst(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	dst := []byte("prefix:")
	out, _ := m.Text(dst, []byte("4242424242424242"), Last4)
	if string(out) != "prefix:************4242" {
		t.Fatalf("got %q", out)
	}
	src := []byte("no card here")
	out, c := m.Text(dst, src, Last4)
	if &out[0] != &src[0] || !c.IsZero() {
		t.Fatalf("unchanged text: got %q, want src itself", out)
	}
}

func TestHideKeepsLayout(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	// Under Last4 and BINLast4, masking only turns digits into '*'.
	in := []byte("a 4242 4242 4242 4242, b 378282246310005, c 6011-1111-1111-1117.\n")
	for _, s := range []Strategy{Last4, BINLast4} {
		out, _ := m.Text(nil, in, s)
		if len(out) != len(in) {
			t.Fatalf("%s: length changed: %q", s, out)
		}
		for i := range in {
			if out[i] != in[i] && (!isDigit(in[i]) || out[i] != '*') {
				t.Fatalf("%s: byte %d changed from %q to %q", s, i, in[i], out[i])
			}
		}
	}
}

func TestContainsLongInputs(t *testing.T) {
	t.Parallel()
	// A PAN at every alignment relative to the 12-byte stride.
	for pad := range 30 {
		for _, sep := range []string{"", " ", "-"} {
			pan := strings.Join([]string{"4242", "4242", "4242", "4242"}, sep)
			in := strings.Repeat("a", pad) + " " + pan + " " + strings.Repeat("b", pad)
			if !Contains([]byte(in)) {
				t.Errorf("Contains(%q) = false", in)
			}
			in = strings.Repeat("1", pad%5) + " " + pan
			if !Contains([]byte(in)) {
				t.Errorf("Contains(%q) = false", in)
			}
		}
	}
}

// TestTextFastPathsMatchScanner: for values shaped like a card-number
// column (a run of 12-19 digits, or 4-4-4-4 with a space or dash), Text's
// fast paths give byte for byte what the scanner gives, for every
// strategy: valid PANs of each brand, Luhn-invalid numbers, and numbers
// holding a 12-digit PAN inside.
func TestTextFastPathsMatchScanner(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	rng := rand.New(rand.NewPCG(7, 11))
	var values []string
	for _, prefix := range []string{"4", "51", "2221", "34", "37", "6011", "35", "36", "62", "50", "56", "30", "0", "9"} {
		for _, n := range []int{12, 13, 14, 15, 16, 17, 18, 19} {
			for range 20 {
				d := []byte(prefix)
				for len(d) < n {
					d = append(d, byte('0'+rng.IntN(10)))
				}
				values = append(values, string(d))
				// The same with its last digit made Luhn-valid.
				for last := byte('0'); last <= '9'; last++ {
					d[n-1] = last
					if luhn(d) {
						values = append(values, string(d))
						break
					}
				}
			}
		}
	}
	var grouped []string
	for _, v := range values {
		if len(v) == 16 {
			for _, sep := range []string{" ", "-"} {
				grouped = append(grouped, v[0:4]+sep+v[4:8]+sep+v[8:12]+sep+v[12:16])
			}
		}
	}
	// 16 digits holding a valid 12-digit Maestro number in their first or
	// last three groups: the fast path must leave them to the scanner.
	for range 200 {
		d := []byte("50")
		for len(d) < 12 {
			d = append(d, byte('0'+rng.IntN(10)))
		}
		for last := byte('0'); last <= '9'; last++ {
			d[11] = last
			if luhn(d) {
				break
			}
		}
		tail := fmt.Sprintf("%04d", rng.IntN(10000))
		grouped = append(grouped, string(d[0:4])+" "+string(d[4:8])+" "+string(d[8:12])+" "+tail,
			tail+"-"+string(d[0:4])+"-"+string(d[4:8])+"-"+string(d[8:12]))
	}
	for _, v := range append(values, grouped...) {
		for _, s := range []Strategy{"", Last4, BINLast4, Redact, HMAC, Null} {
			got, gc := m.Text(nil, []byte(v), s)
			want, wc := m.scanText(nil, []byte(v), s)
			if string(got) != string(want) || gc != wc {
				t.Fatalf("Text(%q, %q) = %q %+v, scanner %q %+v", v, s, got, gc, want, wc)
			}
		}
	}
}
