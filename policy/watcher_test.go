package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// Write aside and rename, as editors and config management do, so a concurrent
		// reader never sees a half-written file.
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
}

func reasonPolicy(reason string) string {
	return "package symbi.authz\n\ndecision := {\"allow\": true, \"reason\": \"" + reason + "\"}\n"
}

const brokenPolicy = "package symbi.authz\n\ndecision := {\"allow\": true\n"

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"authz.rego":           "package symbi.authz\n\ndecision := {\"allow\": input.identity.id in data.teams.blue.members, \"reason\": data.settings.name}\n",
		"authz_test.rego":      "package symbi.authz_test\n\ntest_ok if true\n",
		"settings.json":        `{"name": "prod", "n": 1.5}`,
		"teams/blue.json":      `{"members": ["ide"]}`,
		".hidden.rego":         "not rego at all",
		".git/config.json":     "not json",
		"notes.txt":            "ignored",
		"lib/helpers.rego":     "package symbi.lib\n\nx := 1\n",
		"..data/shadowed.json": `{"x": 1}`,
	})
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"authz.rego", "authz_test.rego", "lib/helpers.rego", "settings.json", "teams/blue.json"}, src.Files); diff != "" {
		t.Errorf("Files mismatch (-want +got):\n%s", diff)
	}
	var mods []string
	for _, m := range src.Bundle.Modules {
		mods = append(mods, m.Name)
	}
	if diff := cmp.Diff([]string{"authz.rego", "lib/helpers.rego"}, mods); diff != "" {
		t.Errorf("Modules mismatch (-want +got):\n%s", diff)
	}
	if len(src.Tests) != 1 || src.Tests[0].Name != "authz_test.rego" {
		t.Errorf("Tests = %+v", src.Tests)
	}
	e, err := Compile(context.Background(), src.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), &Input{Action: ActionToolsCall, Identity: Identity{ID: "ide"}})
	if err != nil || !d.Allow || d.Reason != "prod" {
		t.Errorf("Decide = %+v, %v; want allow with reason prod (data files mounted)", d, err)
	}

	src2, err := LoadDir(dir)
	if err != nil || src2.Revision != src.Revision {
		t.Errorf("revision not stable: %q vs %q (%v)", src.Revision, src2.Revision, err)
	}
	writeFiles(t, dir, map[string]string{"settings.json": `{"name": "dev"}`})
	src3, err := LoadDir(dir)
	if err != nil || src3.Revision == src.Revision {
		t.Errorf("revision did not change with the contents (%v)", err)
	}
}

func TestLoadDirErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"bad json", map[string]string{"a.rego": reasonPolicy("x"), "d.json": `{`}, "decode data file d.json"},
		{"trailing json", map[string]string{"a.rego": reasonPolicy("x"), "d.json": `{} {}`}, "trailing data"},
		{"data conflict", map[string]string{"a.rego": reasonPolicy("x"), "t.json": `1`, "t/u.json": `2`}, "mount data file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			_, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadDir err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("no rego", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"d.json": `{}`})
		if _, _, err := CompileDir(context.Background(), dir); !IsCompileError(err) {
			t.Errorf("CompileDir err = %v, want a compile error", err)
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		if _, err := LoadDir(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Error("LoadDir of a missing dir succeeded")
		}
	})
}

func decideReason(t testing.TB, e Engine) string {
	t.Helper()
	d, err := e.Decide(context.Background(), toolInput(ActionToolsCall, StatusVerified))
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d.Reason
}

func TestWatcherReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("one")})
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w, err := NewWatcher(ctx, dir, &Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	if got := decideReason(t, w); got != "one" {
		t.Fatalf("reason = %q, want one", got)
	}
	st := w.Status()
	if st.Reloads != 1 || st.Errors != 0 || st.Degraded() || !st.LoadedAt.Equal(clock) {
		t.Errorf("initial status = %+v", st)
	}

	// A broken policy keeps the previous one, and says so.
	clock = clock.Add(time.Minute)
	writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
	err = w.Reload(ctx)
	var ce *CompileError
	if !errors.As(err, &ce) || ce.Problems[0].File != "p.rego" || ce.Problems[0].Line == 0 {
		t.Fatalf("Reload err = %v, want a located compile error", err)
	}
	if got := decideReason(t, w); got != "one" {
		t.Errorf("after a broken reload reason = %q, want the previous policy's one", got)
	}
	st = w.Status()
	if st.Errors != 1 || st.Reloads != 1 || !st.Degraded() || !strings.Contains(st.LastError, "p.rego:") ||
		!st.LastReload.Equal(clock) || st.LoadedAt.Equal(clock) {
		t.Errorf("status after a broken reload = %+v", st)
	}

	// Fixing it recovers.
	clock = clock.Add(time.Minute)
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("two"), "extra.rego": "package symbi.extra\n\ny := 2\n"})
	if err := w.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := decideReason(t, w); got != "two" {
		t.Errorf("reason = %q, want two", got)
	}
	st = w.Status()
	if st.Errors != 1 || st.Reloads != 2 || st.Degraded() || !st.LoadedAt.Equal(clock) {
		t.Errorf("status after the fix = %+v", st)
	}
	if diff := cmp.Diff([]string{"extra.rego", "p.rego"}, st.Files); diff != "" {
		t.Errorf("Files mismatch (-want +got):\n%s", diff)
	}

	// Reloading unchanged files is not a new revision.
	if err := w.Reload(ctx); err != nil || w.Status().Reloads != 2 {
		t.Errorf("unchanged reload: err %v, status %+v", err, w.Status())
	}
}

func TestWatcherDefault(t *testing.T) {
	w, err := NewWatcher(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := w.Decide(context.Background(), toolInput(ActionToolsCall, StatusRevoked))
	if err != nil || d.Allow {
		t.Errorf("default watcher allowed a revoked tool: %+v %v", d, err)
	}
	if st := w.Status(); st.Revision != "default" || st.Dir != "" {
		t.Errorf("status = %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestWatcherInitialError(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
	if _, err := NewWatcher(context.Background(), dir, nil); !IsCompileError(err) {
		t.Errorf("NewWatcher err = %v, want a compile error", err)
	}
}

// waitFor polls cond; it fails the test after a generous deadline. It bounds a wait for
// the background poller, it does not measure it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcherRunPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("one")})
	w, err := NewWatcher(context.Background(), dir, &Options{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("second")})
	waitFor(t, "the new policy", func() bool { return decideReason(t, w) == "second" })

	writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
	waitFor(t, "the failed reload", func() bool { return w.Status().Errors == 1 })
	if got := decideReason(t, w); got != "second" {
		t.Errorf("reason = %q after a broken policy, want second", got)
	}
	// The broken file is not recompiled at every tick.
	errs := w.Status().Errors
	time.Sleep(50 * time.Millisecond)
	if got := w.Status().Errors; got != errs {
		t.Errorf("errors went from %d to %d without a change", errs, got)
	}

	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("third-one")})
	waitFor(t, "the fixed policy", func() bool { return decideReason(t, w) == "third-one" })
	if st := w.Status(); st.Degraded() {
		t.Errorf("status still degraded after the fix: %+v", st)
	}
}

// TestWatcherReloadUnderLoad swaps policies (good and broken) while decisions run
// concurrently: no decision may fail, and each must come from one of the good policies.
func TestWatcherReloadUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v0")})
	w, err := NewWatcher(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		failures atomic.Int64
		count    atomic.Int64
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := toolInput(ActionToolsCall, StatusVerified)
			for !stop.Load() {
				d, err := w.Decide(ctx, in)
				if err != nil || !d.Allow || !strings.HasPrefix(d.Reason, "v") {
					failures.Add(1)
				}
				count.Add(1)
			}
		}()
	}
	reloads := 0
	for i := 1; i <= 30; i++ {
		if i%3 == 0 {
			writeFiles(t, dir, map[string]string{"p.rego": brokenPolicy})
			if err := w.Reload(ctx); err == nil {
				t.Error("broken policy reloaded without error")
			}
			continue
		}
		writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v" + string(rune('a'+i%26)) + strings.Repeat("x", i))})
		if err := w.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		reloads++
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d decisions failed during reloads", n, count.Load())
	}
	if st := w.Status(); st.Errors != 10 || st.Reloads != uint64(reloads+1) {
		t.Errorf("status = %+v, want 10 errors and %d reloads", st, reloads+1)
	}
}

func TestRunTests(t *testing.T) {
	ctx := context.Background()
	res, err := RunTests(ctx, "testdata/realistic")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) < 5 {
		t.Fatalf("ran %d tests, want the realistic policy's tests", len(res))
	}
	for _, r := range res {
		if !r.Pass || r.File != "authz_test.rego" || r.Line == 0 {
			t.Errorf("test %+v", r)
		}
	}

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego":      reasonPolicy("x"),
		"limits.json": `{"max": 3}`,
		"p_test.rego": "package symbi.authz_test\n\nimport data.symbi.authz\n\ntest_reason if authz.decision.reason == \"x\"\n\ntest_wrong if authz.decision.reason == \"y\"\n\ntest_data if data.limits.max == 3\n\ntodo_test_later if false\n",
	})
	res, err = RunTests(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res {
		switch {
		case r.Skip:
			got[r.Name] = "skip"
		case r.Pass:
			got[r.Name] = "pass"
		default:
			got[r.Name] = "fail"
			if r.Error == "" {
				t.Errorf("failed test %s has no message", r.Name)
			}
		}
	}
	want := map[string]string{
		"data.symbi.authz_test.test_reason":     "pass",
		"data.symbi.authz_test.test_wrong":      "fail",
		"data.symbi.authz_test.test_data":       "pass",
		"data.symbi.authz_test.todo_test_later": "skip",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results mismatch (-want +got):\n%s", diff)
	}

	writeFiles(t, dir, map[string]string{"p_test.rego": "package symbi.authz_test\n\ntest_x if {\n"})
	if _, err := RunTests(ctx, dir); !IsCompileError(err) {
		t.Errorf("RunTests with a broken test file: err = %v, want a compile error", err)
	}
}
