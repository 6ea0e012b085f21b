package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Filter selects records. Zero fields match everything.
type Filter struct {
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	Identity string
	Tool     string
	Upstream string
	Decision Decision
	Type     Type
	Limit    int // keep only the newest Limit matches; 0 means all
}

// Match reports whether ev passes the filter (Limit aside).
func (f *Filter) Match(ev *Event) bool {
	switch {
	case !f.Since.IsZero() && ev.Time.Before(f.Since):
		return false
	case !f.Until.IsZero() && !ev.Time.Before(f.Until):
		return false
	case f.Identity != "" && ev.Identity != f.Identity:
		return false
	case f.Tool != "" && ev.Tool != f.Tool:
		return false
	case f.Upstream != "" && ev.Upstream != f.Upstream:
		return false
	case f.Decision != "" && ev.Decision != f.Decision:
		return false
	case f.Type != "" && ev.Type != f.Type:
		return false
	}
	return true
}

// Apply filters records already in memory (for example Log.Recent), keeping the newest
// Limit matches in order.
func (f *Filter) Apply(recs []Record) []Record {
	var out []Record
	for i := range recs {
		if f.Match(&recs[i].Event) {
			out = append(out, recs[i])
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Scan reads every record of the trail in dir and calls fn: the main chain in order,
// then each other writer's chain in order (Record.Writer names it). It reads; it does
// not verify (use Verify): lines that do not decode are skipped and counted in the
// returned number, and an incomplete last line is ignored.
func Scan(ctx context.Context, dir string, fn func(Record) error) (skipped int, err error) {
	ws, err := Writers(dir)
	if err != nil {
		return 0, err
	}
	for _, w := range append([]string{""}, ws...) {
		n, err := scanChain(ctx, dir, w, fn)
		skipped += n
		if err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

// scanChain reads writer w's chain ("" for the main one) in order.
func scanChain(ctx context.Context, dir, w string, fn func(Record) error) (skipped int, err error) {
	cdir := WriterDir(dir, w)
	segs, err := listSegments(cdir)
	if err != nil {
		return 0, err
	}
	for _, name := range segs {
		n, _, err := scanSegment(ctx, cdir, name, 0, tagWriter(w, fn))
		skipped += n
		if err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

func tagWriter(w string, fn func(Record) error) func(Record) error {
	if w == "" || w == MainWriter {
		return fn
	}
	return func(r Record) error {
		r.Writer = w
		return fn(r)
	}
}

// byTime orders records of several chains by event time, keeping each chain's order.
func byTime(recs []Record) {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Event.Time.Before(recs[j].Event.Time) })
}

// scanSegment reads complete lines from offset; it returns the offset after the last
// complete line read.
func scanSegment(ctx context.Context, dir, name string, offset int64, fn func(Record) error) (skipped int, end int64, err error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return 0, offset, fmt.Errorf("open audit segment: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, offset, fmt.Errorf("seek audit segment: %w", err)
	}
	r := bufio.NewReaderSize(f, 256<<10)
	end = offset
	lineNo := 0
	for {
		if err := ctx.Err(); err != nil {
			return skipped, end, err
		}
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return skipped, end, nil // a partial line is left for later
		}
		if err != nil {
			return skipped, end, fmt.Errorf("read audit segment: %w", err)
		}
		end += int64(len(line))
		lineNo++
		p, perr := parseLine(line[:len(line)-1])
		if perr != nil {
			skipped++
			continue
		}
		rec, perr := p.record(name, lineNo)
		if perr != nil {
			skipped++
			continue
		}
		if err := fn(rec); err != nil {
			return skipped, end, err
		}
	}
}

// Query returns the records in dir that match f, oldest first; with several writers'
// chains, merged by event time.
func Query(ctx context.Context, dir string, f Filter) ([]Record, error) {
	ws, err := Writers(dir)
	if err != nil {
		return nil, err
	}
	var all []Record
	for _, w := range append([]string{""}, ws...) {
		var out []Record
		_, err := scanChain(ctx, dir, w, func(r Record) error {
			if f.Match(&r.Event) {
				out = append(out, r)
				if f.Limit > 0 && len(out) >= 2*f.Limit {
					out = append(out[:0], out[len(out)-f.Limit:]...)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		all = append(all, out...)
	}
	if len(ws) > 0 {
		byTime(all)
	}
	if f.Limit > 0 && len(all) > f.Limit {
		all = all[len(all)-f.Limit:]
	}
	return all, nil
}

// Tail returns the last n records of the trail, oldest first (with several writers'
// chains, the last n by event time), reading only the newest segments it needs.
func Tail(ctx context.Context, dir string, n int) ([]Record, error) {
	ws, err := Writers(dir)
	if err != nil {
		return nil, err
	}
	var all []Record
	for _, w := range append([]string{""}, ws...) {
		out, err := tailChain(ctx, dir, w, n)
		if err != nil {
			return nil, err
		}
		all = append(all, out...)
	}
	if len(ws) > 0 {
		byTime(all)
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all, nil
}

func tailChain(ctx context.Context, dir, w string, n int) ([]Record, error) {
	dir = WriterDir(dir, w)
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for i := len(segs) - 1; i >= 0 && len(out) < n; i-- {
		var part []Record
		if _, _, err := scanSegment(ctx, dir, segs[i], 0, tagWriter(w, func(r Record) error {
			part = append(part, r)
			return nil
		})); err != nil {
			return nil, err
		}
		out = append(part, out...)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

// Follow calls fn for every record with seq > after, as the trail grows, following
// segment rotation, until ctx ends (it then returns nil) or fn fails. It polls every
// poll (0 means 250ms).
func Follow(ctx context.Context, dir string, after uint64, poll time.Duration, fn func(Record) error) error {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	cur, off := "", int64(0)
	last := after
	emit := func(r Record) error {
		if r.Seq <= last {
			return nil
		}
		last = r.Seq
		return fn(r)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		segs, err := listSegments(dir)
		if err != nil {
			return err
		}
		if cur == "" && len(segs) > 0 {
			// Start in the newest segment whose first seq is at most last+1.
			cur = segs[0]
			for _, s := range segs {
				if first, _ := strconv.ParseUint(s[len(segPrefix):len(segPrefix)+20], 10, 64); first <= last+1 {
					cur = s
				}
			}
		}
		for cur != "" {
			_, end, err := scanSegment(ctx, dir, cur, off, emit)
			if errors.Is(err, os.ErrNotExist) {
				cur, off = "", 0 // removed; start over from the listing
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			off = end
			next := ""
			for _, s := range segs {
				if s > cur {
					next = s
					break
				}
			}
			if next == "" {
				break
			}
			// Finish the current segment before moving on: re-read once in case it grew.
			if _, _, err = scanSegment(ctx, dir, cur, off, emit); err != nil && ctx.Err() == nil {
				return err
			}
			cur, off = next, 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// FollowAll is Follow over every writer's chain in the trail, including chains that
// appear while it runs: after[w] is the last seq already seen of writer w ("" for the
// main chain). fn is called from one goroutine at a time, in each chain's order.
func FollowAll(ctx context.Context, dir string, after map[string]uint64, poll time.Duration, fn func(Record) error) error {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		first   error
		started = map[string]bool{}
	)
	serial := func(r Record) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(r)
	}
	start := func(w string) {
		started[w] = true
		wg.Go(func() { // owned: ends with ctx
			err := Follow(ctx, WriterDir(dir, w), after[w], poll, tagWriter(w, serial))
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	start("")
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		ws, err := Writers(dir)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		for _, w := range ws {
			if !started[w] {
				start(w)
			}
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return first
		case <-t.C:
		}
	}
}
