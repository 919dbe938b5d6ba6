package audit

import (
	"bytes"
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDurabilityPerRecord: with SyncInterval set, a Synced record is fsynced
// before Wait returns and a Written one only written; each says which.
// Concurrent Synced records share fsyncs.
func TestDurabilityPerRecord(t *testing.T) {
	t.Parallel()
	// An interval long enough that no timer fsync happens during the test.
	j := openTest(t, Options{SyncInterval: time.Hour})
	ctx := context.Background()
	start := j.Stats().Fsyncs
	written, err := j.EnqueueAs(ctx, nil, statement(1), Written).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if j.DurableSeq() >= written {
		t.Fatalf("a written record (seq %d) is durable (%d) without a fsync", written, j.DurableSeq())
	}
	synced, err := j.EnqueueAs(ctx, nil, statement(2), Synced).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := j.DurableSeq(); d < synced {
		t.Fatalf("a synced record (seq %d) is not durable when Wait returns (%d)", synced, d)
	}
	if n := j.Stats().Fsyncs - start; n != 1 {
		t.Errorf("%d fsyncs for one synced record", n)
	}
	// Append is Synced.
	seq, err := j.Append(ctx, statement(3))
	if err != nil || j.DurableSeq() < seq {
		t.Fatalf("Append: %d, %v, durable %d", seq, err, j.DurableSeq())
	}
	// Concurrent synced records share fsyncs.
	before := j.Stats().Fsyncs
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				seq, err := j.EnqueueAs(ctx, nil, statement(g*100+i), Synced).Wait(ctx)
				if err != nil || j.DurableSeq() < seq {
					t.Errorf("seq %d: %v, durable %d", seq, err, j.DurableSeq())
					return
				}
			}
		})
	}
	wg.Wait()
	if n := j.Stats().Fsyncs - before; n >= 16*20 {
		t.Errorf("%d fsyncs for %d concurrent synced records: none shared", n, 16*20)
	} else {
		t.Logf("%d synced records, %d fsyncs", 16*20, n)
	}
	// Each record says which durability it got.
	segs, err := listSegments(AuditDir(j.opts.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(segs[len(segs)-1].path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"custos.audit.durability":"written"`, `"custos.audit.durability":"fsync"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("no %s in the journal", want)
		}
	}
}

// TestDurabilityWithoutInterval: with SyncInterval zero every record is
// fsynced, Written or not, and says so.
func TestDurabilityWithoutInterval(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	seq, err := j.EnqueueAs(ctx, nil, statement(1), Written).Wait(ctx)
	if err != nil || j.DurableSeq() < seq {
		t.Fatalf("%d %v durable %d", seq, err, j.DurableSeq())
	}
	segs, _ := listSegments(AuditDir(j.opts.DataDir))
	b, _ := os.ReadFile(segs[len(segs)-1].path)
	if bytes.Contains(b, []byte(`"written"`)) {
		t.Error("a record says written with every record fsynced")
	}
}

// TestSyncedRecordFailsClosed: a synced record whose write fails is
// reported as not recorded.
func TestSyncedRecordFailsClosed(t *testing.T) {
	t.Parallel()
	var full atomic.Bool
	j := openTest(t, Options{SyncInterval: time.Hour, openFile: func(path string) (segmentFile, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		return faultyFile{File: f, full: &full}, nil
	}})
	ctx := context.Background()
	full.Store(true)
	if _, err := j.EnqueueAs(ctx, nil, statement(1), Synced).Wait(ctx); err == nil {
		t.Fatal("a record the journal could not write was reported kept")
	}
	full.Store(false)
	if _, err := j.EnqueueAs(ctx, nil, statement(2), Synced).Wait(ctx); err != nil {
		t.Fatalf("after the disk recovered: %v", err)
	}
}
