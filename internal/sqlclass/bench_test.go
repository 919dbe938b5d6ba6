package sqlclass

import (
	"strings"
	"testing"
)

const benchQuery = "SELECT c.id, c.pan, o.total FROM cards c JOIN orders o ON o.card_id = c.id WHERE o.created > $1 ORDER BY o.created DESC LIMIT 50"

func BenchmarkClassify(b *testing.B) {
	b.Run("cold", func(b *testing.B) {
		c := New(-1) // no cache: every call parses, normalizes and fingerprints
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Classify(benchQuery); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := New(0)
		if _, err := c.Classify(benchQuery); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Classify(benchQuery); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkPreScan is the pre-scan alone (the bounds checked before the parser) on a typical
// statement and on a 1 MB multi-row INSERT, beside the whole classification of the same text.
func BenchmarkPreScan(b *testing.B) {
	row := "(12345, 'a card holder name', 2.5, now()), "
	insert := "INSERT INTO t VALUES " + strings.Repeat(row, (1<<20)/len(row)) + "(1, 'x', 2.5, now())"
	for _, tc := range []struct{ name, q string }{{"typical", benchQuery}, {"insert-1MB", insert}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.q)))
			b.ReportAllocs()
			for b.Loop() {
				if err := checkLimits(tc.q, DefaultMaxBytes, DefaultMaxDepth); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/classify", func(b *testing.B) {
			c := New(-1)
			b.SetBytes(int64(len(tc.q)))
			for b.Loop() {
				if _, err := c.Classify(tc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
