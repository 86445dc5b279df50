package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

// testRestores checks the round trip of a restore, the one-restore-per-
// server rule (also inside a transaction that then commits other work),
// updates, project scoping and paging.
func testRestores(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	r := &store.Restore{
		ProjectID: "p1", CheckpointID: "cp1", ItemID: "it1", ServerID: "srv1",
		Volumes: []store.VolumeMapping{{BackupID: "b1", VolumeID: "v1"}, {BackupID: "b2", VolumeID: "v2"}},
		PowerOn: true, Target: "http://x/", JobID: "job1", CreatedAt: t0,
		ResourcesStatus: map[string]string{"OS::Nova::Server#srv1": "restoring"},
	}
	if err := s.InsertRestore(ctx, r); err != nil {
		t.Fatal(err)
	}
	if r.ID == "" || r.Status != store.RestoreInProgress {
		t.Fatalf("InsertRestore left id %q status %q", r.ID, r.Status)
	}
	got, err := s.GetRestore(ctx, "p1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *r
	want.ResourcesReason = map[string]string{}
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("GetRestore = %+v\nwant %+v", got, &want)
	}
	if _, err := s.GetRestore(ctx, "p2", r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRestore of another project: %v, want ErrNotFound", err)
	}
	if _, err := s.GetRestoreAnyProject(ctx, r.ID); err != nil {
		t.Fatal(err)
	}

	// A second restore onto srv1 conflicts, and the transaction it was in
	// rolls back as a whole.
	err = s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.InsertRestore(ctx, &store.Restore{ProjectID: "p1", ServerID: "other", CreatedAt: t0.Add(time.Second)}); err != nil {
			return err
		}
		return tx.InsertRestore(ctx, &store.Restore{ProjectID: "p1", ServerID: "srv1", CreatedAt: t0.Add(time.Second)})
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second restore onto a server: %v, want ErrConflict", err)
	}
	if l, _ := s.ListRestores(ctx, "p1", store.RestoreFilter{}); len(l) != 1 {
		t.Fatalf("after a rolled-back transaction %d restores, want 1", len(l))
	}

	r.Status = store.RestoreSuccess
	r.ResourcesStatus = map[string]string{"OS::Nova::Server#srv1": "available"}
	r.ResourcesReason = map[string]string{"x": "y"}
	if err := s.UpdateRestore(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetRestore(ctx, "p1", r.ID)
	if got.Status != store.RestoreSuccess || got.ResourcesStatus["OS::Nova::Server#srv1"] != "available" || got.ResourcesReason["x"] != "y" {
		t.Fatalf("after UpdateRestore: %+v", got)
	}
	if err := s.UpdateRestore(ctx, &store.Restore{ID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateRestore of a missing restore: %v", err)
	}
	// Finished: the server can be restored again.
	var ids []string
	for i := range 4 {
		n := &store.Restore{ProjectID: "p1", ServerID: "srv1", CreatedAt: t0.Add(time.Duration(i+1) * time.Minute)}
		if err := s.InsertRestore(ctx, n); err != nil {
			t.Fatalf("restore %d onto a server whose restore finished: %v", i, err)
		}
		n.Status = store.RestoreFail
		if err := s.UpdateRestore(ctx, n); err != nil {
			t.Fatal(err)
		}
		ids = append([]string{n.ID}, ids...)
	}
	ids = append(ids, r.ID) // newest first

	var paged []string
	marker := ""
	for {
		page, err := s.ListRestores(ctx, "p1", store.RestoreFilter{Limit: 2, Marker: marker})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			paged = append(paged, p.ID)
		}
		marker = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(paged, ids) {
		t.Fatalf("paged %v, want %v", paged, ids)
	}
	if l, _ := s.ListRestores(ctx, "p1", store.RestoreFilter{Status: store.RestoreSuccess}); len(l) != 1 || l[0].ID != r.ID {
		t.Fatalf("status filter: %v", l)
	}
	if l, _ := s.ListRestores(ctx, "p1", store.RestoreFilter{Offset: 3}); len(l) != 2 {
		t.Fatalf("offset 3 of 5: %d restores", len(l))
	}
	if l, _ := s.ListRestores(ctx, "p2", store.RestoreFilter{}); len(l) != 0 {
		t.Fatalf("another project sees %d restores", len(l))
	}
	if _, err := s.ListRestores(ctx, "p2", store.RestoreFilter{Marker: r.ID}); !errors.Is(err, store.ErrBadMarker) {
		t.Fatalf("marker of another project: %v, want ErrBadMarker", err)
	}
}
