package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

func intp(n int) *int { return &n }

// newPolicy is a policy of project with one operation and servers.
func newPolicy(name string, created time.Time, servers ...string) *store.Policy {
	next := created.Add(time.Hour)
	p := &store.Policy{
		ProjectID: project, Name: name, Description: "d " + name, CreatedAt: created,
		Parameters: json.RawMessage(`{"common":{"x":1}}`),
		Tags:       []store.Tag{{Key: "k", Value: name}},
		Operations: []store.ScheduledOperation{{
			Name: "op", Enabled: true, OperationType: "backup", TriggerName: "default",
			Pattern: "P", StartTime: created, NextFire: &next,
			Definition: store.OperationDefinition{MaxBackups: intp(3), Timezone: "UTC+08:00", DayBackups: intp(2)},
		}},
	}
	for _, s := range servers {
		p.Resources = append(p.Resources, store.Resource{ID: s, Type: "OS::Nova::Server", Name: "n-" + s, ExtraInfo: json.RawMessage(`{}`)})
	}
	return p
}

func testPolicies(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	a := newPolicy("a", at(1), "s1", "s2")
	if err := s.InsertPolicy(ctx, a); err != nil {
		t.Fatalf("InsertPolicy: %v", err)
	}
	got, err := s.GetPolicy(ctx, project, a.ID)
	if err != nil {
		t.Fatalf("GetPolicy: %v", err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, a)
	}
	if _, err := s.GetPolicy(ctx, other, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPolicy of another project: %v, want ErrNotFound", err)
	}

	// A server belongs to one policy.
	if err := s.InsertPolicy(ctx, newPolicy("b", at(2), "s3", "s2")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("InsertPolicy with a bound server: %v, want ErrConflict", err)
	}
	if _, err := s.GetPolicy(ctx, project, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPolicy missing: %v", err)
	}
	if id, err := s.PolicyOfResource(ctx, project, "s2"); err != nil || id != a.ID {
		t.Errorf("PolicyOfResource = %q, %v", id, err)
	}
	if _, err := s.PolicyOfResource(ctx, other, "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PolicyOfResource in another project: %v", err)
	}
	b := newPolicy("b", at(2), "s3")
	c := newPolicy("c", at(3))
	for _, p := range []*store.Policy{b, c} {
		if err := s.InsertPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CountPolicies(ctx, project); n != 3 || err != nil {
		t.Errorf("CountPolicies = %d, %v", n, err)
	}

	// Lists.
	list := func(f store.PolicyFilter) []string {
		t.Helper()
		ps, err := s.ListPolicies(ctx, project, f)
		if err != nil {
			t.Fatalf("ListPolicies(%+v): %v", f, err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
			if len(p.Operations) != 1 {
				t.Errorf("listed policy %s has %d operations", p.Name, len(p.Operations))
			}
		}
		return out
	}
	for _, tc := range []struct {
		f    store.PolicyFilter
		want []string
	}{
		{store.PolicyFilter{}, []string{"c", "b", "a"}},
		{store.PolicyFilter{Sort: []store.SortKey{{Key: "name"}}}, []string{"a", "b", "c"}},
		{store.PolicyFilter{Name: "b"}, []string{"b"}},
		{store.PolicyFilter{Limit: 2}, []string{"c", "b"}},
		{store.PolicyFilter{Marker: c.ID}, []string{"b", "a"}},
		{store.PolicyFilter{Marker: c.ID, Offset: 1}, []string{"a"}},
		{store.PolicyFilter{Offset: 5}, nil},
	} {
		if got := list(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListPolicies(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	if _, err := s.ListPolicies(ctx, project, store.PolicyFilter{Marker: "nope"}); !errors.Is(err, store.ErrBadMarker) {
		t.Errorf("bad marker: %v", err)
	}
	if _, err := s.ListPolicies(ctx, project, store.PolicyFilter{Sort: []store.SortKey{{Key: "size"}}}); !errors.Is(err, store.ErrBadSortKey) {
		t.Errorf("bad sort key: %v", err)
	}
	if ps, _ := s.ListPolicies(ctx, other, store.PolicyFilter{}); len(ps) != 0 {
		t.Errorf("another project lists %d policies", len(ps))
	}
	if ps, _ := s.ListPolicies(ctx, other, store.PolicyFilter{AllTenants: true}); len(ps) != 3 {
		t.Errorf("all tenants lists %d policies", len(ps))
	}

	// Update: s2 leaves a, s2 can join c; operations change.
	a.Name, a.Description, a.Tags = "a2", "", nil
	a.Resources = a.Resources[:1]
	a.Operations[0].Enabled = false
	a.Operations[0].NextFire = nil
	a.Operations[0].Definition = store.OperationDefinition{Permanent: new(bool)}
	if err := s.UpdatePolicy(ctx, a); err != nil {
		t.Fatalf("UpdatePolicy: %v", err)
	}
	got, _ = s.GetPolicy(ctx, project, a.ID)
	if got.Name != "a2" || got.Description != "" || got.Tags != nil || len(got.Resources) != 1 ||
		got.Operations[0].Enabled || got.Operations[0].NextFire != nil || got.Operations[0].Definition.Permanent == nil ||
		got.Operations[0].Definition.MaxBackups != nil || !got.UpdatedAt.After(got.CreatedAt) {
		t.Errorf("after update: %+v %+v", got, got.Operations[0])
	}
	c.Resources = append(c.Resources, store.Resource{ID: "s2", Type: "OS::Nova::Server"})
	if err := s.UpdatePolicy(ctx, c); err != nil {
		t.Errorf("a freed server joins another policy: %v", err)
	}
	c.Resources = append(c.Resources, store.Resource{ID: "s3", Type: "OS::Nova::Server"})
	err = s.InTx(ctx, func(tx store.Tx) error { return tx.UpdatePolicy(ctx, c) })
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdatePolicy taking a bound server: %v", err)
	}
	if id, _ := s.PolicyOfResource(ctx, project, "s3"); id != b.ID {
		t.Errorf("after a refused update s3 belongs to %q", id)
	}
	missing := newPolicy("m", at(4))
	missing.ID = "missing"
	if err := s.UpdatePolicy(ctx, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdatePolicy missing: %v", err)
	}

	// Delete frees the servers and the operations.
	if err := s.DeletePolicy(ctx, other, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePolicy of another project: %v", err)
	}
	if err := s.DeletePolicy(ctx, project, b.ID); err != nil {
		t.Fatalf("DeletePolicy: %v", err)
	}
	if _, err := s.PolicyOfResource(ctx, project, "s3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("server of a deleted policy still bound: %v", err)
	}
	if err := s.DeletePolicy(ctx, project, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeletePolicy twice: %v", err)
	}
	// A deleted policy still places a page that continues after it, in any
	// order (the SDK pages with the last id it saw), but only in its project.
	for _, tc := range []struct {
		f    store.PolicyFilter
		want int // policies after b: c and a remain
	}{
		{store.PolicyFilter{Marker: b.ID}, 1},                                             // created_at desc: a
		{store.PolicyFilter{Marker: b.ID, Sort: []store.SortKey{{Key: "created_at"}}}, 1}, // asc: c
		{store.PolicyFilter{Marker: b.ID, Sort: []store.SortKey{{Key: "name", Desc: true}}}, 1},
	} {
		ps, err := s.ListPolicies(ctx, project, tc.f)
		if err != nil || len(ps) != tc.want || ps[0].ID == b.ID {
			t.Errorf("ListPolicies after deleted marker (%+v) = %d policies, %v; want %d", tc.f, len(ps), err, tc.want)
		}
	}
	if ps, err := s.ListPolicies(ctx, project, store.PolicyFilter{Marker: b.ID}); err == nil && len(ps) == 1 && ps[0].Name != "a2" {
		t.Errorf("after deleted b (newest first): %s, want a2", ps[0].Name)
	}
	if _, err := s.ListPolicies(ctx, other, store.PolicyFilter{Marker: b.ID}); !errors.Is(err, store.ErrBadMarker) {
		t.Errorf("another project's deleted marker: %v, want ErrBadMarker", err)
	}
	due, err := s.DueOperations(ctx, at(1_000_000))
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].PolicyID != c.ID {
		t.Errorf("due operations after deleting b and disabling a: %+v", due)
	}
}

// testPolicyFires: of processes racing for a fire time, exactly one
// advances the operation and records the fire.
func testPolicyFires(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	db := newDB(t)
	s := open(t, db)
	p := newPolicy("f", at(0), "s1")
	if err := s.InsertPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	fire := *p.Operations[0].NextFire
	if due, _ := s.DueOperations(ctx, fire.Add(-time.Microsecond)); len(due) != 0 {
		t.Errorf("due before its time: %+v", due)
	}
	due, err := s.DueOperations(ctx, fire)
	if err != nil || len(due) != 1 || !due[0].NextFire.Equal(fire) || due[0].OperationID != p.Operations[0].ID ||
		due[0].ProjectID != project || due[0].Pattern != "P" {
		t.Fatalf("DueOperations = %+v, %v", due, err)
	}

	stores := []store.Store{s, open(t, db), open(t, db), open(t, db)}
	next := fire.Add(24 * time.Hour)
	var (
		mu   sync.Mutex
		wins int
		wg   sync.WaitGroup
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(st store.Store) {
			defer wg.Done()
			won := false
			err := st.InTx(ctx, func(tx store.Tx) error {
				ok, err := tx.AdvanceOperation(ctx, due[0].OperationID, fire, &next)
				if err != nil || !ok {
					return err
				}
				ok, err = tx.InsertFire(ctx, due[0].OperationID, fire, p.ID, "cp")
				won = ok
				return err
			})
			if err != nil {
				t.Errorf("claim: %v", err)
			}
			if won {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}(stores[i%len(stores)])
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d claims won the fire time, want 1", wins)
	}
	if ok, err := s.InsertFire(ctx, due[0].OperationID, fire, p.ID, "cp2"); ok || err != nil {
		t.Errorf("second InsertFire of a fire time = %v, %v; want false", ok, err)
	}
	if ok, err := s.InsertFire(ctx, due[0].OperationID, next, p.ID, ""); !ok || err != nil {
		t.Errorf("InsertFire of the next fire time = %v, %v", ok, err)
	}
	got, _ := s.GetPolicy(ctx, project, p.ID)
	if nf := got.Operations[0].NextFire; nf == nil || !nf.Equal(next) {
		t.Errorf("next fire %v, want %v", nf, next)
	}
	if ok, _ := s.AdvanceOperation(ctx, due[0].OperationID, fire, nil); ok {
		t.Error("AdvanceOperation from a stale fire time succeeded")
	}
}
