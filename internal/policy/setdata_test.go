package policy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// dataPolicy allows a request when data.custos.extra.allow is true.
var dataPolicy = map[string]string{"p.rego": `package custos

default decision := {"allow": false, "reasons": ["no extra data"]}

decision := {"allow": true, "reasons": ["extra data allows"]} if data.custos.extra.allow == true
`}

func TestSetData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := policyDir(t, dataPolicy)
	var events []ReloadEvent
	e := newEngine(t, Options{Dir: dir, CacheEntries: -1, OnReload: func(ev ReloadEvent) { events = append(events, ev) }})
	in := sqlInput([]string{"agents"})
	if d := e.Decide(ctx, in); d.Allow {
		t.Fatalf("allowed before the data: %+v", d)
	}
	v1 := e.Version()
	if err := e.SetData(ctx, "custos/extra", map[string]any{"allow": true}); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, in); !d.Allow {
		t.Fatalf("denied with the data: %+v", d)
	}
	v2 := e.Version()
	if v2 == v1 {
		t.Fatal("the version did not change with the data")
	}
	// The data stays through a reload of the files.
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, in); !d.Allow || e.Version() != v2 {
		t.Fatalf("after a reload: %+v, version %s (want %s)", d, e.Version(), v2)
	}
	// Data that conflicts with the files is refused; the previous data keeps serving.
	writePolicy(t, dir, map[string]string{"p.rego": dataPolicy["p.rego"], "custos/extra/data.json": `{"allow": true}`})
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v3 := e.Version()
	if err := e.SetData(ctx, "custos/extra", map[string]any{"allow": false}); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("conflicting data: %v", err)
	}
	if d := e.Decide(ctx, in); !d.Allow || e.Version() != v3 {
		t.Fatalf("after a refused SetData: %+v, version %s (want %s)", d, e.Version(), v3)
	}
	for _, bad := range []string{"", "/", "custos/../x"} {
		if err := e.SetData(ctx, bad, map[string]any{}); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("SetData(%q): %v", bad, err)
		}
	}
	if len(events) == 0 || events[len(events)-1].Err == nil {
		t.Fatalf("the refused load was not reported: %+v", events)
	}
}

// Watch must not take the runtime data for a change of the files.
func TestSetDataWatchQuiet(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := policyDir(t, dataPolicy)
	loads := make(chan ReloadEvent, 100)
	e := newEngine(t, Options{Dir: dir, WatchInterval: 5 * time.Millisecond, OnReload: func(ev ReloadEvent) { loads <- ev }})
	if err := e.SetData(ctx, "custos/extra", map[string]any{"allow": true}); err != nil {
		t.Fatal(err)
	}
	<-loads // New
	<-loads // SetData
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	time.Sleep(100 * time.Millisecond) // twenty looks
	cancel()
	<-done
	if n := len(loads); n != 0 {
		t.Fatalf("Watch reloaded %d times with unchanged files", n)
	}
}
