package mask

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		err  error
		def  Strategy
	}{
		{"zero", Options{}, nil, Last4},
		{"redact", Options{Default: Redact}, nil, Redact},
		{"hmac", Options{Default: HMAC, HMACKey: testKey}, nil, HMAC},
		{"hmac without key", Options{Default: HMAC}, ErrKey, ""},
		{"short key", Options{HMACKey: []byte("short")}, ErrKey, ""},
		{"bin_last4", Options{Default: BINLast4}, ErrStrategy, ""},
		{"unknown", Options{Default: "mask"}, ErrStrategy, ""},
	}
	for _, tt := range tests {
		m, err := New(tt.opts)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err == nil && m.Default() != tt.def {
			t.Errorf("%s: default %q, want %q", tt.name, m.Default(), tt.def)
		}
	}
}

func TestNewCopiesKey(t *testing.T) {
	t.Parallel()
	key := bytes.Clone(testKey)
	m, err := New(Options{HMACKey: key})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := m.Value([]byte("4242424242424242"), HMAC)
	key[0] ^= 1
	after, _ := m.Value([]byte("4242424242424242"), HMAC)
	if !bytes.Equal(before, after) {
		t.Fatal("the masker uses the caller's key slice")
	}
}

func TestParseStrategy(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "last4", "bin_last4", "redact", "null", "drop", "hmac"} {
		if got, err := ParseStrategy(s); err != nil || string(got) != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"LAST4", "last_4", "mask", " redact"} {
		if _, err := ParseStrategy(s); !errors.Is(err, ErrStrategy) {
			t.Errorf("ParseStrategy(%q) err = %v", s, err)
		}
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	h, _ := Fingerprint(testKey, []byte("4242424242424242"))
	tests := []struct {
		s        Strategy
		in, want string
		null     bool
	}{
		{Last4, "4242424242424242", "************4242", false},
		{"", "4242424242424242", "************4242", false},
		{Last4, "4242-4242-4242-4242", "****-****-****-4242", false},
		{Last4, "4242424242424241", "************4241", false}, // Luhn-invalid: masked anyway
		{Last4, " 4242 4242 4242 4242 ", " **** **** **** 4242 ", false},
		{Last4, "card 4242424242424242 (test)", "card ************4242 (test)", false},
		{Last4, "x4242424242424242", "x************4242", false},
		{Last4, "4242", "4242", false},
		{Last4, "42424", "*2424", false},
		{Last4, "n/a", "n/a", false},
		{Last4, "", "", false},
		{Last4, "************4242", "************4242", false},
		{Last4, "%B4242424242424242^DOE/JOHN^2512101123?", TrackDataRemoved, false},
		{BINLast4, "4242424242424242", "424242******4242", false},
		{BINLast4, "424242******4242", "424242******4242", false},
		{BINLast4, "30569309025904", "**********5904", false},
		{Redact, "4242424242424242", Redacted, false},
		{Redact, "", "", false},
		{Null, "4242424242424242", "", true},
		{Drop, "4242424242424242", "", true},
		{HMAC, "4242424242424242", h, false},
		{HMAC, "4242 4242 4242 4242", h, false},
		{HMAC, "none", "none", false},
	}
	for _, tt := range tests {
		out, c := m.Value([]byte(tt.in), tt.s)
		if tt.null != (out == nil) || string(out) != tt.want {
			t.Errorf("Value(%q, %q) = %q (nil %v), want %q (nil %v)", tt.in, tt.s, out, out == nil, tt.want, tt.null)
		}
		if changed := tt.in != tt.want || tt.null; changed != (c.PANs+c.SAD > 0) {
			t.Errorf("Value(%q, %q): counts %+v", tt.in, tt.s, c)
		}
	}
}

func TestValueDoesNotModifySrc(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	src := []byte("4242424242424242")
	_, _ = m.Value(src, Last4)
	if string(src) != "4242424242424242" {
		t.Fatalf("src modified: %q", src)
	}
}

func TestNumber(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	tests := []struct {
		s      Strategy
		byRule bool
		in     string
		want   string // "NULL" for nil
	}{
		// Detection: only a PAN changes.
		{Last4, false, "4242424242424242", "1000000000004242"},
		{Last4, false, "5555555555554444", "1000000000004444"},
		{Last4, false, "378282246310005", "100000000000005"},
		{Last4, false, "-4242424242424242", "-1000000000004242"},
		{Last4, false, "4242424242424242.00", "1000000000004242.00"},
		{Last4, false, "4.242424242424242e+15", "1000000000004242"},
		{Last4, false, "4242424242424242E0", "1000000000004242"},
		{Last4, false, "42424242424242.42e2", "1000000000004242"},
		{Last4, false, "4242424242424241", "4242424242424241"},
		{Last4, false, "12345", "12345"},
		{Last4, false, "0.4242424242424242", "0.4242424242424242"},
		{Last4, false, "NaN", "NaN"},
		{Last4, false, "1000000000004242", "1000000000004242"},
		{BINLast4, false, "4242424242424242", "4242420000014242"}, // 4242420000004242 passes Luhn: the digit before the last four is raised,
		{BINLast4, false, "378282246310005", "378282000000005"},
		{BINLast4, false, "30569309025904", "10000000005904"},
		{Redact, false, "4242424242424242", "0"},
		{Null, false, "4242424242424242", "NULL"},
		{Drop, false, "4242424242424242", "NULL"},

		// By rule: whatever the digits.
		{Last4, true, "4242424242424241", "1000000000004241"},
		{Last4, true, "123456", "103456"},
		{Last4, true, "1234", "1234"},
		{Last4, true, "NaN", "NULL"},
		{Last4, true, "", ""},
		{Redact, true, "77", "0"},
		{Null, true, "77", "NULL"},
	}
	for _, tt := range tests {
		out, c := m.Number([]byte(tt.in), tt.s, tt.byRule)
		got := string(out)
		if out == nil && tt.in != "" {
			got = "NULL"
		}
		if got != tt.want {
			t.Errorf("Number(%q, %q, %v) = %q, want %q", tt.in, tt.s, tt.byRule, got, tt.want)
			continue
		}
		if changed := tt.in != tt.want; changed != !c.IsZero() {
			t.Errorf("Number(%q, %q, %v): counts %+v", tt.in, tt.s, tt.byRule, c)
		}
		if out != nil {
			if ip := strings.TrimLeft(strings.SplitN(got, ".", 2)[0], "-"); len(ip) >= minPAN && tt.in != tt.want && luhn([]byte(ip)) {
				t.Errorf("Number(%q) = %q passes the Luhn check", tt.in, got)
			}
			again, _ := m.Number(out, tt.s, false)
			if !bytes.Equal(again, out) {
				t.Errorf("Number(%q) not idempotent: %q", got, again)
			}
		}
	}
}

func TestNumberHMAC(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	a, _ := m.Number([]byte("4242424242424242"), HMAC, false)
	b, _ := m.Number([]byte("4242424242424242"), HMAC, true)
	c, _ := m.Number([]byte("5555555555554444"), HMAC, false)
	if len(a) != 16 || a[0] != '1' || !bytes.Equal(a, b) || bytes.Equal(a, c) || luhn(a) {
		t.Fatalf("hmac numbers: %q %q %q", a, b, c)
	}
	if Contains(a) {
		t.Fatalf("%q is detected as a PAN", a)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	in := []byte(`{"pan":"4242424242424242","note":"5555 5555 5555 4444"}`)
	want, _, err := m.JSON(in, map[string]Strategy{"$.pan": HMAC}, true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for range 8 {
		go func() {
			for range 200 {
				got, _, err := m.JSON(in, map[string]Strategy{"$.pan": HMAC}, true)
				if err == nil && !bytes.Equal(got, want) {
					err = errors.New("different output: " + string(got))
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
