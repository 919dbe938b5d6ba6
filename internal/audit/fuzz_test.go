package audit

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/mask"
)

// FuzzDecodeRecord feeds arbitrary lines to the record decoder: it must not
// panic, and a line it accepts must be exactly the canonical encoding of
// what it returned, with the right hash.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleLine(1, Hash{}))
	f.Add(sampleLine(7, Hash{1}, Bool("b", true), Strings("l", []string{"x", "y"}), String("s", "a\"\\\n\x01é")))
	f.Add(sampleLine(1<<63, Hash{0xff}, Int("i", -9223372036854775808)))
	f.Add([]byte(`{"v":1,"seq":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeRecord(line)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrHashMismatch) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrHashMismatch", err)
			}
			return
		}
		again := appendLine(nil, r.Body(), r.Hash)
		if !bytes.Equal(bytes.TrimSuffix(again, []byte("\n")), bytes.TrimSuffix(line, []byte("\n"))) {
			t.Fatalf("accepted a line that is not canonical:\n%q\n%q", line, again)
		}
		if chainHash(r.PrevHash, r.Body()) != r.Hash {
			t.Fatal("accepted a record whose hash does not match")
		}
	})
}

// FuzzScrub checks that no scrubbed text holds a PAN, whatever the input.
func FuzzScrub(f *testing.F) {
	for _, s := range []string{"4242424242424242", "pan 4242 4242 4242 4242, amex 378282246310005",
		"4242 4242 4242 4242 4242", "%B4242424242424242^DOE/JOHN^2512101?", "x4242424242424242", "5555-5555-5555-4444."} {
		f.Add(s)
	}
	s, err := NewScrubber(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		out, _ := s.Scrub(text)
		if mask.Contains([]byte(out)) {
			t.Fatalf("Scrub(%q) = %q holds a PAN", text, out)
		}
	})
}

// FuzzRecordRoundTrip encodes arbitrary attribute values and decodes them.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("custos.x", "value", int64(3), true)
	f.Fuzz(func(t *testing.T, key, val string, n int64, b bool) {
		key, val = validUTF8(key), validUTF8(val)
		if key == "" || key == "z" || key == "zz" {
			return
		}
		attrs := []Attr{String(key, val), Int(key+"z", n), Bool(key+"zz", b)}
		r := Record{Seq: 1, Time: time.Unix(0, n).UTC(), Name: val, Severity: SeverityWarn, Attrs: attrs}
		sortAttrs(r.Attrs)
		body := r.Body()
		line := appendLine(nil, body, chainHash(r.PrevHash, body))
		got, err := DecodeRecord(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if !bytes.Equal(got.Body(), body) {
			t.Fatalf("round trip differs:\n%s\n%s", got.Body(), body)
		}
	})
}
