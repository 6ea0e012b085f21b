package policy

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// LimiterOptions configure a [Limiter]. The zero value (or nil) means defaults.
type LimiterOptions struct {
	// MaxKeys bounds the number of buckets kept. 0: 100,000. When full, idle buckets
	// (refilled to capacity, so equivalent to a fresh one) are evicted first, then the
	// least recently used.
	MaxKeys int
	// Now returns the current time (tests). nil: time.Now.
	Now func() time.Time
}

const limiterShards = 32

// RateLimiter enforces rate_limit conditions: [Limiter] in memory, or a limiter on the
// state replicas share, so that they enforce one limit together. Allow takes one token
// from the bucket of key, refilling at perMinute tokens a minute up to burst (burst <= 0
// means perMinute), and reports whether the call may proceed and, if not, how long until
// a token is available. A limiter that cannot tell refuses (fails closed).
type RateLimiter interface {
	Allow(key string, perMinute, burst int) (bool, time.Duration)
}

// Limiter is a token-bucket rate limiter keyed by identity and tool, for the rate_limit
// condition. The rate comes with each call, so a policy reload that changes it takes
// effect at once. It is safe for concurrent use and needs no background goroutine: memory
// is bounded by evicting buckets when a shard is full.
type Limiter struct {
	now      func() time.Time
	perShard int
	seed     maphash.Seed
	shards   [limiterShards]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens   float64
	capacity float64
	rate     float64 // tokens per second
	last     time.Time
}

// NewLimiter returns a limiter. opts may be nil.
func NewLimiter(opts *LimiterOptions) *Limiter {
	var o LimiterOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Limiter{now: o.Now, perShard: max(1, (o.MaxKeys+limiterShards-1)/limiterShards), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// LimitKey builds the bucket key for an identity and a tool.
func LimitKey(identity, tool string) string { return identity + "\x00" + tool }

// Allow takes one token from the bucket of key, refilling at perMinute tokens a minute
// up to burst (burst <= 0 means perMinute). It reports whether the call may proceed and,
// if not, how long until a token is available. perMinute <= 0 never allows.
func (l *Limiter) Allow(key string, perMinute, burst int) (bool, time.Duration) {
	if perMinute <= 0 {
		return false, time.Duration(math.MaxInt64)
	}
	if burst <= 0 {
		burst = perMinute
	}
	rate, capacity := float64(perMinute)/60, float64(burst)
	now := l.now()
	s := &l.shards[maphash.String(l.seed, key)%limiterShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[key]
	if !ok {
		if len(s.buckets) >= l.perShard {
			s.evict(now)
		}
		b = &bucket{tokens: capacity, last: now}
		s.buckets[key] = b
	} else if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(b.capacity, b.tokens+elapsed*b.rate)
		b.last = now
	}
	b.rate, b.capacity = rate, capacity
	b.tokens = min(b.tokens, capacity)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, wait
}

// Len returns the number of buckets held.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// evict frees room in a full shard: every bucket that has refilled to capacity goes
// (forgetting it changes nothing), and if that frees nothing, the least recently used.
func (s *limiterShard) evict(now time.Time) {
	var oldestKey string
	var oldest time.Time
	freed := 0
	for k, b := range s.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*b.rate >= b.capacity {
			delete(s.buckets, k)
			freed++
			continue
		}
		if oldestKey == "" || b.last.Before(oldest) {
			oldestKey, oldest = k, b.last
		}
	}
	if freed == 0 && oldestKey != "" {
		delete(s.buckets, oldestKey)
	}
}
