package sqlclass

import "testing"

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
