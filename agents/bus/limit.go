package bus

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrRateLimited is what a sender over its rate gets (wrapped in a *RateLimitError).
var ErrRateLimited = errors.New("sender over its rate limit")

// RateLimitError refuses a message of a sender that has used up its tokens; retrying
// after RetryAfter will find one.
type RateLimitError struct {
	Sender     string
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%s: %s may send again in %s", ErrRateLimited, e.Sender, e.RetryAfter.Round(time.Millisecond))
}

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// limiter is a token bucket per sender: rate tokens a second, at most burst saved up.
type limiter struct {
	rate  float64 // tokens per second; 0: unlimited
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(rate)))
	}
	return &limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// take spends one of sender's tokens at now, or says how long until there is one.
func (l *limiter) take(sender string, now time.Time) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[sender]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[sender] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	return &RateLimitError{Sender: sender, RetryAfter: max(wait, time.Millisecond)}
}

// sweep forgets, at most once a minute, the buckets that have refilled: a full bucket
// is the same as none.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for s, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, s)
		}
	}
}
