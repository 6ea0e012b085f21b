//go:build !unix

package policy

import "time"

// cpuTime is not measured on this platform; the cpu metrics read as zero.
func cpuTime() time.Duration { return 0 }
