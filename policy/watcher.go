package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a [Watcher]. The zero value (or nil) means defaults.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Interval between two checks of the directory for changes. 0: one second.
	Interval time.Duration
	// Now returns the current time (tests). nil: time.Now.
	Now func() time.Time
	// EvalTimeout bounds one evaluation; one that takes longer denies and says so.
	// 0: DefaultEvalTimeout.
	EvalTimeout time.Duration
}

// Status describes the policy a [Watcher] serves, for /readyz and `symbi doctor`.
type Status struct {
	Dir        string    `json:"dir,omitempty"` // "" for the built-in default
	Files      []string  `json:"files"`         // files of the policy being served
	Revision   string    `json:"revision"`      // content hash of the policy being served
	LoadedAt   time.Time `json:"loaded_at"`     // when the policy being served was loaded
	LastReload time.Time `json:"last_reload"`   // last reload attempt, successful or not
	LastError  string    `json:"last_error,omitempty"`
	Reloads    uint64    `json:"reloads"` // successful reloads, the first load included
	Errors     uint64    `json:"errors"`  // failed reloads
}

// Degraded reports whether the last reload failed, so the policy being served is older
// than the files on disk.
func (s Status) Degraded() bool { return s.LastError != "" }

// Watcher is an [Engine] that serves the policy of a directory and reloads it when the
// files change. A reload compiles the new policy aside and swaps it in atomically; a
// policy that fails to load or compile is logged and counted, and the previous one keeps
// serving. With no directory it serves the built-in default policy.
//
// Changes are detected by polling (see [Watcher.Run]) rather than with inotify: polling
// a handful of small files once a second costs nothing measurable, it sees changes that
// inotify misses (Kubernetes ConfigMap updates, which swap a symbolic link to a
// directory; editors that rename over the file; network and overlay filesystems), and it
// needs no extra dependency nor per-platform code. The price is up to one Interval of
// latency, and [Watcher.Reload] is there for callers that want it now (SIGHUP).
type Watcher struct {
	dir      string
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time
	timeout  time.Duration // per evaluation

	cur atomic.Pointer[Rego]

	mu     sync.Mutex // serialises reloads; guards status and stamp
	status Status
	stamp  string // stat fingerprint of the directory when last loaded or attempted
}

var _ Engine = (*Watcher)(nil)

// NewWatcher loads and compiles the policy in dir ("" for the built-in default). An
// initial policy that does not load or compile is an error (*CompileError for a compile
// error); after that, failed reloads keep the previous policy.
func NewWatcher(ctx context.Context, dir string, opts *Options) (*Watcher, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.EvalTimeout <= 0 {
		o.EvalTimeout = DefaultEvalTimeout
	}
	w := &Watcher{dir: dir, log: o.Logger, interval: o.Interval, now: o.Now, timeout: o.EvalTimeout}
	w.status.Dir = dir
	if dir == "" {
		w.cur.Store(Default())
		w.status.Files = []string{"<built-in default>"}
		w.status.Revision = "default"
		w.status.LoadedAt = w.now()
		w.status.LastReload = w.status.LoadedAt
		w.status.Reloads = 1
		return w, nil
	}
	if err := w.Reload(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// Decide evaluates the policy being served, within Options.EvalTimeout.
func (w *Watcher) Decide(ctx context.Context, in *Input) (Decision, error) {
	return w.cur.Load().DecideWithin(ctx, in, w.timeout)
}

// Engine returns the compiled policy being served now.
func (w *Watcher) Engine() *Rego { return w.cur.Load() }

// Status returns a snapshot of the watcher's state.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Files = append([]string(nil), s.Files...)
	return s
}

// Reload reads and compiles the directory now and, if it compiles, swaps it in. It returns
// the load or compile error, having kept the previous policy. Reloading an unchanged
// directory is a no-op that counts as a success.
func (w *Watcher) Reload(ctx context.Context) error {
	if w.dir == "" {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reloadLocked(ctx, dirStamp(w.dir))
}

func (w *Watcher) reloadLocked(ctx context.Context, stamp string) error {
	w.stamp = stamp
	w.status.LastReload = w.now()
	src, err := LoadDir(w.dir)
	if err == nil && src.Revision == w.status.Revision && w.cur.Load() != nil {
		w.status.LastError = ""
		return nil // same contents (touched, or rewritten identically)
	}
	var e *Rego
	if err == nil {
		if len(src.Bundle.Modules) == 0 {
			err = &CompileError{Problems: []Problem{{File: w.dir, Message: "no *.rego policy files"}}}
		} else {
			e, err = Compile(ctx, src.Bundle)
		}
	}
	if err != nil {
		w.status.Errors++
		w.status.LastError = err.Error()
		w.log.Error("policy reload failed", "dir", w.dir, "error", err, "errors", w.status.Errors)
		return err
	}
	w.cur.Store(e)
	w.status.Files = src.Files
	w.status.Revision = src.Revision
	w.status.LoadedAt = w.status.LastReload
	w.status.LastError = ""
	w.status.Reloads++
	w.log.Info("policy loaded", "dir", w.dir, "files", len(src.Files), "revision", src.Revision)
	return nil
}

// Run checks the directory for changes every Interval and reloads it when its files
// changed, until ctx ends; then it returns nil. It owns no goroutine beyond the caller's.
// With no directory it just waits for ctx.
func (w *Watcher) Run(ctx context.Context) error {
	if w.dir == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.poll(ctx)
		}
	}
}

// poll reloads when the directory's stat fingerprint moved since the last attempt. A
// failed attempt is not retried until the files change again.
func (w *Watcher) poll(ctx context.Context) {
	stamp := dirStamp(w.dir)
	w.mu.Lock()
	defer w.mu.Unlock()
	if stamp == w.stamp {
		return
	}
	_ = w.reloadLocked(ctx, stamp) // logged and counted
}

// dirStamp fingerprints the policy files of dir by name, size and modification time,
// following symbolic links, without reading them. A directory that cannot be walked gets
// a stamp naming the error, so a persistent error is reported once, not once per poll.
func dirStamp(dir string) string {
	h := sha256.New()
	err := walkPolicyFiles(dir, func(path string, info fs.FileInfo) error {
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", path, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}
