package service

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/store"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(s string) {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// schedEnv is a service (two, as two processes would be) on one SQLite
// database with two servers in the inventory; no jobs run.
func schedEnv(t *testing.T) (svcs []*Service, clk *clock, db store.Store) {
	t.Helper()
	dir := t.TempDir()
	var inv local.Inventory
	for _, id := range []string{"11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"} {
		img := filepath.Join(dir, id[:4]+".img")
		if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		inv.Servers = append(inv.Servers, local.ServerSpec{ID: id, Name: "srv-" + id[:4], ProjectID: "p", Status: "ACTIVE",
			Volumes: []local.VolumeSpec{{ID: id[:4] + "-v", Name: "v", Path: img, Bootable: true}}})
	}
	invPath := filepath.Join(dir, "servers.yaml")
	if err := local.WriteInventory(invPath, inv); err != nil {
		t.Fatal(err)
	}
	drv, err := local.New(invPath)
	if err != nil {
		t.Fatal(err)
	}
	clk = &clock{}
	dbPath := "sqlite:" + filepath.Join(dir, "csbs.db")
	for i := 0; i < 2; i++ {
		st, err := store.Open(context.Background(), dbPath, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svcs = append(svcs, New(Config{Store: st, Compute: drv, Now: clk.now}))
		db = st
	}
	return svcs, clk, db
}

func ptr[T any](v T) *T { return &v }

// autoBackups returns the automatic backups of a policy by creation time.
func autoBackups(t *testing.T, db store.Store, policyID string) []string {
	t.Helper()
	items, err := db.ListItems(context.Background(), "p", store.ItemFilter{PolicyID: policyID, Sort: []store.SortKey{{Key: "created_at"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		if !it.Info.AutoTrigger || it.Info.CreatedBy != "auto" || it.Name[:7] != "autobk_" {
			t.Errorf("scheduled backup %+v", it)
		}
		out = append(out, it.CreatedAt.Format("01-02 15:04"))
	}
	return out
}

// finishAll makes every waiting backup available, as if its job ran.
func finishAll(t *testing.T, db store.Store) {
	t.Helper()
	items, err := db.ListItems(context.Background(), "p", store.ItemFilter{Statuses: []string{store.StatusWaitingProtect}})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if _, err := db.SetItemStatus(context.Background(), it.ID, []string{store.StatusWaitingProtect}, store.StatusAvailable); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFireDue walks a daily 12:00 schedule through time with two services
// on one database: each fire time runs once; a fire time missed by less
// than an hour runs late, one missed by more is skipped; of several missed
// ones only the latest runs.
func TestFireDue(t *testing.T) {
	ctx := context.Background()
	svcs, clk, db := schedEnv(t)
	clk.set("2024-01-04 10:00:00")
	p, err := svcs[0].CreatePolicy(ctx, "p", PolicyRequest{
		Name: ptr("daily"), ProviderID: ptr(ProviderID),
		Resources: &[]store.Resource{{ID: "11111111-1111-1111-1111-111111111111", Type: ResourceTypeServer}, {ID: "22222222-2222-2222-2222-222222222222", Type: ResourceTypeServer}},
		Operations: &[]OperationRequest{{Enabled: ptr(true), OperationType: ptr("backup"), Definition: &DefinitionRequest{},
			Pattern: ptr("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=12;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if nf := p.Operations[0].NextFire; nf == nil || nf.Format("01-02 15:04") != "01-04 12:00" {
		t.Fatalf("next fire %v", nf)
	}
	steps := []struct {
		now  string
		want []string // every automatic backup so far, by creation time
		next string   // the operation's next fire time after the step
	}{
		{"2024-01-04 11:59:59", nil, "01-04 12:00"},
		{"2024-01-04 12:00:01", []string{"01-04 12:00", "01-04 12:00"}, "01-05 12:00"},
		{"2024-01-04 12:00:05", []string{"01-04 12:00", "01-04 12:00"}, "01-05 12:00"},
		// Restarted 40 minutes after the fire time: it runs.
		{"2024-01-05 12:40:00", []string{"01-04 12:00", "01-04 12:00", "01-05 12:40", "01-05 12:40"}, "01-06 12:00"},
		// Restarted 3 hours after: skipped.
		{"2024-01-06 15:00:00", []string{"01-04 12:00", "01-04 12:00", "01-05 12:40", "01-05 12:40"}, "01-07 12:00"},
		// Down for three fire times, back 30 minutes after the last: it
		// alone runs.
		{"2024-01-09 12:30:00", []string{"01-04 12:00", "01-04 12:00", "01-05 12:40", "01-05 12:40", "01-09 12:30", "01-09 12:30"}, "01-10 12:00"},
	}
	for _, st := range steps {
		clk.set(st.now)
		var wg sync.WaitGroup
		for _, s := range svcs { // both "processes" tick at once
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.FireDue(ctx); err != nil {
					t.Errorf("%s: FireDue: %v", st.now, err)
				}
			}()
		}
		wg.Wait()
		got := autoBackups(t, db, p.ID)
		if len(got) != len(st.want) {
			t.Fatalf("%s: backups %v, want %v", st.now, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: backups %v, want %v", st.now, got, st.want)
			}
		}
		cur, _ := db.GetPolicy(ctx, "p", p.ID)
		if nf := cur.Operations[0].NextFire; nf == nil || nf.Format("01-02 15:04") != st.next {
			t.Fatalf("%s: next fire %v, want %s", st.now, nf, st.next)
		}
		finishAll(t, db)
	}

	// A disabled operation does not fire; enabled again, it fires from
	// then on.
	clk.set("2024-01-09 13:00:00")
	if _, err := svcs[1].UpdatePolicy(ctx, "p", p.ID, PolicyRequest{Operations: &[]OperationRequest{{ID: p.Operations[0].ID, Enabled: ptr(false)}}}); err != nil {
		t.Fatal(err)
	}
	clk.set("2024-01-10 12:00:30")
	svcs[0].FireDue(ctx)
	if n := len(autoBackups(t, db, p.ID)); n != 6 {
		t.Errorf("a disabled operation fired: %d backups", n)
	}
	if _, err := svcs[1].UpdatePolicy(ctx, "p", p.ID, PolicyRequest{Operations: &[]OperationRequest{{ID: p.Operations[0].ID, Enabled: ptr(true)}}}); err != nil {
		t.Fatal(err)
	}
	clk.set("2024-01-11 12:00:00")
	svcs[1].FireDue(ctx)
	if n := len(autoBackups(t, db, p.ID)); n != 8 {
		t.Errorf("re-enabled operation: %d backups, want 8", n)
	}
}

// TestFireDueBusyServer: a server still being backed up when its policy
// fires is left out of that fire time (the next cycle takes it).
func TestFireDueBusyServer(t *testing.T) {
	ctx := context.Background()
	svcs, clk, db := schedEnv(t)
	clk.set("2024-01-04 10:00:00")
	s := svcs[0]
	if _, err := s.Protect(ctx, "p", "11111111-1111-1111-1111-111111111111", ProtectRequest{}); err != nil {
		t.Fatal(err)
	}
	p, err := s.CreatePolicy(ctx, "p", PolicyRequest{
		Name: ptr("busy"), ProviderID: ptr(ProviderID),
		Resources: &[]store.Resource{{ID: "11111111-1111-1111-1111-111111111111", Type: ResourceTypeServer}, {ID: "22222222-2222-2222-2222-222222222222", Type: ResourceTypeServer}},
		Operations: &[]OperationRequest{{Enabled: ptr(true), OperationType: ptr("backup"), Definition: &DefinitionRequest{},
			Pattern: ptr("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	clk.set("2024-01-04 12:00:00")
	if err := s.FireDue(ctx); err != nil {
		t.Fatal(err)
	}
	items, _ := db.ListItems(ctx, "p", store.ItemFilter{PolicyID: p.ID})
	if len(items) != 1 || items[0].ResourceID != "22222222-2222-2222-2222-222222222222" {
		t.Fatalf("backups of the fire time: %d", len(items))
	}
}

// TestApplyRetention: only automatic backups of the policy are pruned, by
// the delete path; one being restored waits for a later run.
func TestApplyRetention(t *testing.T) {
	ctx := context.Background()
	svcs, clk, db := schedEnv(t)
	s := svcs[0]
	clk.set("2024-01-10 00:00:00")
	srv := "11111111-1111-1111-1111-111111111111"
	p, err := s.CreatePolicy(ctx, "p", PolicyRequest{
		Name: ptr("keep1"), ProviderID: ptr(ProviderID),
		Resources: &[]store.Resource{{ID: srv, Type: ResourceTypeServer}},
		Operations: &[]OperationRequest{{Enabled: ptr(false), OperationType: ptr("backup"),
			Definition: &DefinitionRequest{OperationDefinition: store.OperationDefinition{MaxBackups: ptr(1)}},
			Pattern:    ptr("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=12;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	add := func(day int, auto bool, status, policy string) string {
		cp := &store.Checkpoint{ProjectID: "p", PlanID: policy}
		it := &store.Item{ProjectID: "p", ResourceID: srv, PolicyID: policy, Status: status,
			CreatedAt: time.Date(2024, 1, day, 12, 0, 0, 0, time.UTC)}
		it.Info.AutoTrigger = auto
		err := db.InTx(ctx, func(tx store.Tx) error {
			if err := tx.InsertCheckpoint(ctx, cp); err != nil {
				return err
			}
			it.CheckpointID = cp.ID
			return tx.InsertItem(ctx, it)
		})
		if err != nil {
			t.Fatal(err)
		}
		return it.ID
	}
	manual := add(1, false, store.StatusAvailable, p.ID)
	otherPolicy := add(2, true, store.StatusAvailable, "other-policy")
	restoring := add(3, true, store.StatusRestoring, p.ID)
	old := add(4, true, store.StatusAvailable, p.ID)
	failed := add(5, true, store.StatusError, p.ID)
	newest := add(6, true, store.StatusAvailable, p.ID)

	status := func(id string) string {
		it, err := db.GetItemAnyProject(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return it.Status
	}
	if n, err := s.ApplyRetention(ctx, "p", p.ID, srv); n != 1 || err != nil {
		t.Fatalf("ApplyRetention = %d, %v; want 1", n, err)
	}
	for id, want := range map[string]string{manual: store.StatusAvailable, otherPolicy: store.StatusAvailable,
		restoring: store.StatusRestoring, old: store.StatusWaitingDelete, failed: store.StatusError, newest: store.StatusAvailable} {
		if got := status(id); got != want {
			t.Errorf("backup of day %s: %s, want %s", id, got, want)
		}
	}
	// The restore ended: the next run deletes it.
	if _, err := db.SetItemStatus(ctx, restoring, []string{store.StatusRestoring}, store.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ApplyRetention(ctx, "p", p.ID, srv); n != 1 || err != nil {
		t.Fatalf("second ApplyRetention = %d, %v; want 1", n, err)
	}
	if got := status(restoring); got != store.StatusWaitingDelete {
		t.Errorf("restored backup: %s", got)
	}
	if n, _ := db.CountJobs(ctx, store.JobQueued); n != 2 {
		t.Errorf("%d delete jobs queued, want 2", n)
	}
}

// TestFireDueStaleNextFire: a policy update that read the operation before
// a fire and wrote its old next fire time back does not make the fire time
// run twice, nor stop the schedule.
func TestFireDueStaleNextFire(t *testing.T) {
	ctx := context.Background()
	svcs, clk, db := schedEnv(t)
	s := svcs[0]
	clk.set("2024-01-04 10:00:00")
	p, err := s.CreatePolicy(ctx, "p", PolicyRequest{
		Name: ptr("stale"), ProviderID: ptr(ProviderID),
		Resources: &[]store.Resource{{ID: "11111111-1111-1111-1111-111111111111", Type: ResourceTypeServer}},
		Operations: &[]OperationRequest{{Enabled: ptr(true), OperationType: ptr("backup"), Definition: &DefinitionRequest{},
			Pattern: ptr("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=12;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := db.GetPolicy(ctx, "p", p.ID)
	clk.set("2024-01-04 12:00:00")
	if err := s.FireDue(ctx); err != nil {
		t.Fatal(err)
	}
	finishAll(t, db)
	stale.Description = "changed"
	if err := db.UpdatePolicy(ctx, stale); err != nil { // writes next_fire 01-04 12:00 back
		t.Fatal(err)
	}
	clk.set("2024-01-04 12:00:10")
	for i := 0; i < 2; i++ {
		if err := s.FireDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := autoBackups(t, db, p.ID); len(got) != 1 {
		t.Fatalf("backups %v, want one", got)
	}
	cur, _ := db.GetPolicy(ctx, "p", p.ID)
	if nf := cur.Operations[0].NextFire; nf == nil || nf.Format("01-02 15:04") != "01-05 12:00" {
		t.Fatalf("next fire %v, want 01-05 12:00", nf)
	}
}
