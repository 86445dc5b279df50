package storetest

import (
	"context"
	"reflect"
	"testing"

	"github.com/csbs/csbs/internal/store"
)

// testVerifications: the last verification of each backup is recorded
// (replacing the one before), read back with its damage, listed per
// project or for all, counted when damaged, and ignored once the backup is
// deleted; due backups come never-verified first, then least recently
// verified, available ones only.
func testVerifications(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	a := addItem(t, s, &store.Item{Name: "a", CreatedAt: at(1)})
	b := addItem(t, s, &store.Item{Name: "b", CreatedAt: at(2)})
	c := addItem(t, s, &store.Item{Name: "c", CreatedAt: at(3), ProjectID: other})
	d := addItem(t, s, &store.Item{Name: "d", CreatedAt: at(4)})
	busy := addItem(t, s, &store.Item{Name: "busy", CreatedAt: at(5), Status: store.StatusProtecting})

	// Nothing verified: every available backup is due, oldest first.
	due, err := s.DueVerifications(ctx, "", at(100), 10)
	if err != nil || !reflect.DeepEqual(names(due), []string{"a", "b", "c", "d"}) {
		t.Fatalf("DueVerifications before any = %v, %v; want a b c d (not busy)", names(due), err)
	}
	_ = busy

	dmg := []store.DamagedVolume{{VolumeID: "vol-1", ChunkSize: 4 << 20, Offsets: []int64{0, 8 << 20}}}
	for _, v := range []*store.Verification{
		{ItemID: a.ID, ProjectID: project, VerifiedAt: at(10)},
		{ItemID: b.ID, ProjectID: project, VerifiedAt: at(20), Damaged: true, Damage: dmg, Reason: "2 chunks damaged"},
		{ItemID: c.ID, ProjectID: other, VerifiedAt: at(30), Damaged: true, Reason: "manifest unreadable"},
		{ItemID: a.ID, ProjectID: project, VerifiedAt: at(40)}, // replaces the first
	} {
		if err := s.RecordVerification(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.VerificationsOf(ctx, []string{a.ID, b.ID, d.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[a.ID].VerifiedAt.Equal(at(40)) || got[a.ID].Damaged || got[a.ID].Damage != nil {
		t.Fatalf("VerificationsOf a = %+v (of %d)", got[a.ID], len(got))
	}
	if v := got[b.ID]; !v.Damaged || !reflect.DeepEqual(v.Damage, dmg) || v.Reason != "2 chunks damaged" || v.ProjectID != project {
		t.Fatalf("VerificationsOf b = %+v", v)
	}

	ids := func(vs []*store.Verification) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, v.ItemID)
		}
		return out
	}
	if l, err := s.ListVerifications(ctx, project, true); err != nil || !reflect.DeepEqual(ids(l), []string{b.ID}) {
		t.Fatalf("damaged of %s = %v, %v; want b only", project, ids(l), err)
	}
	if l, err := s.ListVerifications(ctx, project, false); err != nil || !reflect.DeepEqual(ids(l), []string{b.ID, a.ID}) {
		t.Fatalf("verifications of %s = %v, %v; want b a", project, ids(l), err)
	}
	if l, err := s.ListVerifications(ctx, "", true); err != nil || !reflect.DeepEqual(ids(l), []string{c.ID, b.ID}) {
		t.Fatalf("damaged of all projects = %v, %v; want c b", ids(l), err)
	}
	if n, err := s.CountDamaged(ctx); err != nil || n != 2 {
		t.Fatalf("CountDamaged = %d, %v; want 2", n, err)
	}

	// Due at 35: d never verified, then b (20) and c (30); a (40) is not due.
	due, err = s.DueVerifications(ctx, "", at(35), 10)
	if err != nil || !reflect.DeepEqual(names(due), []string{"d", "b", "c"}) {
		t.Fatalf("DueVerifications(35) = %v, %v; want d b c", names(due), err)
	}
	if due, err = s.DueVerifications(ctx, "", at(35), 2); err != nil || len(due) != 2 {
		t.Fatalf("DueVerifications with limit 2 = %v, %v", names(due), err)
	}
	if due, err = s.DueVerifications(ctx, project, at(35), 10); err != nil || !reflect.DeepEqual(names(due), []string{"d", "b"}) {
		t.Fatalf("DueVerifications(35) of %s = %v, %v; want d b", project, names(due), err)
	}

	// A deleted backup's verification no longer counts.
	for _, st := range []string{store.StatusWaitingDelete, store.StatusDeleting, store.StatusDeleted} {
		b.Status = st
		if err := s.UpdateItem(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CountDamaged(ctx); err != nil || n != 1 {
		t.Fatalf("CountDamaged after deleting b = %d, %v; want 1", n, err)
	}
	if l, err := s.ListVerifications(ctx, project, true); err != nil || len(l) != 0 {
		t.Fatalf("damaged of %s after deleting b = %v, %v", project, ids(l), err)
	}
}
