package policy

import (
	"context"
	"errors"
	"sync"
	"testing"
)

func TestOnReload(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []ReloadEvent
	dir := policyDir(t, constPolicy(true, "one"))
	e := newEngine(t, Options{Dir: dir, OnReload: func(ev ReloadEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	ctx := context.Background()
	v1 := e.Version()

	writePolicy(t, dir, constPolicy(false, "two"))
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v2 := e.Version()
	writePolicy(t, dir, map[string]string{"p.rego": "package custos\n\ndecision := {\n"})
	if err := e.Reload(ctx); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("Reload of a broken policy: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	tests := []struct {
		name              string
		version, previous string
		files             int
		failed            bool
	}{
		{"first load in New", v1, "", 1, false},
		{"reload", v2, v1, 1, false},
		{"failed reload keeps the version", v2, v2, 0, true},
	}
	if len(events) != len(tests) {
		t.Fatalf("%d events, want %d: %+v", len(events), len(tests), events)
	}
	for i, tt := range tests {
		ev := events[i]
		if ev.Source != dir || ev.Version != tt.version || ev.Previous != tt.previous || ev.Files != tt.files || (ev.Err != nil) != tt.failed {
			t.Errorf("%s: %+v, want version %s previous %q files %d failed %v", tt.name, ev, tt.version, tt.previous, tt.files, tt.failed)
		}
	}
	if !errors.Is(events[2].Err, ErrInvalidPolicy) {
		t.Errorf("failed reload error = %v", events[2].Err)
	}
}

func TestOnReloadFirstLoadFails(t *testing.T) {
	t.Parallel()
	var got []ReloadEvent
	dir := policyDir(t, map[string]string{"p.rego": "package custos\n\ndecision := {\n"})
	_, err := New(context.Background(), Options{Dir: dir, OnReload: func(ev ReloadEvent) { got = append(got, ev) }})
	if err == nil {
		t.Fatal("a broken policy loaded")
	}
	if len(got) != 1 || got[0].Err == nil || got[0].Version != "" || got[0].Previous != "" {
		t.Fatalf("events = %+v", got)
	}
}
