package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/symbi-dev/symbi/gateway"
)

// A running symbi (serve or mcp) registers itself in DATA_DIR/run: PID.json says which
// configuration file it runs and where its control socket is, a unix socket (mode 0600,
// so only the same user) serving a small HTTP API for the CLI: `symbi ls` (GET
// /upstreams) and `symbi logs` (GET /logs). `symbi add|remove` find the processes
// running the file they edited there and send them SIGHUP.

// instance is one running symbi as its registry file describes it.
type instance struct {
	PID     int       `json:"pid"`
	Mode    string    `json:"mode"`   // serve or mcp
	Config  string    `json:"config"` // absolute path, "" for built-in defaults
	Socket  string    `json:"socket"`
	Started time.Time `json:"started"`
}

func runDir(dataDir string) string { return filepath.Join(dataDir, "run") }

// socketPath is the control socket of process pid: in DATA_DIR/run, or in the temporary
// directory when that path is too long for a unix socket.
func socketPath(dataDir string, pid int) string {
	p := filepath.Join(runDir(dataDir), strconv.Itoa(pid)+".sock")
	if abs, err := filepath.Abs(p); err == nil && len(abs) < 100 {
		return abs
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("symbi-%d-%d.sock", os.Getuid(), pid))
}

// controlInfo is what GET /upstreams returns for one upstream.
type controlInfo struct {
	gateway.UpstreamStatus
	// Verification counts the upstream's exposed tools by SchemaPin status.
	Verification map[string]int `json:"verification,omitempty"`
}

// startControl registers the process in DATA_DIR/run and serves the control socket
// until ctx ends; the returned func waits for the server to stop and unregisters.
func (a *app) startControl(ctx context.Context, mode string) (func(), error) {
	dir := runDir(a.cfg.Server.DataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	pid := os.Getpid()
	inst := instance{PID: pid, Mode: mode, Socket: socketPath(a.cfg.Server.DataDir, pid), Started: time.Now().UTC()}
	if a.configPath != "" {
		abs, err := filepath.Abs(a.configPath)
		if err != nil {
			return nil, fmt.Errorf("resolve config path: %w", err)
		}
		inst.Config = abs
	}
	_ = os.Remove(inst.Socket) // a previous process with this pid
	ln, err := net.Listen("unix", inst.Socket)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	if err := os.Chmod(inst.Socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	b, _ := json.Marshal(inst)
	reg := filepath.Join(dir, strconv.Itoa(pid)+".json")
	if err := writeFileAtomic(reg, b, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: controlHandler(a.gw, ctx), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }() // owned: ends at Close below
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	return func() {
		stop()
		_ = srv.Close()
		<-done
		_ = os.Remove(reg)
		_ = os.Remove(inst.Socket)
	}, nil
}

// controlHandler serves the control API; streams end when life does.
func controlHandler(gw *gateway.Gateway, life context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		verif := map[string]map[string]int{}
		for _, t := range gw.ToolList() {
			if t.Builtin {
				continue
			}
			if verif[t.Upstream] == nil {
				verif[t.Upstream] = map[string]int{}
			}
			verif[t.Upstream][t.Verification.Status]++
		}
		var out []controlInfo
		for _, st := range gw.Status() {
			out = append(out, controlInfo{UpstreamStatus: st, Verification: verif[st.Name]})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET /logs", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("upstream")
		follow := r.URL.Query().Get("follow") == "1"
		tail, ok := gw.UpstreamStderr(name)
		if !ok {
			http.Error(w, fmt.Sprintf("no upstream %q", name), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		flusher, _ := w.(http.Flusher)
		var n uint64
		for {
			lines, next := tail.Since(n)
			n = next
			for _, l := range lines {
				if _, err := io.WriteString(w, l+"\n"); err != nil {
					return
				}
			}
			if !follow {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-life.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			// A restart replaces the ring: follow the new process from its start.
			if cur, ok := gw.UpstreamStderr(name); !ok {
				_, _ = io.WriteString(w, "symbi: the upstream was removed\n")
				return
			} else if cur != tail {
				tail, n = cur, 0
			}
		}
	})
	return mux
}

// instances lists the live symbi processes registered in dataDir, oldest first;
// registrations of processes that are gone are removed.
func instances(dataDir string) []instance {
	dir := runDir(dataDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []instance
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var in instance
		if json.Unmarshal(b, &in) != nil || in.PID <= 0 {
			continue
		}
		if err := syscall.Kill(in.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			_ = os.Remove(p) // the process is gone
			continue
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b instance) int { return a.Started.Compare(b.Started) })
	return out
}

// controlClient is an HTTP client that reaches a control socket.
func controlClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

// writeFileAtomic writes data to a temporary file next to path and renames it over path,
// so a reader sees the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
