// Package pgtest starts a throwaway PostgreSQL cluster for tests: initdb into a
// temporary directory and a server listening on a unix socket only, started the first
// time a test asks for a database and stopped by [Stop] (call it from TestMain). Each
// test gets a new, empty database of its own.
//
// Without PostgreSQL installed the tests that need it skip, saying why; with
// SYMBI_REQUIRE_POSTGRES=1 (set by scripts/test.sh) they fail instead. .ci/postgres.sh
// installs it. SYMBI_PG_BIN names the directory of initdb and postgres explicitly.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type cluster struct {
	dir  string
	cmd  *exec.Cmd
	url  string // of the cluster's "postgres" database
	err  error
	next atomic.Int64
}

var (
	once sync.Once
	c    cluster
)

// binDir finds the newest installed PostgreSQL's programs.
func binDir() (string, error) {
	if d := os.Getenv("SYMBI_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL found under /usr/lib/postgresql (run .ci/postgres.sh)")
}

// postgresUser returns the postgres system user's ids when this process is root
// (PostgreSQL refuses to run as root); ok is false otherwise.
func postgresUser() (uid, gid int, ok bool, err error) {
	if os.Geteuid() != 0 {
		return 0, 0, false, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, false, fmt.Errorf("running as root needs the postgres user: %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, true, nil
}

func asUser(cmd *exec.Cmd) error {
	uid, gid, ok, err := postgresUser()
	if err != nil || !ok {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return nil
}

func chownTree(dir string) error {
	uid, gid, ok, err := postgresUser()
	if err != nil || !ok {
		return err
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

func (c *cluster) start() error {
	bin, err := binDir()
	if err != nil {
		return err
	}
	if c.dir, err = os.MkdirTemp("", "symbi-pgtest-"); err != nil {
		return err
	}
	data, sock := filepath.Join(c.dir, "data"), filepath.Join(c.dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if err := chownTree(c.dir); err != nil {
		return err
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "symbi", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if err := asUser(initdb); err != nil {
		return err
	}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, out)
	}
	logf, err := os.Create(filepath.Join(c.dir, "postgres.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", sock, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=100")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := asUser(c.cmd); err != nil {
		return err
	}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.url = "postgres://symbi@/postgres?host=" + url.QueryEscape(sock) + "&sslmode=disable"
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
			return fmt.Errorf("postgres did not accept connections within 30s: %w\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the cluster's server (fast shutdown) and removes it, if one was started.
// Call it once, after m.Run in TestMain.
func Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// URL returns the URL of a new, empty database on the test cluster, or skips (fails,
// under SYMBI_REQUIRE_POSTGRES=1) when PostgreSQL is not installed.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { c.err = c.start() })
	if c.err != nil {
		if os.Getenv("SYMBI_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL is required (SYMBI_REQUIRE_POSTGRES=1): %v", c.err)
		}
		t.Skipf("no PostgreSQL for this test (install it with .ci/postgres.sh; SYMBI_REQUIRE_POSTGRES=1 makes this a failure): %v", c.err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.next.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(c.url)
	u.Path = "/" + name
	return u.String()
}
