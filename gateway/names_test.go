package gateway

import (
	"strings"
	"testing"
)

func TestExposedName(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tc := range []struct {
		name, prefix, in, want string
	}{
		{"prefixed", "everything", "echo", "everything__echo"},
		{"no prefix", "", "echo", "echo"},
		{"exactly 64", "p", strings.Repeat("x", 61), "p__" + strings.Repeat("x", 61)},
		{"shortened", "p", long, ("p__" + long)[:55] + "_" + "bbdc9e0f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExposedName(tc.prefix, tc.in)
			if tc.name == "shortened" {
				// The hash suffix is checked for shape and stability, not a magic value.
				if len(got) != MaxToolNameLen || got[55] != '_' || got != ExposedName(tc.prefix, tc.in) {
					t.Fatalf("ExposedName(%q, %q) = %q (len %d)", tc.prefix, tc.in, got, len(got))
				}
				if other := ExposedName(tc.prefix, long+"b"); other == got {
					t.Fatalf("two long names collide: %q", got)
				}
				return
			}
			if got != tc.want {
				t.Errorf("ExposedName(%q, %q) = %q, want %q", tc.prefix, tc.in, got, tc.want)
			}
		})
	}
}
