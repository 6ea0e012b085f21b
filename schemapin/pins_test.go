package schemapin

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/symbi-dev/symbi/internal/pgtest"
	"github.com/symbi-dev/symbi/internal/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// pinBackend opens databases for pin stores: each call of open returns a new handle
// on the same database, as another replica (or process) would have.
type pinBackend struct {
	name string
	// shared returns a function opening handles on one new database.
	shared func(t *testing.T) func(t *testing.T) *sql.DB
}

var pinBackends = []pinBackend{
	{"sqlite", func(t *testing.T) func(t *testing.T) *sql.DB {
		path := t.TempDir() + "/" + store.FileName
		return func(t *testing.T) *sql.DB {
			db, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	}},
	{"postgres", func(t *testing.T) func(t *testing.T) *sql.DB {
		u := pgtest.URL(t)
		return func(t *testing.T) *sql.DB {
			db, err := store.OpenPostgres(t.Context(), u)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	}},
}

func TestPinStoreBackends(t *testing.T) {
	for _, b := range pinBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			open := b.shared(t)
			ps, err := NewPinStore(ctx, open(t))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok, err := ps.Get(ctx, "echo", "a.example"); err != nil || ok {
				t.Fatalf("Get of nothing = %v, %v", ok, err)
			}
			first, err := ps.pinFirst(ctx, Pin{ToolID: "echo", Domain: "a.example", Fingerprint: "sha256:one", DeveloperName: "Dev"})
			if err != nil {
				t.Fatal(err)
			}
			if first.Fingerprint != "sha256:one" || first.Source != "tofu" || first.PinnedAt.IsZero() {
				t.Errorf("first pin = %+v", first)
			}
			again, err := ps.pinFirst(ctx, Pin{ToolID: "echo", Domain: "a.example", Fingerprint: "sha256:two"})
			if err != nil {
				t.Fatal(err)
			}
			if again.Fingerprint != "sha256:one" {
				t.Errorf("a second key replaced the first pin: %+v", again)
			}
			// An operator's pin replaces; another handle (replica) sees it.
			if err := ps.Pin(ctx, Pin{ToolID: "echo", Domain: "a.example", Fingerprint: "sha256:two"}); err != nil {
				t.Fatal(err)
			}
			other, err := NewPinStore(ctx, open(t))
			if err != nil {
				t.Fatal(err)
			}
			got, ok, err := other.Get(ctx, "echo", "a.example")
			if err != nil || !ok || got.Fingerprint != "sha256:two" || got.Source != "operator" {
				t.Errorf("other handle reads %+v, %v, %v", got, ok, err)
			}
			if err := other.Pin(ctx, Pin{ToolID: "zz", Domain: "b.example", Fingerprint: "sha256:z"}); err != nil {
				t.Fatal(err)
			}
			list, err := ps.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 || list[0].Key() != "echo@a.example" || list[1].Key() != "zz@b.example" {
				t.Errorf("List = %+v", list)
			}
			if ok, err := other.Unpin(ctx, "echo", "a.example"); err != nil || !ok {
				t.Errorf("Unpin = %v, %v", ok, err)
			}
			if ok, err := ps.Unpin(ctx, "echo", "a.example"); err != nil || ok {
				t.Errorf("second Unpin = %v, %v", ok, err)
			}
			if err := ps.Pin(ctx, Pin{ToolID: "", Fingerprint: "x"}); err == nil {
				t.Error("pin without a tool accepted")
			}
		})
	}
}

// TestPinStoreFirstPinRace has several stores on one database (as replicas) pin
// different keys for one tool at once: exactly one key wins and every racer gets it back.
func TestPinStoreFirstPinRace(t *testing.T) {
	for _, b := range pinBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			open := b.shared(t)
			const racers = 6
			stores := make([]*PinStore, racers)
			var wg sync.WaitGroup
			errs := make([]error, racers)
			for i := range stores {
				db := open(t)
				wg.Go(func() { stores[i], errs[i] = NewPinStore(ctx, db) }) // concurrent migrations too
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			got := make([]Pin, racers)
			for i, s := range stores {
				wg.Go(func() {
					got[i], errs[i] = s.pinFirst(ctx, Pin{ToolID: "echo", Domain: "race.example", Fingerprint: fmt.Sprintf("sha256:%d", i)})
				})
			}
			wg.Wait()
			for i := range got {
				if errs[i] != nil {
					t.Fatalf("racer %d: %v", i, errs[i])
				}
				if got[i].Fingerprint != got[0].Fingerprint {
					t.Errorf("racer %d sees pin %s, racer 0 sees %s", i, got[i].Fingerprint, got[0].Fingerprint)
				}
			}
			final, _, err := stores[0].Get(ctx, "echo", "race.example")
			if err != nil || final.Fingerprint != got[0].Fingerprint {
				t.Errorf("stored pin %s (%v), racers got %s", final.Fingerprint, err, got[0].Fingerprint)
			}
		})
	}
}

// TestGateKeyChangeAcrossReplicas: two gates, each with its own quarantine, share the
// pins in PostgreSQL. A key pinned by the first on first use is enforced by the second.
func TestGateKeyChangeAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	k1, k2 := newTestKey(t), newTestKey(t)
	opts := UpstreamOptions{Mode: ModeTOFU, Domain: "tools.example.com"}
	gate := func(docs mapResolver) *Gate {
		pg, err := store.OpenPostgres(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		return newGate(t, &GateOptions{Resolver: docs, PinDB: pg})
	}
	g1 := gate(mapResolver{"tools.example.com": k1.doc})
	g2 := gate(mapResolver{"tools.example.com": k2.doc})
	runGate(t, g1, []gateCall{{opts: opts, tool: signedTool(t, k1, echoTool), status: StatusVerified, allowed: true}})
	runGate(t, g2, []gateCall{{opts: opts, tool: signedTool(t, k2, echoTool), status: StatusKeyChanged}})
	if _, ok, _ := g2.Pins().Get(ctx, "echo", "tools.example.com"); !ok {
		t.Fatal("the second replica does not see the first one's pin")
	}
	// The operator re-pins to the new key through the second replica; the first follows.
	if err := g2.Pins().Pin(ctx, Pin{ToolID: "echo", Domain: "tools.example.com", Fingerprint: k2.fp}); err != nil {
		t.Fatal(err)
	}
	runGate(t, g1, []gateCall{{opts: opts, tool: signedTool(t, k1, echoTool), status: StatusKeyChanged}})
	runGate(t, g2, []gateCall{{opts: opts, tool: signedTool(t, k2, echoTool), status: StatusVerified, allowed: true}})
}
