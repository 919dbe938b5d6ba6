package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"testing"
)

// TestJournalDropsSAD writes statement records whose captured results carry
// sensitive authentication data to a real journal: what is on disk and
// what is read back holds none of it, and the chain verifies.
func TestJournalDropsSAD(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	j := openTest(t, Options{HMACKey: key})
	ctx := context.Background()
	tests := []struct {
		name     string
		cols     []string
		rows     []string
		extra    []Attr
		wantRows []string
	}{
		{
			name:     "SAD columns",
			cols:     []string{"id", "cvv", "holder", "card_pin", "Track2"},
			rows:     []string{`["1","737","Ada","4921","x"]`, `["2",null,"Bob","0000","y"]`},
			wantRows: []string{`["1",null,"Ada",null,null]`, `["2",null,"Bob",null,null]`},
		},
		{
			name:     "SAD members of JSON values",
			cols:     []string{"id", "doc"},
			rows:     []string{`["1","{\"card\":{\"cvc\":\"9182\",\"brand\":\"visa\"}}"]`},
			wantRows: []string{`["1","{\"card\":{\"cvc\":null,\"brand\":\"visa\"}}"]`},
		},
		{
			name:     "track data in free text",
			cols:     []string{"id", "note"},
			rows:     []string{`["1","swiped ;4242424242424242=29121015432112345678? ok"]`},
			wantRows: nil, // checked below: no track data, no PAN
		},
		{
			name:     "a row that is not a JSON array",
			cols:     []string{"copy"},
			rows:     []string{`1	737`},
			wantRows: []string{`[]`},
		},
		{
			name:     "SAD-named attributes",
			cols:     []string{"id"},
			rows:     []string{`["1"]`},
			extra:    []Attr{String("custos.cvv", "737"), Strings("custos.extra.pin_block", []string{"04121"})},
			wantRows: []string{`["1"]`},
		},
	}
	for i, tt := range tests {
		ev := statement(i)
		ev.Attrs = append([]Attr{Strings(attrResultColumns, tt.cols), Strings(attrResultRows, tt.rows)}, tt.extra...)
		if _, err := j.Append(ctx, ev); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
	dir := j.opts.DataDir
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(AuditDir(dir))
	for _, s := range segs {
		b, _ := os.ReadFile(s.path)
		// Each secret as a value of its own: not inside a longer run of
		// digits or hex (a hash, a time) where it may occur by chance.
		for _, secret := range []string{"737", "4921", "9182", "04121", "=2912101543", ";4242"} {
			if regexp.MustCompile(`(^|[^0-9a-zA-Z])` + regexp.QuoteMeta(secret) + `($|[^0-9a-zA-Z])`).Match(b) {
				t.Errorf("%s holds %q", s.name, secret)
			}
		}
	}
	n := 0
	if err := ReadRecords(ctx, dir, 1, func(r *Record) error {
		if r.Name != EventStatement {
			return nil
		}
		tt := tests[n]
		n++
		rows, _ := r.Attr(attrResultRows)
		got := rows.Strings()
		if tt.wantRows != nil {
			if g, w := mustJSON(t, got), mustJSON(t, tt.wantRows); g != w {
				t.Errorf("%s: rows %s, want %s", tt.name, g, w)
			}
		}
		for _, a := range tt.extra {
			if v, ok := r.Attr(a.Key); ok && (v.Str() != "" || len(v.Strings()) > 0) {
				t.Errorf("%s: %s kept %q %q", tt.name, a.Key, v.Str(), v.Strings())
			}
		}
		if sc, _ := r.Attr(AttrPANScrubbed); sc.Int() == 0 {
			t.Errorf("%s: nothing counted as scrubbed", tt.name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(tests) {
		t.Fatalf("%d statements read", n)
	}
	if rep := mustVerify(t, dir, verifierOf(t, j)); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
