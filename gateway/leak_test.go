package gateway

import (
	"os"
	"testing"

	"github.com/symbi-dev/symbi/internal/pgtest"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is still running once they have
// all finished: every goroutine the gateway starts has an owner that waits for it. The
// PostgreSQL cluster some tests start is stopped afterwards.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		pgtest.Stop()
		os.Exit(code)
	}))
}
