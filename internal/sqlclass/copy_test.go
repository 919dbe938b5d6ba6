package sqlclass

import (
	"encoding/json"
	"testing"
)

// TestCopyOptions checks what COPY statements report of their target and
// format options, the way PostgreSQL reads them.
func TestCopyOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		q    string
		want string // the Copy as JSON
	}{
		{"COPY cards TO STDOUT",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"text","options":[],"header":false}`},
		{"COPY cards TO STDOUT WITH CSV HEADER QUOTE '9' FORCE QUOTE *",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"csv","options":["force_quote","format","header","quote"],"header":true,"quote":"9","force_quote":["*"]}`},
		{"COPY cards (pan, cvv) TO STDOUT (FORMAT CSV, HEADER, DELIMITER '|', NULL 'x', ESCAPE 'e', FORCE_QUOTE (pan), ENCODING 'latin1')",
			`{"direction":"to","target":"client","table":"public.cards","columns":["pan","cvv"],"query":false,"format":"csv","options":["delimiter","encoding","escape","force_quote","format","header","null"],"header":true,"delimiter":"|","null":"x","escape":"e","encoding":"latin1","force_quote":["pan"]}`},
		{"COPY cards TO STDOUT BINARY",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"binary","options":["format"],"header":false}`},
		{"COPY (SELECT * FROM cards) TO STDOUT (HEADER match)",
			`{"direction":"to","target":"client","table":"","columns":[],"query":true,"format":"text","options":["header"],"header":true}`},
		{"COPY cards TO STDOUT (HEADER false)",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"text","options":["header"],"header":false}`},
		{"COPY cards TO STDOUT (HEADER 1, NULL '')",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"text","options":["header","null"],"header":true,"null":""}`},
		{"COPY cards TO STDOUT (HEADER 0)",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"text","options":["header"],"header":false}`},
		{"COPY cards TO STDOUT (HEADER off, DELIMITER E'\\t')",
			`{"direction":"to","target":"client","table":"public.cards","columns":[],"query":false,"format":"text","options":["delimiter","header"],"header":false,"delimiter":"\t"}`},
		{"COPY s.cards FROM STDIN (FORMAT binary)",
			`{"direction":"from","target":"client","table":"s.cards","columns":[],"query":false,"format":"binary","options":["format"],"header":false}`},
		{"COPY cards TO '/tmp/x'",
			`{"direction":"to","target":"file","table":"public.cards","columns":[],"query":false,"format":"text","options":[],"header":false}`},
		{"COPY (SELECT 1) TO PROGRAM 'cat'",
			`{"direction":"to","target":"program","table":"","columns":[],"query":true,"format":"text","options":[],"header":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			t.Parallel()
			res, err := classify(tt.q, DefaultMaxBytes, DefaultMaxDepth)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Statements) != 1 || res.Statements[0].Copy == nil {
				t.Fatalf("no copy in %+v", res.Statements)
			}
			got, err := json.Marshal(res.Statements[0].Copy)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("copy:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	res, err := classify("SELECT 1", DefaultMaxBytes, DefaultMaxDepth)
	if err != nil || res.Statements[0].Copy != nil {
		t.Errorf("SELECT has a copy: %v %v", res, err)
	}
}
