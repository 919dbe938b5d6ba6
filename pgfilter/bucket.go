package pgfilter

import (
	"context"
	"time"
)

// bucket is a token bucket's level, refilled at rate a second up to
// burst. A bucket never filled is full. Its users hold the lock that
// guards it.
type bucket struct {
	level float64
	at    time.Time
}

// fill brings the level up to now and returns it.
func (b *bucket) fill(now time.Time, rate, burst float64) float64 {
	if b.at.IsZero() {
		b.level = burst
	} else {
		b.level = min(burst, b.level+now.Sub(b.at).Seconds()*rate)
	}
	b.at = now
	return b.level
}

// until is how long the level takes to reach want at rate.
func (b *bucket) until(want, rate float64) time.Duration {
	return time.Duration((want - b.level) / rate * float64(time.Second)).Round(time.Microsecond)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
