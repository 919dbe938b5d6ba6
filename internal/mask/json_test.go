package mask

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSON(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	tests := []struct {
		name   string
		paths  map[string]Strategy
		detect bool
		in     string
		want   string
		counts Counts
	}{
		{
			name: "detect in strings", detect: true,
			in:     `{"card":{"number":"4242424242424242","exp":"12/25"},"id":123,"note":"paid with 5555 5555 5555 4444"}`,
			want:   `{"card":{"number":"************4242","exp":"12/25"},"id":123,"note":"paid with **** **** **** 4444"}`,
			counts: Counts{PANs: 2},
		},
		{
			name: "detect in numbers", detect: true,
			in:     `[4242424242424242, 4242424242424241, 12, -378282246310005, 4.242424242424242e15]`,
			want:   `[1000000000004242, 4242424242424241, 12, -100000000000005, 1000000000004242]`,
			counts: Counts{PANs: 3},
		},
		{
			name: "detect through escapes", detect: true,
			in:     `{"pan":"\u0034242424242424242","note":"line\n4242424242424242\t\"q\""}`,
			want:   `{"pan":"************4242","note":"line\n************4242\t\"q\""}`,
			counts: Counts{PANs: 2},
		},
		{
			name: "detect in keys", detect: true,
			in:     `{"4242424242424242":{"ok":true}}`,
			want:   `{"************4242":{"ok":true}}`,
			counts: Counts{PANs: 1},
		},
		{
			name: "detect track data", detect: true,
			in:     `{"raw":"%B4242424242424242^DOE/JOHN^2512101?"}`,
			want:   `{"raw":"[track data removed]"}`,
			counts: Counts{SAD: 1},
		},
		{
			name: "no detection", detect: false,
			in:   `{"pan":"4242424242424242","n":4242424242424242}`,
			want: `{"pan":"4242424242424242","n":4242424242424242}`,
		},
		{
			name:  "rule on a string masks whatever its digits",
			paths: map[string]Strategy{"$.card.number": Last4},
			in:    `{"card":{"number":"4242424242424241","other":"4242424242424242"}}`,
			want:  `{"card":{"number":"************4241","other":"4242424242424242"}}`, counts: Counts{PANs: 1},
		},
		{
			name:  "rule on array elements",
			paths: map[string]Strategy{"$.cards[*].pan": BINLast4},
			in:    `{"cards":[{"pan":"4242424242424242"},{"pan":"5555555555554444"},{"x":1}]}`,
			want:  `{"cards":[{"pan":"424242******4242"},{"pan":"555555******4444"},{"x":1}]}`, counts: Counts{PANs: 2},
		},
		{
			name:  "rule on a number keeps its type",
			paths: map[string]Strategy{"$.pan": Last4},
			in:    `{"pan": 4242424242424241}`,
			want:  `{"pan": 1000000000004241}`, counts: Counts{PANs: 1},
		},
		{
			name:  "index and quoted names",
			paths: map[string]Strategy{"$['card data'][1]": Redact, `$["a.b"]`: Null},
			in:    `{"card data":["4242424242424242","4242424242424242"],"a.b":{"x":1}}`,
			want:  `{"card data":["4242424242424242","[REDACTED]"],"a.b":null}`, counts: Counts{PANs: 2},
		},
		{
			name:  "descendant",
			paths: map[string]Strategy{"$..pan": Redact},
			in:    `{"a":{"pan":"1"},"b":[{"c":{"pan":2}}],"pan":"x"}`,
			want:  `{"a":{"pan":"[REDACTED]"},"b":[{"c":{"pan":0}}],"pan":"[REDACTED]"}`, counts: Counts{PANs: 3},
		},
		{
			name:  "rule on a container applies to its leaves",
			paths: map[string]Strategy{"$.card": Last4},
			in:    `{"card":{"number":"4242424242424242","cvv_ok":true,"n":[4242424242424242]},"x":"4242424242424242"}`,
			want:  `{"card":{"number":"************4242","cvv_ok":true,"n":[1000000000004242]},"x":"4242424242424242"}`, counts: Counts{PANs: 2},
		},
		{
			name:  "the most restrictive rule wins",
			paths: map[string]Strategy{"$.card": Redact, "$.card.last4": Last4, "$.card.pan": Drop},
			in:    `{"card":{"last4":"4242","pan":"4242424242424242"}}`,
			want:  `{"card":{"last4":"[REDACTED]"}}`, counts: Counts{PANs: 2},
		},
		{
			name:  "drop first member",
			paths: map[string]Strategy{"$.a": Drop},
			in:    `{"a":1,"b":2,"c":3}`,
			want:  `{"b":2,"c":3}`, counts: Counts{PANs: 1},
		},
		{
			name:  "drop middle member",
			paths: map[string]Strategy{"$.b": Drop},
			in:    `{ "a" : 1 , "b" : [2] , "c" : 3 }`,
			want:  `{ "a" : 1  , "c" : 3 }`, counts: Counts{PANs: 1},
		},
		{
			name:  "drop last members",
			paths: map[string]Strategy{"$.b": Drop, "$.c": Drop},
			in:    `{"a":1,"b":2,"c":{"d":3}}`,
			want:  `{"a":1}`, counts: Counts{PANs: 2},
		},
		{
			name:  "drop all members",
			paths: map[string]Strategy{"$.*": Drop},
			in:    `{"a":1,"b":2}`,
			want:  `{}`, counts: Counts{PANs: 2},
		},
		{
			name:  "drop an array element nulls it",
			paths: map[string]Strategy{"$[1]": Drop},
			in:    `[1,2,3]`,
			want:  `[1,null,3]`, counts: Counts{PANs: 1},
		},
		{
			name:  "drop the document nulls it",
			paths: map[string]Strategy{"$": Drop},
			in:    ` {"a":1} `,
			want:  ` null `, counts: Counts{PANs: 1},
		},
		{
			name:  "hmac",
			paths: map[string]Strategy{"$.pan": HMAC},
			in:    `{"pan":"4242 4242 4242 4242"}`,
			want:  `{"pan":"` + func() string { h, _ := Fingerprint(testKey, []byte("4242424242424242")); return h }() + `"}`, counts: Counts{PANs: 1},
		},
		{
			name: "SAD members are nulled", detect: false,
			in:     `{"cvc":"123","cvc_check":"pass","card_pin":1234,"track2":{"x":"1"},"pin_block":["a"],"cvv":null,"cid":true,"amount":12}`,
			want:   `{"cvc":null,"cvc_check":"pass","card_pin":null,"track2":null,"pin_block":null,"cvv":null,"cid":true,"amount":12}`,
			counts: Counts{SAD: 4},
		},
		{
			name:  "SAD beats a masking rule",
			paths: map[string]Strategy{"$.card": Last4},
			in:    `{"card":{"cvv2":"123"}}`,
			want:  `{"card":{"cvv2":null}}`, counts: Counts{SAD: 1},
		},
		{
			name: "unchanged", detect: true,
			in:   `{"id":"550e8400-e29b-41d4-a716-446655440000","ts":"2024-01-15T12:30:45Z","n":[1,2.5,-3e10,true,false,null],"s":"\u00e9"}`,
			want: `{"id":"550e8400-e29b-41d4-a716-446655440000","ts":"2024-01-15T12:30:45Z","n":[1,2.5,-3e10,true,false,null],"s":"\u00e9"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, c, err := m.JSON([]byte(tt.in), tt.paths, tt.detect)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Fatalf("\n got %s\nwant %s", out, tt.want)
			}
			if c != tt.counts {
				t.Errorf("counts %+v, want %+v", c, tt.counts)
			}
			if !json.Valid(out) {
				t.Errorf("output is not valid JSON")
			}
		})
	}
}

func TestJSONUnchangedIsSrc(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	src := []byte(`{"a":[1,"two",{"b":null}]}`)
	out, c, err := m.JSON(src, map[string]Strategy{"$.x": Last4}, true)
	if err != nil || &out[0] != &src[0] || !c.IsZero() {
		t.Fatalf("got %s %+v %v", out, c, err)
	}
}

func TestJSONInvalid(t *testing.T) {
	t.Parallel()
	m := newTestMasker(t)
	for _, in := range []string{
		``, ` `, `{`, `{"a":}`, `{"a":1,}`, `[1,2`, `[1 2]`, "\"\x01\"", `01`, `1.`, `.5`, `-`, `1e`, `+1`,
		`{} {}`, `{"a" 1}`, `{a:1}`, `"\x"`, `"\u12"`, `tru`, `nul`, `"abc`, `[1,]`, `NaN`,
	} {
		if json.Valid([]byte(in)) {
			t.Fatalf("%q: fixture is valid JSON", in)
		}
		if _, _, err := m.JSON([]byte(in), nil, true); !errors.Is(err, ErrJSON) {
			t.Errorf("JSON(%q) err = %v, want ErrJSON", in, err)
		}
	}
	deep := strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1)
	if _, _, err := m.JSON([]byte(deep), nil, true); !errors.Is(err, ErrJSON) {
		t.Errorf("deep document: err = %v, want ErrJSON", err)
	}
	ok := strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth)
	if _, _, err := m.JSON([]byte(ok), nil, true); err != nil {
		t.Errorf("document at the depth limit: %v", err)
	}
}

func TestJSONPaths(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"$", "$.a", "$.a.b", "$.cards[*].pan", "$..pan", "$..*", "$..[0]", "$[0][1]", "$['a b']", `$["a\"b"]`, "$.*", "$[*]"} {
		if err := ValidJSONPath(p); err != nil {
			t.Errorf("ValidJSONPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "a.b", "$.", "$..", "$[", "$[-1]", "$[01]", "$[?(@.x)]", "$[0:2]", "$['a'", "$.a]", "$a", strings.Repeat(".a", 40)} {
		if err := ValidJSONPath(p); !errors.Is(err, ErrJSONPath) {
			t.Errorf("ValidJSONPath(%q) = %v, want ErrJSONPath", p, err)
		}
	}
	m := newTestMasker(t)
	if _, _, err := m.JSON([]byte(`{}`), map[string]Strategy{"$.a": "mask"}, false); !errors.Is(err, ErrStrategy) {
		t.Errorf("unknown strategy: err = %v", err)
	}
	if _, _, err := m.JSON([]byte(`{}`), map[string]Strategy{"a": Last4}, false); !errors.Is(err, ErrJSONPath) {
		t.Errorf("bad path: err = %v", err)
	}
}
