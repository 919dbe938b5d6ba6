package mask

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

const benchSize = 64 << 10

// plainText is about 64 KiB of log-like text without PANs but with many
// digits: timestamps, ids, addresses, durations, amounts, UUIDs, phone
// numbers and prose.
func plainText() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	words := []string{"the", "request", "for", "customer", "was", "processed", "after", "retry", "with", "status", "and", "payment", "order"}
	for b.Len() < benchSize {
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "2024-%02d-%02d %02d:%02d:%02d.%06d+00 INFO request_id=%d user=%d ip=10.%d.%d.%d latency=%dms\n",
				1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e6), r.Int64N(1e9), r.IntN(1e6), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(5000))
		case 1:
			fmt.Fprintf(&b, "order %d amount %d.%02d EUR session %08x-%04x-%04x-%04x-%012x phone +1 555 %03d %04d\n",
				r.IntN(1e7), r.IntN(1e5), r.IntN(100), r.Uint32(), r.IntN(1<<16), r.IntN(1<<16), r.IntN(1<<16), r.Int64N(1<<48), r.IntN(1000), r.IntN(10000))
		default:
			for range 12 + r.IntN(12) {
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString("done.\n")
		}
	}
	return b.Bytes()
}

// denseText is about 64 KiB of CSV rows, each with a PAN.
func denseText() []byte {
	pans := []string{"4242424242424242", "5555 5555 5555 4444", "378282246310005", "6011-1111-1111-1117", "3056930009020004", "6200000000000005"}
	var b bytes.Buffer
	for i := 0; b.Len() < benchSize; i++ {
		fmt.Fprintf(&b, "%d,%s,Jane Doe,2024-01-%02d,%d.%02d\n", i, pans[i%len(pans)], 1+i%28, i%1000, i%100)
	}
	return b.Bytes()
}

// jsonDoc is about 64 KiB of JSON: an array of payment objects, with a PAN in
// one of every four.
func jsonDoc() []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; b.Len() < benchSize; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		pan := "null"
		if i%4 == 0 {
			pan = `"4242424242424242"`
		}
		fmt.Fprintf(&b, `{"id":%d,"created":"2024-01-15T12:30:%02dZ","amount":%d.%02d,"currency":"EUR","customer":{"name":"Jane Doe","email":"jane%d@example.com"},"card":{"pan":%s,"last4":"4242","exp_month":12,"exp_year":2030},"tags":["a","b"],"ok":true}`,
			i, i%60, i%1000, i%100, i, pan)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func BenchmarkContains(b *testing.B) {
	src := plainText()
	if Contains(src) {
		b.Fatal("plain text holds a PAN")
	}
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if Contains(src) {
			b.Fatal("found")
		}
	}
}

func BenchmarkText(b *testing.B) {
	m := newTestMasker(b)
	for _, bc := range []struct {
		name string
		src  []byte
		s    Strategy
	}{
		{"plain", plainText(), Last4},
		{"dense/last4", denseText(), Last4},
		{"dense/redact", denseText(), Redact},
		{"dense/hmac", denseText(), HMAC},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst := make([]byte, 0, len(bc.src)*2)
			b.SetBytes(int64(len(bc.src)))
			for b.Loop() {
				_, _ = m.Text(dst[:0], bc.src, bc.s)
			}
		})
	}
}

func BenchmarkJSON(b *testing.B) {
	m := newTestMasker(b)
	doc := jsonDoc()
	plain := bytes.ReplaceAll(doc, []byte(`"4242424242424242"`), []byte(`"none"`))
	paths := map[string]Strategy{"$[*].card.pan": Last4, "$..cvv": Drop}
	for _, bc := range []struct {
		name   string
		src    []byte
		paths  map[string]Strategy
		detect bool
	}{
		{"detect", doc, nil, true},
		{"detect/no-pan", plain, nil, true},
		{"paths", doc, paths, false},
		{"paths+detect", doc, paths, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.src)))
			for b.Loop() {
				if _, _, err := m.JSON(bc.src, bc.paths, bc.detect); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkValue(b *testing.B) {
	m := newTestMasker(b)
	src := []byte("4242424242424242")
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		_, _ = m.Value(src, Last4)
	}
}

func BenchmarkIsSADColumn(b *testing.B) {
	for b.Loop() {
		_ = IsSADColumn("customer_shipping_address")
	}
}
