package storetest

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/csbs/csbs/internal/store"
)

func testItemTags(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	a := addItem(t, s, &store.Item{Name: "a", CreatedAt: at(1), Tags: []store.Tag{{Key: "env", Value: "prod"}}})
	b := addItem(t, s, &store.Item{Name: "b", CreatedAt: at(2)})
	addItem(t, s, &store.Item{Name: "gone", CreatedAt: at(3), Status: store.StatusDeleted, Tags: []store.Tag{{Key: "x", Value: "y"}}})
	addItem(t, s, &store.Item{Name: "theirs", ProjectID: other, CreatedAt: at(4), Tags: []store.Tag{{Key: "x", Value: "y"}}})

	got, err := s.ListItemTags(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.TaggedResource{{ID: b.ID, Name: "b"}, {ID: a.ID, Name: "a", Tags: a.Tags}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListItemTags = %+v\nwant %+v (newest first, no deleted backups, no other project)", got, want)
	}

	add := func(k, v string) func([]store.Tag) ([]store.Tag, error) {
		return func(cur []store.Tag) ([]store.Tag, error) {
			return append(cur, store.Tag{Key: k, Value: v}), nil
		}
	}
	if err := s.UpdateItemTags(ctx, project, b.ID, add("team", "db")); err != nil {
		t.Fatal(err)
	}
	it, err := s.GetItem(ctx, project, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(it.Tags, []store.Tag{{Key: "team", Value: "db"}}) {
		t.Errorf("tags after UpdateItemTags = %v", it.Tags)
	}
	// A worker's stale copy does not undo the tag change.
	stale := *b
	stale.Status = store.StatusAvailable
	if err := s.UpdateItem(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	if it, _ := s.GetItem(ctx, project, b.ID); len(it.Tags) != 1 {
		t.Errorf("UpdateItem with an old copy changed the tags to %v", it.Tags)
	}

	boom := errors.New("refused")
	if err := s.UpdateItemTags(ctx, project, b.ID, func([]store.Tag) ([]store.Tag, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateItemTags with a refusing fn: err = %v, want it returned as is", err)
	}
	if it, _ := s.GetItem(ctx, project, b.ID); len(it.Tags) != 1 {
		t.Errorf("a refused update changed the tags to %v", it.Tags)
	}
	for _, id := range []string{"no-such-backup", got[0].ID + "x"} {
		if err := s.UpdateItemTags(ctx, project, id, add("k", "v")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateItemTags of %s: err = %v, want ErrNotFound", id, err)
		}
	}
	if err := s.UpdateItemTags(ctx, other, a.ID, add("k", "v")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateItemTags from another project: err = %v, want ErrNotFound", err)
	}

	// Concurrent changes of the same backup's tags all land.
	var wg sync.WaitGroup
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.UpdateItemTags(ctx, project, a.ID, add(k, "v")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	it, err = s.GetItem(ctx, project, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(it.Tags) != 1+len(keys) {
		t.Errorf("after %d concurrent additions: tags %v", len(keys), it.Tags)
	}
}

func testItemSizes(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	if got, err := s.ItemSizes(ctx, project); err != nil || got != nil {
		t.Fatalf("ItemSizes of an empty project = %+v, %v", got, err)
	}
	for i, sz := range []struct {
		res        string
		used, size int64
	}{{"srv-b", 3 << 30, 5 << 20}, {"srv-a", 3 << 30, 3 << 30}, {"srv-b", 1 << 40, 1 << 40}, {"srv-a", 0, 0}} {
		it := &store.Item{Name: "b", ResourceID: sz.res, CreatedAt: at(10 - i)}
		it.Info.UsedBytes, it.Info.SizeBytes = sz.used, sz.size
		addItem(t, s, it)
	}
	gone := &store.Item{Name: "gone", Status: store.StatusDeleted}
	gone.Info.SizeBytes = 1 << 40
	addItem(t, s, gone)
	theirs := &store.Item{Name: "theirs", ProjectID: other}
	theirs.Info.SizeBytes = 1 << 40
	addItem(t, s, theirs)
	got, err := s.ItemSizes(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ItemSize{
		{ResourceID: "srv-a", UsedBytes: 0, SizeBytes: 0}, {ResourceID: "srv-a", UsedBytes: 3 << 30, SizeBytes: 3 << 30},
		{ResourceID: "srv-b", UsedBytes: 1 << 40, SizeBytes: 1 << 40}, {ResourceID: "srv-b", UsedBytes: 3 << 30, SizeBytes: 5 << 20},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ItemSizes = %+v\nwant %+v (by resource, oldest first)", got, want)
	}
}

func testJobList(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	fin := at(100)
	jobs := []*store.Job{
		{Kind: "protect", ProjectID: project, CheckpointID: "cp1", CreatedAt: at(1), Status: store.JobSucceeded, FinishedAt: &fin},
		{Kind: "protect", ProjectID: project, CheckpointID: "cp2", PlanID: "pl", CreatedAt: at(2), Status: store.JobFailed, Error: "disk gone", FinishedAt: &fin},
		{Kind: "delete", ProjectID: project, CheckpointID: "cp1", CreatedAt: at(3), Status: store.JobFailed, Error: "x"},
		{Kind: "restore", ProjectID: project, RestoreID: "r1", CreatedAt: at(3)},
		{Kind: "gc", ProjectID: project, CreatedAt: at(4)},
		{Kind: "protect", ProjectID: other, CreatedAt: at(5), Status: store.JobFailed},
	}
	for _, j := range jobs {
		if err := s.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(js []*store.Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	user := []string{"protect", "delete", "restore"}
	// jobs[2] and jobs[3] share created_at: the id breaks the tie, descending.
	tie := []string{jobs[2].ID, jobs[3].ID}
	if tie[0] < tie[1] {
		tie[0], tie[1] = tie[1], tie[0]
	}
	all := []string{tie[0], tie[1], jobs[1].ID, jobs[0].ID}
	for _, tc := range []struct {
		name string
		f    store.JobFilter
		want []string
	}{
		{"all", store.JobFilter{Kinds: user}, all},
		{"failed", store.JobFilter{Kinds: user, Status: store.JobFailed}, []string{jobs[2].ID, jobs[1].ID}},
		{"kind", store.JobFilter{Kinds: []string{"protect"}}, []string{jobs[1].ID, jobs[0].ID}},
		{"checkpoint", store.JobFilter{Kinds: user, CheckpointID: "cp1"}, []string{jobs[2].ID, jobs[0].ID}},
		{"plan", store.JobFilter{Kinds: user, PlanID: "pl"}, []string{jobs[1].ID}},
		{"limit", store.JobFilter{Kinds: user, Limit: 2}, all[:2]},
		{"offset", store.JobFilter{Kinds: user, Offset: 3}, all[3:]},
		{"marker", store.JobFilter{Kinds: user, Marker: all[0], Limit: 2}, all[1:3]},
		{"marker in a tie", store.JobFilter{Kinds: user, Marker: all[1]}, all[2:]},
		{"marker and offset", store.JobFilter{Kinds: user, Marker: all[0], Offset: 1}, all[2:]},
		{"every kind", store.JobFilter{}, append([]string{jobs[4].ID}, all...)},
	} {
		got, err := s.ListJobs(ctx, project, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := ids(got); !reflect.DeepEqual(g, tc.want) {
			t.Errorf("%s: ListJobs = %v, want %v", tc.name, g, tc.want)
		}
	}
	if _, err := s.ListJobs(ctx, project, store.JobFilter{Marker: jobs[5].ID}); !errors.Is(err, store.ErrBadMarker) {
		t.Errorf("ListJobs after another project's job: err = %v, want ErrBadMarker", err)
	}

	got, err := s.GetProjectJob(ctx, project, jobs[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Error != "disk gone" || got.Status != store.JobFailed || got.FinishedAt == nil || !got.FinishedAt.Equal(fin) {
		t.Errorf("GetProjectJob = %+v", got)
	}
	if _, err := s.GetProjectJob(ctx, other, jobs[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetProjectJob from another project: err = %v, want ErrNotFound", err)
	}

	for _, tc := range []struct {
		project, id string
		want        error
	}{
		{project, jobs[0].ID, store.ErrJobNotFailed},
		{project, jobs[3].ID, store.ErrJobNotFailed},
		{other, jobs[1].ID, store.ErrNotFound},
		{project, "no-such-job", store.ErrNotFound},
		{project, jobs[1].ID, nil},
		{project, jobs[1].ID, store.ErrNotFound},
	} {
		if err := s.DeleteFailedJob(ctx, tc.project, tc.id); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("DeleteFailedJob(%s, %s): err = %v, want %v", tc.project, tc.id, err, tc.want)
		}
	}
	n, err := s.DeleteFailedJobs(ctx, project, user)
	if err != nil || n != 1 {
		t.Errorf("DeleteFailedJobs = %d, %v; want 1 (the failed delete)", n, err)
	}
	left, _ := s.ListJobs(ctx, project, store.JobFilter{Kinds: user})
	if g := ids(left); !reflect.DeepEqual(g, []string{jobs[3].ID, jobs[0].ID}) {
		t.Errorf("after deleting failed jobs: %v", g)
	}
	if _, err := s.GetJob(ctx, jobs[5].ID); err != nil {
		t.Errorf("another project's failed job: %v", err)
	}
}

func testPolicyTags(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	p1 := &store.Policy{ProjectID: project, Name: "daily", Tags: []store.Tag{{Key: "env", Value: "prod"}}, CreatedAt: at(1), UpdatedAt: at(1)}
	p2 := &store.Policy{ProjectID: project, Name: "weekly", CreatedAt: at(2), UpdatedAt: at(2)}
	p3 := &store.Policy{ProjectID: other, Name: "theirs", CreatedAt: at(3), UpdatedAt: at(3)}
	for _, p := range []*store.Policy{p1, p2, p3} {
		if err := s.InsertPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListPolicyTags(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.TaggedResource{{ID: p2.ID, Name: "weekly"}, {ID: p1.ID, Name: "daily", Tags: p1.Tags}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListPolicyTags = %+v\nwant %+v", got, want)
	}
	set := func(cur []store.Tag) ([]store.Tag, error) { return append(cur, store.Tag{Key: "k", Value: "v"}), nil }
	if err := s.UpdatePolicyTags(ctx, project, p1.ID, set); err != nil {
		t.Fatal(err)
	}
	p, err := s.GetPolicy(ctx, project, p1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Tags, []store.Tag{{Key: "env", Value: "prod"}, {Key: "k", Value: "v"}}) || p.Name != "daily" {
		t.Errorf("policy after UpdatePolicyTags: %+v", p)
	}
	if err := s.UpdatePolicyTags(ctx, project, p3.ID, set); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdatePolicyTags of another project's policy: err = %v, want ErrNotFound", err)
	}
}
