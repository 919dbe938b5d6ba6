package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// Seeds shared by the fuzz targets, on top of the corpus in testdata/fuzz.
var fuzzSeeds = []string{
	"",
	"4242424242424242",
	"4242 4242 4242 4242",
	"4242-4242-4242-4242",
	"3782 822463 10005",
	"x4242424242424242 4242424242424242x",
	"1,4242424242424242,John\n2,5555555555554444,Jane\n",
	`invalid input syntax for type integer: "4242 4242 4242 4242"`,
	`Key (pan)=(4242424242424242) already exists.`,
	"4242 4242 4242 4242 4242",
	"************4242 5555 5555 4444",
	"4242424242424242 5555 5555 5555 4444",
	"550e8400-e29b-41d4-a716-446655440000 123e4567-e89b-12d3-a456-501800000009",
	"%B4242424242424242^DOE/JOHN^25121010000000000000?",
	";4242424242424242=25121010000000000000?",
	"5555555555554444 4242424242424242=2512101?",
	"4242424242424242.5555555555554444",
	"+6281234567899 0.4242424242424242",
	`{"card":{"number":"4242424242424242","cvv":"123"},"n":4242424242424242}`,
	`{"a":["\u0034242424242424242",{"pan":4.242424242424242e15}],"b":1,"c":{"d":2}}`,
	"-4242424242424242.00",
	"4.242424242424242e+15",
}

// fuzzStrategies are the strategies the text properties are checked under.
var fuzzStrategies = []Strategy{Last4, BINLast4, Redact, HMAC}

// naiveFindings is the scanner without its fast path: every run, found byte
// by byte, is examined.
func naiveFindings(src []byte) []finding {
	var sc scanner
	sc.init(src)
	var all []finding
	for i := 0; i < len(src); {
		if !isDigit(src[i]) {
			i++
			continue
		}
		e := i + 1
		for e < len(src) {
			if isDigit(src[e]) {
				e++
			} else if e+1 < len(src) && isSep(src[e]) && isDigit(src[e+1]) {
				e += 2
			} else {
				break
			}
		}
		sc.n = 0
		end := sc.run(i, e)
		all = append(all, sc.found()...)
		i = max(e, end)
	}
	return all
}

func fastFindings(src []byte) []finding {
	var sc scanner
	sc.init(src)
	var all []finding
	for sc.next() {
		all = append(all, sc.found()...)
	}
	return all
}

func FuzzText(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	m := newTestMasker(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		if fast, naive := fastFindings(in), naiveFindings(in); !slices.Equal(fast, naive) {
			t.Fatalf("fast scan %v, byte by byte %v", fast, naive)
		}
		contains := Contains(in)
		for _, s := range fuzzStrategies {
			out, c := m.Text(nil, in, s)
			if !bytes.Equal(in, orig) {
				t.Fatalf("%s: src modified", s)
			}
			if want, wc := m.scanText(nil, in, s); !bytes.Equal(out, want) || c != wc {
				t.Fatalf("%s: fast path %q %+v, scanner %q %+v", s, out, c, want, wc)
			}
			if c.IsZero() == contains {
				t.Fatalf("%s: Contains %v but counts %+v", s, contains, c)
			}
			if !contains && (len(out) != len(in) || (len(in) > 0 && &out[0] != &in[0])) {
				t.Fatalf("%s: text without PAN not passed through: %q", s, out)
			}
			// Nothing detectable is left, so no PAN of the input is.
			if Contains(out) {
				t.Fatalf("%s: output %q still holds a PAN (findings %v)", s, out, fastFindings(out))
			}
			again, c2 := m.Text(nil, out, s)
			if !bytes.Equal(again, out) || !c2.IsZero() {
				t.Fatalf("%s: not idempotent:\n%q\n%q", s, out, again)
			}
			if (s == Last4 || s == BINLast4) && c.SAD == 0 {
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
	})
}

func FuzzValue(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	m := newTestMasker(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		for _, s := range []Strategy{Last4, BINLast4, Redact} {
			out, c := m.Value(in, s)
			if !bytes.Equal(in, orig) {
				t.Fatalf("%s: src modified", s)
			}
			if c.IsZero() != bytes.Equal(out, in) {
				t.Fatalf("%s: counts %+v for %q -> %q", s, c, in, out)
			}
			digits := len(appendDigits(nil, out))
			if (s == Last4 && digits > 4) || (s == BINLast4 && digits > 10) || Contains(out) {
				t.Fatalf("%s: %q shows too much", s, out)
			}
			if again, _ := m.Value(out, s); !bytes.Equal(again, out) {
				t.Fatalf("%s: not idempotent: %q -> %q", s, out, again)
			}
		}
	})
}

func FuzzNumber(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{"0", "-0.0", "1e400", "4242424242424242e-0", ".4242424242424242e16", "4242424242424242.", "+4242424242424242", "00004242424242424242"} {
		f.Add([]byte(s))
	}
	m := newTestMasker(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, byRule := range []bool{false, true} {
			for _, s := range []Strategy{Last4, BINLast4, HMAC, Redact} {
				out, c := m.Number(in, s, byRule)
				if c.IsZero() != bytes.Equal(out, in) || (c.IsZero() && out == nil && in != nil) {
					t.Fatalf("%s %v: counts %+v for %q -> %q", s, byRule, c, in, out)
				}
				if out == nil {
					if !byRule {
						t.Fatalf("%s: detection nulled %q", s, in)
					}
					continue
				}
				if c.IsZero() {
					continue
				}
				nm, ok := parseNumber(out)
				if !ok {
					t.Fatalf("%s %v: %q -> %q is not a number", s, byRule, in, out)
				}
				ip := nm.integer(nil)
				if validPAN(ip) || Contains(out) {
					t.Fatalf("%s %v: %q -> %q is a PAN", s, byRule, in, out)
				}
				if again, _ := m.Number(out, s, false); !bytes.Equal(again, out) {
					t.Fatalf("%s: detection changes its own output %q -> %q", s, out, again)
				}
				if s != HMAC {
					if again, _ := m.Number(out, s, byRule); !bytes.Equal(again, out) {
						t.Fatalf("%s %v: not idempotent %q -> %q", s, byRule, out, again)
					}
				}
			}
		}
	})
}

func FuzzJSON(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	m := newTestMasker(f)
	rules := map[string]Strategy{
		"$.card.number": Last4,
		"$..pan":        BINLast4,
		"$.a[*]":        Redact,
		"$.b":           Drop,
		"$.c":           Null,
		"$[1]":          Drop,
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, c, err := m.JSON(in, rules, true)
		if !bytes.Equal(in, orig) {
			t.Fatal("src modified")
		}
		valid := json.Valid(in)
		if err != nil {
			if !errors.Is(err, ErrJSON) {
				t.Fatalf("error %v does not wrap ErrJSON", err)
			}
			if valid && !strings.Contains(err.Error(), "nested too deeply") {
				t.Fatalf("valid JSON refused: %v", err)
			}
			return
		}
		if !valid {
			t.Fatalf("invalid JSON accepted: %q", in)
		}
		if !json.Valid(out) {
			t.Fatalf("output is not valid JSON: %q", out)
		}
		if c.IsZero() != bytes.Equal(out, in) {
			t.Fatalf("counts %+v for %q -> %q", c, in, out)
		}
		again, c2, err := m.JSON(out, rules, true)
		if err != nil || !bytes.Equal(again, out) || !c2.IsZero() {
			t.Fatalf("not idempotent:\n%q\n%q %+v %v", out, again, c2, err)
		}
		// Every string left holds no PAN.
		var v any
		if err := json.Unmarshal(out, &v); err == nil {
			checkNoPAN(t, v)
		}
	})
}

// checkNoPAN fails if a decoded JSON value holds a string or key with a PAN.
func checkNoPAN(t *testing.T, v any) {
	t.Helper()
	switch v := v.(type) {
	case string:
		if Contains([]byte(v)) {
			t.Fatalf("string %q holds a PAN", v)
		}
	case []any:
		for _, e := range v {
			checkNoPAN(t, e)
		}
	case map[string]any:
		for k, e := range v {
			checkNoPAN(t, k)
			checkNoPAN(t, e)
		}
	}
}

// randomCardText builds text from pieces that make PANs, near-PANs and their
// surroundings likely: test PANs whole, grouped and cut, digits, separators,
// letters, '*', '.', '+', track sentinels and field separators.
func randomCardText(r *rand.Rand) []byte {
	pieces := []string{" ", "-", " ", "-", "*", ".", "+", "x", "B", "%B", "%", ";", "^", "=", "?", "^DOE/JOHN^", "=2512101", ",", "\n", "\"", "e", "cafe-", "0x", "_", "b", "F", "-4", "[REDACTED]", "[track data removed]", "\\u0034", "é"}
	var b []byte
	for range 1 + r.IntN(12) {
		switch r.IntN(6) {
		case 0, 1:
			pan := testPANs[r.IntN(len(testPANs))]
			switch r.IntN(4) {
			case 0:
				sep := " -"[r.IntN(2)]
				for i := 0; i < len(pan); i += 4 {
					if i > 0 {
						b = append(b, sep)
					}
					b = append(b, pan[i:min(i+4, len(pan))]...)
				}
			case 1:
				b = append(b, pan[r.IntN(len(pan)):]...)
			default:
				b = append(b, pan...)
			}
		case 2:
			for range 1 + r.IntN(6) {
				b = append(b, byte('0'+r.IntN(10)))
			}
		default:
			b = append(b, pieces[r.IntN(len(pieces))]...)
		}
	}
	return b
}

// randomIterations is the number of random texts TestTextPropertiesRandom
// checks.
var randomSeed = flag.Uint64("random-seed", 7, "seed of TestTextPropertiesRandom")

var randomIterations = flag.Int("random-iterations", 20000, "number of random texts TestTextPropertiesRandom checks")

func TestTextPropertiesRandom(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	r := rand.New(rand.NewPCG(*randomSeed, 11))
	n := *randomIterations
	if testing.Short() {
		n = 2000
	}
	for range n {
		in := randomCardText(r)
		if fast, naive := fastFindings(in), naiveFindings(in); !slices.Equal(fast, naive) {
			t.Fatalf("%q: fast scan %v, byte by byte %v", in, fast, naive)
		}
		for _, s := range fuzzStrategies {
			out, _ := m.Text(nil, in, s)
			if Contains(out) {
				t.Fatalf("%s: %q -> %q still holds a PAN", s, in, out)
			}
			if again, _ := m.Text(nil, out, s); !bytes.Equal(again, out) {
				t.Fatalf("%s: not idempotent: %q -> %q -> %q", s, in, out, again)
			}
		}
		for _, s := range []Strategy{Last4, BINLast4, Redact} {
			out, _ := m.Value(in, s)
			if again, _ := m.Value(out, s); !bytes.Equal(again, out) || Contains(out) {
				t.Fatalf("Value %s: %q -> %q -> %q", s, in, out, again)
			}
		}
		doc, _ := json.Marshal(map[string]any{"s": string(in), string(in): []any{string(in)}})
		out, _, err := m.JSON(doc, map[string]Strategy{"$.s": Last4}, true)
		if err != nil || !json.Valid(out) {
			t.Fatalf("JSON(%s) = %s, %v", doc, out, err)
		}
		if again, _, _ := m.JSON(out, map[string]Strategy{"$.s": Last4}, true); !bytes.Equal(again, out) {
			t.Fatalf("JSON not idempotent: %s -> %s -> %s", doc, out, again)
		}
	}
}
