package pgfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// resultStream is a server → client result: RowDescription, rows DataRows
// of three columns, CommandComplete, ReadyForQuery.
func resultStream(b *testing.B, rows int) []byte {
	b.Helper()
	var out []byte
	out, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("id"), DataTypeOID: 23, DataTypeSize: 4},
		{Name: []byte("holder"), DataTypeOID: 25, DataTypeSize: -1},
		{Name: []byte("pan"), DataTypeOID: 25, DataTypeSize: -1},
	}}).Encode(out)
	for i := range rows {
		out, _ = (&pgproto3.DataRow{Values: [][]byte{
			[]byte("12345"), []byte("Ada Lovelace"), []byte("4242424242424242"),
		}}).Encode(out)
		_ = i
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1000")}).Encode(out)
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(out)
	return out
}

type countingHook struct{ n int }

func (h *countingHook) Wants(d Direction, typ byte) bool { return d == ServerToClient && typ == 'D' }
func (h *countingHook) Handle(context.Context, Direction, *Message, Conn) (Verdict, error) {
	h.n++
	return Forward, nil
}
func (h *countingHook) Close(error) {}

// BenchmarkRelay measures the relay's per-message cost on a result set
// (1000 rows), from a buffered reader to a buffered writer, with no hook
// and with a hook that sees every DataRow.
func BenchmarkRelay(b *testing.B) {
	for _, tc := range []struct {
		name string
		hook Hook
	}{
		{"no_hook", nil},
		{"datarow_hook", &countingHook{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			stream := resultStream(b, 1000)
			msgs := 1003
			ss := &session{ctx: context.Background(), log: slog.New(slog.DiscardHandler)}
			if tc.hook != nil {
				ss.wants[ServerToClient]['D'] = []Hook{tc.hook}
			}
			var mu sync.Mutex
			src := bytes.NewReader(stream)
			br := bufio.NewReaderSize(src, serverBufSize)
			dst := frameWriter{w: bufio.NewWriterSize(io.Discard, clientBufSize)}
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				src.Reset(stream)
				br.Reset(src)
				if err := ss.pump(ServerToClient, newFrameReader(br, 1<<20), &dst, &mu); !errors.Is(err, errServerClosed) {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*msgs), "ns/msg")
		})
	}
}
