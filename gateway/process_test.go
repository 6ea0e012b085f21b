package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStderrTail(t *testing.T) {
	var many []string
	for i := range StderrLines + 7 {
		many = append(many, fmt.Sprintf("line %d", i))
	}
	long := strings.Repeat("x", 3*StderrLineSize)
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "", []string{}},
		{"no final newline", "a\nb", []string{"a", "b"}},
		{"blank lines and CRLF dropped", "a\r\n\n  \nb\n", []string{"a", "b"}},
		{"keeps the last lines", strings.Join(many, "\n") + "\n", many[7:]},
		{"cuts a long line", "start\n" + long + "\nend\n", []string{"start", long[:StderrLineSize] + "…", "end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tail := NewStderrTail()
			var seen []string
			tail.Consume(strings.NewReader(tc.in), func(l string) { seen = append(seen, l) })
			if diff := cmp.Diff(tc.want, tail.Drained(context.Background())); diff != "" {
				t.Errorf("Lines mismatch (-want +got):\n%s", diff)
			}
			if len(seen) < len(tc.want) {
				t.Errorf("each saw %d lines, want at least %d", len(seen), len(tc.want))
			}
		})
	}
}

// TestStderrTailDrainedBounded: a stream held open (a grandchild keeps stderr) does not
// block Drained past its context; the lines so far are returned.
func TestStderrTailDrainedBounded(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	tail := NewStderrTail()
	kept := make(chan string, 1)
	done := make(chan struct{})
	go func() { defer close(done); tail.Consume(r, func(l string) { kept <- l }) }()
	if _, err := io.WriteString(w, "first\n"); err != nil {
		t.Fatal(err)
	}
	<-kept // kept before it is handed on
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if diff := cmp.Diff([]string{"first"}, tail.Drained(ctx)); diff != "" {
		t.Errorf("Drained mismatch (-want +got):\n%s", diff)
	}
	w.Close()
	<-done
}

func TestWithStderr(t *testing.T) {
	base := errors.New(`calling "initialize": EOF`)
	got := withStderr(base, []string{"1", "2", "3", "4", "5", "6", "npm error 404"})
	if !errors.Is(got, base) {
		t.Errorf("withStderr does not wrap the error")
	}
	if want := `calling "initialize": EOF; stderr: 3 | 4 | 5 | 6 | npm error 404`; got.Error() != want {
		t.Errorf("withStderr = %q, want %q", got, want)
	}
	if withStderr(base, nil) != base {
		t.Errorf("withStderr with no lines changed the error")
	}
}
