package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// sampleLine returns a stored line for a record with the given attrs.
func sampleLine(seq uint64, prev Hash, attrs ...Attr) []byte {
	r := Record{Seq: seq, PrevHash: prev, Time: time.Date(2026, 5, 1, 10, 0, 0, 123, time.UTC),
		Name: EventStatement, Severity: SeverityInfo, Attrs: attrs}
	body := r.Body()
	return appendLine(nil, body, chainHash(prev, body))
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		attrs []Attr
	}{
		{"no attributes", nil},
		{"every kind", []Attr{Bool("b", false), Int("i", -42), String("s", "x"), Strings("l", []string{"a", ""})}},
		{"escapes", []Attr{String("s", "quote \" backslash \\ nl \n tab \t cr \r nul \x00 del \x7f é ☃ \u2028")}},
		{"empty list", []Attr{Strings("l", []string{})}},
		{"big int", []Attr{Int("i", -1<<63)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			attrs := append([]Attr(nil), tc.attrs...)
			sortAttrs(attrs)
			line := sampleLine(3, Hash{1}, attrs...)
			r, err := DecodeRecord(line)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			again := appendLine(nil, r.Body(), r.Hash)
			if !bytes.Equal(again, line) {
				t.Fatalf("round trip:\n%s\n%s", line, again)
			}
		})
	}
}

func sortAttrs(a []Attr) {
	for i := 1; i < len(a); i++ {
		for k := i; k > 0 && a[k].Key < a[k-1].Key; k-- {
			a[k], a[k-1] = a[k-1], a[k]
		}
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	t.Parallel()
	good := string(sampleLine(2, Hash{9}, String("a", "x"), Int("n", 5)))
	good = strings.TrimSuffix(good, "\n")
	cases := []struct {
		name string
		line string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"no hash", `{"v":1}`, ErrMalformed},
		{"space", strings.Replace(good, `"seq":2`, `"seq": 2`, 1), ErrMalformed},
		{"unknown member", strings.Replace(good, `{"v":1,`, `{"v":1,"x":1,`, 1), ErrMalformed},
		{"version", strings.Replace(good, `{"v":1,`, `{"v":2,`, 1), ErrMalformed},
		{"escaped digit", strings.Replace(good, `"x"`, `"\u0078"`, 1), ErrMalformed},
		{"attrs out of order", strings.Replace(good, `"a":"x","n":5`, `"n":5,"a":"x"`, 1), ErrMalformed},
		{"duplicate attr", strings.Replace(good, `"a":"x","n":5`, `"a":"x","a":"x","n":5`, 1), ErrMalformed},
		{"float", strings.Replace(good, `"n":5`, `"n":5.0`, 1), ErrMalformed},
		{"object value", strings.Replace(good, `"n":5`, `"n":{}`, 1), ErrMalformed},
		{"uppercase hash", good[:len(good)-10] + strings.ToUpper(good[len(good)-10:len(good)-2]) + `"}`, ErrMalformed},
		{"time not canonical", strings.Replace(good, `.000000123Z`, `.000000123+00:00`, 1), ErrMalformed},
		{"seq zero", strings.Replace(good, `"seq":2`, `"seq":0`, 1), ErrMalformed},
		{"edited", strings.Replace(good, `"n":5`, `"n":6`, 1), ErrHashMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := DecodeRecord([]byte(tc.line)); !errors.Is(err, tc.want) {
				t.Fatalf("DecodeRecord = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCheckpointText(t *testing.T) {
	t.Parallel()
	c := Checkpoint{Origin: originPrefix + "00112233445566778899aabbccddeeff", Seq: 42, Hash: Hash{1, 2}, Time: time.Date(2026, 5, 1, 0, 0, 0, 5, time.UTC)}
	got, err := parseCheckpoint(c.Text())
	if err != nil || got != c {
		t.Fatalf("parse(%q) = %+v, %v", c.Text(), got, err)
	}
	skey, vkey, err := GenerateKey("k")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := VerifierKey(skey); err != nil || v != vkey {
		t.Fatalf("VerifierKey = %q %v, want %q", v, err, vkey)
	}
}

// BenchmarkAppend measures group commit: parallel appenders, each Append
// waiting for its record to be durable on the disk under the temp dir.
// records/s is the throughput; records/fsync says how many appends one
// fsync served.
func BenchmarkAppend(b *testing.B) {
	procs := runtime.GOMAXPROCS(0)
	for _, appenders := range []int{1, 4 * procs, 16 * procs, 64 * procs, 256 * procs} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			j, err := Open(Options{DataDir: b.TempDir(), CheckpointInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close(context.Background())
			ctx := context.Background()
			ev := statement(1)
			before := j.Stats()
			start := time.Now()
			b.ResetTimer()
			if appenders == 1 {
				for b.Loop() {
					if _, err := j.Append(ctx, ev); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(appenders / procs)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := j.Append(ctx, ev); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			el := time.Since(start)
			st := j.Stats()
			recs, fsyncs := st.Records-before.Records, st.Fsyncs-before.Fsyncs
			b.ReportMetric(float64(recs)/el.Seconds(), "records/s")
			b.ReportMetric(float64(fsyncs)/el.Seconds(), "fsyncs/s")
			b.ReportMetric(float64(recs)/float64(max(fsyncs, 1)), "records/fsync")
		})
	}
}

// BenchmarkEncode measures the appender's share of the work: attributes,
// PAN scrubbing, canonical encoding.
func BenchmarkEncode(b *testing.B) {
	j, err := Open(Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close(context.Background())
	ev := statement(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.encode(nil, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
