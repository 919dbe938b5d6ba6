package policy

import (
	"context"
	"encoding/json"
	"testing"
)

// benchStatement has the shape of sqlclass.Statement.
type benchStatement struct {
	Command    string          `json:"command"`
	DDL        bool            `json:"ddl"`
	ReadOnly   bool            `json:"read_only"`
	Reads      []string        `json:"reads"`
	Writes     []string        `json:"writes"`
	Functions  []string        `json:"functions"`
	Flags      []string        `json:"flags"`
	Columns    []benchColumn   `json:"columns"`
	Settings   []string        `json:"settings"`
	Explains   *benchStatement `json:"explains,omitempty"`
	Prepared   *benchStatement `json:"prepared,omitempty"`
	Normalized string          `json:"normalized"`
}

type benchColumn struct {
	Table  string   `json:"table"`
	Column string   `json:"column"`
	Usage  []string `json:"usage"`
}

// benchInput is a typical agent query: a join of a cardholder-data table,
// the PAN selected, other columns filtered on.
func benchInput() *Input {
	in := sqlInput(agents)
	in.SQL.Normalized = "SELECT c.pan, lower(u.email) FROM cards c JOIN customers u ON u.card_id = c.id WHERE c.id = $1 ORDER BY u.name"
	in.SQL.Statements = []benchStatement{{
		Command:   "SELECT",
		ReadOnly:  true,
		Reads:     []string{"public.cards", "public.customers"},
		Functions: []string{"lower"},
		Columns: []benchColumn{
			{"public.cards", "pan", []string{"output"}},
			{"public.cards", "id", []string{"filter"}},
			{"public.customers", "card_id", []string{"filter"}},
			{"public.customers", "email", []string{"output", "function"}},
			{"public.customers", "name", []string{"order"}},
		},
		Normalized: in.SQL.Normalized,
	}}
	return in
}

// BenchmarkDecide measures the default policy: cold evaluates every time
// (cache off), cached repeats a statement, cached_raw too with the
// statements passed as JSON.
func BenchmarkDecide(b *testing.B) {
	raw := benchInput()
	stmts, err := json.Marshal(raw.SQL.Statements)
	if err != nil {
		b.Fatal(err)
	}
	raw.SQL.Statements = json.RawMessage(stmts)
	for _, bc := range []struct {
		name    string
		entries int
		in      *Input
	}{{"cold", -1, benchInput()}, {"cached", 0, benchInput()}, {"cached_raw", 0, raw}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEngine(b, Options{CacheEntries: bc.entries})
			ctx := context.Background()
			if d := e.Decide(ctx, bc.in); !d.Allow {
				b.Fatalf("decision = %+v", d)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if d := e.Decide(ctx, bc.in); !d.Allow || d.Cached != (bc.entries == 0) {
					b.Fatalf("decision = %+v", d)
				}
			}
		})
	}
}
