// Command probe is a static MCP server over stdio that reports what it can see of its
// sandbox from the inside. The sandbox integration tests build it into an image FROM
// scratch. Tools: probe (identity, capabilities, filesystem, network, memory limit,
// kernel), hog (allocate memory until killed) and forkbomb (spawn processes until the
// pids limit refuses).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Report is the probe tool's output.
type Report struct {
	UID          int      `json:"uid"`
	GID          int      `json:"gid"`
	CapEff       string   `json:"cap_eff"`
	NoNewPrivs   string   `json:"no_new_privs"`
	Seccomp      string   `json:"seccomp"`
	RootWritable bool     `json:"root_writable"`
	TmpWritable  bool     `json:"tmp_writable"`
	Interfaces   []string `json:"interfaces"`
	MemoryLimit  string   `json:"memory_limit"`
	PidsLimit    string   `json:"pids_limit"`
	MemTotal     string   `json:"mem_total"`
	Uname        string   `json:"uname"`
	ProcVersion  string   `json:"proc_version"`
	Dmesg        string   `json:"dmesg"`
	EnvNames     []string `json:"env_names"`
	Hostname     string   `json:"hostname"`
}

// HogResult is the hog tool's output, returned only if the process survives.
type HogResult struct {
	AllocatedMiB int `json:"allocated_mib"`
}

// BombResult is the forkbomb tool's output.
type BombResult struct {
	Started int    `json:"started"`
	Error   string `json:"error"`
}

type none struct{}

type hogArgs struct {
	MaxMiB int `json:"max_mib" jsonschema:"stop after this many MiB (default 4096)"`
}

type bombArgs struct {
	Max int `json:"max" jsonschema:"stop after this many children (default 2000)"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleeper" {
		// A forkbomb child: bounded in time, whatever happens to the parent.
		time.Sleep(20 * time.Second)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "oneshot" {
		// For benchmarks of the tier without MCP: print and exit.
		fmt.Println("ok")
		return
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "symbi-probe", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "probe", Description: "report the sandbox as seen from inside"},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, Report, error) {
			return nil, probe(), nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "return the text"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in struct {
			Text string `json:"text"`
		}) (*mcp.CallToolResult, none, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, none{}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "hog", Description: "allocate memory until killed"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in hogArgs) (*mcp.CallToolResult, HogResult, error) {
			return nil, hog(ctx, in.MaxMiB), nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "forkbomb", Description: "spawn processes until refused"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in bombArgs) (*mcp.CallToolResult, BombResult, error) {
			return nil, forkbomb(ctx, in.Max), nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}

func probe() Report {
	r := Report{UID: os.Getuid(), GID: os.Getgid()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "CapEff":
				r.CapEff = strings.TrimSpace(v)
			case "NoNewPrivs":
				r.NoNewPrivs = strings.TrimSpace(v)
			case "Seccomp":
				r.Seccomp = strings.TrimSpace(v)
			}
		}
	}
	r.RootWritable = canWrite("/")
	r.TmpWritable = canWrite("/tmp")
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			r.Interfaces = append(r.Interfaces, i.Name)
		}
	}
	r.MemoryLimit = firstFile("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
	r.PidsLimit = firstFile("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		r.MemTotal = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		r.Uname = cstr(u.Sysname[:]) + " " + cstr(u.Release[:]) + " " + cstr(u.Version[:])
	}
	r.ProcVersion = strings.TrimSpace(firstFile("/proc/version"))
	r.Dmesg = dmesg()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		r.EnvNames = append(r.EnvNames, k)
	}
	r.Hostname, _ = os.Hostname()
	return r
}

func canWrite(dir string) bool {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

func firstFile(paths ...string) string {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

func cstr(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// dmesg reads the kernel message log with syslog(2); gVisor's says "Starting gVisor".
func dmesg() string {
	buf := make([]byte, 64<<10)
	n, _, errno := syscall.Syscall(syscall.SYS_SYSLOG, 3 /* SYSLOG_ACTION_READ_ALL */, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	if errno != 0 {
		return "error: " + errno.Error()
	}
	out := string(buf[:n])
	if len(out) > 4096 {
		out = out[:4096]
	}
	return out
}

func hog(ctx context.Context, maxMiB int) HogResult {
	if maxMiB <= 0 {
		maxMiB = 4096
	}
	var keep [][]byte
	deadline := time.Now().Add(60 * time.Second)
	for len(keep) < maxMiB && time.Now().Before(deadline) && ctx.Err() == nil {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1 // touch every page
		}
		keep = append(keep, b)
	}
	runtime.KeepAlive(keep)
	return HogResult{AllocatedMiB: len(keep)}
}

func forkbomb(ctx context.Context, max int) BombResult {
	if max <= 0 {
		max = 2000
	}
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	var kids []*exec.Cmd
	defer func() {
		for _, c := range kids {
			c.Process.Kill()
			c.Wait()
		}
	}()
	res := BombResult{}
	deadline := time.Now().Add(30 * time.Second)
	for len(kids) < max && time.Now().Before(deadline) && ctx.Err() == nil {
		c := exec.Command(self, "sleeper")
		c.Env = []string{"GOMAXPROCS=1"}
		if err := c.Start(); err != nil {
			res.Error = err.Error()
			if errors.Is(err, syscall.EAGAIN) {
				res.Error = "EAGAIN: " + err.Error()
			}
			break
		}
		kids = append(kids, c)
	}
	res.Started = len(kids)
	return res
}
