// Package storetest is the conformance suite of store.Store: the same tests
// run against every database the store supports.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

// NewDatabase returns the database argument of store.Open for a fresh, empty
// database of t's own; it removes the database when t ends. Opening the
// argument twice opens the same database.
type NewDatabase func(t *testing.T) string

// Run runs the suite, each test on a database of its own, in parallel.
func Run(t *testing.T, newDB NewDatabase) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newDB NewDatabase)
	}{
		{"Migrations", testMigrations},
		{"Checkpoint", testCheckpoint},
		{"ItemRoundTrip", testItemRoundTrip},
		{"OtherProjectInvisible", testOtherProject},
		{"Filters", testFilters},
		{"SortAndPage", testSortAndPage},
		{"OffsetAndLimit", testOffsetAndLimit},
		{"BadMarkerAndSortKey", testBadMarkerAndSortKey},
		{"RunningBackupConflict", testConflict},
		{"ConflictInTx", testConflictInTx},
		{"SetItemStatus", testSetItemStatus},
		{"UpdateItem", testUpdateItem},
		{"DeletedInvisible", testDeleted},
		{"LatestItem", testLatestItem},
		{"InTxRollback", testInTxRollback},
		{"Restores", testRestores},
		{"Jobs", testJobs},
		{"OldestJob", testOldestJob},
		{"ClaimJobConcurrent", testClaimConcurrent},
		{"ExpiredLease", testExpiredLease},
		{"LeaseOwner", testLeaseOwner},
		{"Revocations", testRevocations},
		{"ItemTags", testItemTags},
		{"PolicyTags", testPolicyTags},
		{"ItemSizes", testItemSizes},
		{"JobList", testJobList},
		{"Policies", testPolicies},
		{"PolicyFires", testPolicyFires},
		{"NodeHeartbeat", testNodeHeartbeat},
		{"PublishServers", testPublishServers},
		{"ClaimByNode", testClaimByNode},
		{"NodeWaits", testNodeWaits},
		{"AdoptJobs", testAdoptJobs},
		{"Verifications", testVerifications},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newDB)
		})
	}
}

// open opens database and closes it when t ends.
func open(t *testing.T, database string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), database, t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func fresh(t *testing.T, newDB NewDatabase) store.Store {
	t.Helper()
	return open(t, newDB(t))
}

// base is the time the test data is created around: a fixed time with
// microseconds, which the store must keep.
var base = time.Date(2024, 3, 4, 5, 6, 7, 123456000, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

const (
	project = "p1"
	other   = "p2"
)

// addCheckpoint stores a checkpoint of project and returns its id.
func addCheckpoint(t *testing.T, tx store.Tx, projectID string) string {
	t.Helper()
	cp := &store.Checkpoint{ProjectID: projectID, PlanID: "fake_1", PlanName: "manual", CreatedAt: base}
	if err := tx.InsertCheckpoint(context.Background(), cp); err != nil {
		t.Fatalf("InsertCheckpoint: %v", err)
	}
	return cp.ID
}

// addItem stores it (with a checkpoint of its project if it has none).
func addItem(t *testing.T, tx store.Tx, it *store.Item) *store.Item {
	t.Helper()
	if it.ProjectID == "" {
		it.ProjectID = project
	}
	if it.CheckpointID == "" {
		it.CheckpointID = addCheckpoint(t, tx, it.ProjectID)
	}
	if it.ResourceID == "" {
		it.ResourceID = "srv-" + it.Name
	}
	if it.Status == "" {
		it.Status = store.StatusAvailable
	}
	if err := tx.InsertItem(context.Background(), it); err != nil {
		t.Fatalf("InsertItem %q: %v", it.Name, err)
	}
	return it
}

func names(items []*store.Item) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

func ids(items []*store.Item) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func testMigrations(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	db := newDB(t)

	// Several processes starting at once on a new database, then again on
	// a migrated one: every one opens it, and the schema is made once.
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := store.Open(ctx, db, t.TempDir())
				if err != nil {
					errs <- err
					return
				}
				errs <- s.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent Open: %v", round, err)
			}
		}
	}
	s := open(t, db)
	it := addItem(t, s, &store.Item{Name: "kept"})
	s2 := open(t, db)
	if _, err := s2.GetItem(ctx, project, it.ID); err != nil {
		t.Fatalf("GetItem after opening again: %v", err)
	}
}

func testCheckpoint(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	cp := &store.Checkpoint{
		ProjectID: project,
		PlanID:    "plan-1",
		PlanName:  "nightly",
		Resources: []store.Resource{{ID: "srv-1", Type: "OS::Nova::Server", Name: "web-1", ExtraInfo: json.RawMessage(`{"a":1}`)}},
		ExtraInfo: json.RawMessage(`{"created_by":"auto"}`),
		CreatedAt: base,
	}
	if err := s.InsertCheckpoint(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if cp.ID == "" {
		t.Fatal("InsertCheckpoint gave no id")
	}
	got, err := s.GetCheckpoint(ctx, project, cp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cp) {
		t.Errorf("GetCheckpoint = %+v, want %+v", got, cp)
	}
	if _, err := s.GetCheckpoint(ctx, other, cp.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCheckpoint of another project: err = %v, want ErrNotFound", err)
	}
	if err := s.InsertCheckpoint(ctx, &store.Checkpoint{ID: cp.ID, ProjectID: project}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("InsertCheckpoint of a duplicate id: err = %v, want ErrConflict", err)
	}
	bare := &store.Checkpoint{ProjectID: project}
	if err := s.InsertCheckpoint(ctx, bare); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetCheckpoint(ctx, project, bare.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ExtraInfo != nil || got.Resources != nil || got.CreatedAt.IsZero() || got.CreatedAt.Location() != time.UTC {
		t.Errorf("GetCheckpoint of a bare checkpoint = %+v, want nil extra info and resources, a UTC creation time", got)
	}
}

func testItemRoundTrip(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	started := base.Add(time.Minute)
	it := &store.Item{
		CheckpointID: addCheckpoint(t, s, project),
		ProjectID:    project,
		Name:         "manualbk_1",
		Description:  "before upgrade",
		ResourceID:   "srv-1",
		ResourceName: "web-1",
		ResourceType: "OS::Nova::Server",
		ResourceAZ:   "az1",
		PolicyID:     "plan-1",
		Status:       store.StatusProtecting,
		CreatedAt:    base,
		UpdatedAt:    base.Add(time.Second),
		Tags:         []store.Tag{{Key: "env", Value: "prod"}, {Key: "team", Value: "db"}},
		Info: store.ItemInfo{
			AutoTrigger: true, Incremental: true, Progress: 42, SizeBytes: 1 << 30,
			StartedAt: &started, FailReason: "none", CreatedBy: "auto",
			BackupData: store.BackupData{VCPUs: 2, RAM: 4096, Disk: 40, PrivateIP: "192.168.0.10"},
			Volumes:    []store.VolumeBackup{{ID: "vb-1", SourceVolumeID: "vol-1", Bootable: true, SizeBytes: 7}},
			SnapshotID: "snap-1", CrashConsistent: true, ParentItemID: "item-0",
		},
	}
	if err := s.InsertItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	if it.ID == "" {
		t.Fatal("InsertItem gave no id")
	}
	for _, get := range []struct {
		name string
		fn   func() (*store.Item, error)
	}{
		{"GetItem", func() (*store.Item, error) { return s.GetItem(ctx, project, it.ID) }},
		{"GetItemAnyProject", func() (*store.Item, error) { return s.GetItemAnyProject(ctx, it.ID) }},
	} {
		got, err := get.fn()
		if err != nil {
			t.Fatalf("%s: %v", get.name, err)
		}
		if !reflect.DeepEqual(got, it) {
			t.Errorf("%s = %+v\nwant %+v", get.name, got, it)
		}
	}

	// Defaults: id, status, times.
	bare := &store.Item{CheckpointID: it.CheckpointID, ProjectID: project, ResourceID: "srv-2"}
	if err := s.InsertItem(ctx, bare); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetItem(ctx, project, bare.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusWaitingProtect || got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) || got.Tags != nil {
		t.Errorf("bare item read back as %+v; want status waiting_protect, UpdatedAt = CreatedAt, nil tags", got)
	}

	// An item needs its checkpoint.
	err = s.InsertItem(ctx, &store.Item{CheckpointID: "nope", ProjectID: project, ResourceID: "srv-3"})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("InsertItem of a missing checkpoint: err = %v, want ErrNotFound", err)
	}
}

func testOtherProject(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	mine := addItem(t, s, &store.Item{Name: "mine"})
	theirs := addItem(t, s, &store.Item{Name: "theirs", ProjectID: other})

	if _, err := s.GetItem(ctx, project, theirs.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetItem of another project's backup: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetItem(ctx, "no-such-project", mine.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetItem from another project: err = %v, want ErrNotFound", err)
	}
	if items, err := s.ItemsOfCheckpoint(ctx, project, theirs.CheckpointID); err != nil || len(items) != 0 {
		t.Errorf("ItemsOfCheckpoint of another project's checkpoint = %v, %v; want none", names(items), err)
	}
	items, err := s.ListItems(ctx, project, store.ItemFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(items); !reflect.DeepEqual(got, []string{"mine"}) {
		t.Errorf("ListItems = %v, want [mine]", got)
	}
	items, err = s.ListItems(ctx, project, store.ItemFilter{AllTenants: true, Sort: []store.SortKey{{Key: "name"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(items); !reflect.DeepEqual(got, []string{"mine", "theirs"}) {
		t.Errorf("ListItems of all tenants = %v, want [mine theirs]", got)
	}
	if _, err := s.ListItems(ctx, project, store.ItemFilter{Marker: theirs.ID}); !errors.Is(err, store.ErrBadMarker) {
		t.Errorf("ListItems with another project's marker: err = %v, want ErrBadMarker", err)
	}
}

func testFilters(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	cp := addCheckpoint(t, s, project)
	for _, it := range []*store.Item{
		{Name: "Web_Daily", ResourceName: "Web-1", ResourceAZ: "az1", PolicyID: "pol-a", CheckpointID: cp, CreatedAt: at(0),
			ResourceType: "OS::Nova::Server", Info: store.ItemInfo{BackupData: store.BackupData{PrivateIP: "10.0.0.1"}}},
		{Name: "web-weekly", ResourceName: "web-2", ResourceAZ: "az2", PolicyID: "pol-a", CreatedAt: at(10),
			ResourceType: "OS::Nova::Server", Info: store.ItemInfo{BackupData: store.BackupData{PrivateIP: "10.0.0.2"}}},
		{Name: "db 100%", ResourceName: "DB-primary", ResourceAZ: "az1", PolicyID: "pol-b", CheckpointID: cp, CreatedAt: at(20),
			Status: store.StatusError, ResourceType: "OS::Nova::Server"},
		{Name: "dbXweekly", ResourceName: "db-replica", ResourceAZ: "az1", CreatedAt: at(30),
			Status: store.StatusProtecting, ResourceType: "OS::Cinder::Volume"},
		{Name: "Ünïcode", ResourceName: "ÄRCHIVE", ResourceAZ: "az2", CreatedAt: at(40), ResourceID: "srv-special"},
	} {
		addItem(t, s, it)
	}
	addItem(t, s, &store.Item{Name: "web-other-project", ProjectID: other, CreatedAt: at(5)})
	gone := addItem(t, s, &store.Item{Name: "web-deleted", CreatedAt: at(6)})
	if ok, err := s.SetItemStatus(ctx, gone.ID, []string{store.StatusAvailable}, store.StatusDeleted); !ok || err != nil {
		t.Fatalf("SetItemStatus deleted = %v, %v", ok, err)
	}

	tm := func(sec int) *time.Time { v := at(sec); return &v }
	tests := []struct {
		name string
		f    store.ItemFilter
		want []string // names, in the default order: newest first
	}{
		{"none", store.ItemFilter{}, []string{"Ünïcode", "dbXweekly", "db 100%", "web-weekly", "Web_Daily"}},
		{"status", store.ItemFilter{Statuses: []string{store.StatusError}}, []string{"db 100%"}},
		{"statuses", store.ItemFilter{Statuses: []string{store.StatusError, store.StatusProtecting}}, []string{"dbXweekly", "db 100%"}},
		{"status deleted", store.ItemFilter{Statuses: []string{store.StatusDeleted}}, nil},
		{"name substring any case", store.ItemFilter{Name: "WEB"}, []string{"web-weekly", "Web_Daily"}},
		{"name underscore is literal", store.ItemFilter{Name: "_"}, []string{"Web_Daily"}},
		{"name percent is literal", store.ItemFilter{Name: "0%"}, []string{"db 100%"}},
		{"name unicode case", store.ItemFilter{Name: "üNÏ"}, []string{"Ünïcode"}},
		{"name no match", store.ItemFilter{Name: "nightly"}, nil},
		{"resource id", store.ItemFilter{ResourceID: "srv-special"}, []string{"Ünïcode"}},
		{"resource name substring", store.ItemFilter{ResourceName: "db-"}, []string{"dbXweekly", "db 100%"}},
		{"resource name unicode case", store.ItemFilter{ResourceName: "ärch"}, []string{"Ünïcode"}},
		{"az", store.ItemFilter{AZ: "az2"}, []string{"Ünïcode", "web-weekly"}},
		{"policy", store.ItemFilter{PolicyID: "pol-a"}, []string{"web-weekly", "Web_Daily"}},
		{"checkpoint", store.ItemFilter{CheckpointID: cp}, []string{"db 100%", "Web_Daily"}},
		{"resource type", store.ItemFilter{ResourceType: "OS::Cinder::Volume"}, []string{"dbXweekly"}},
		{"image type backup", store.ItemFilter{ImageType: "backup"}, []string{"Ünïcode", "dbXweekly", "db 100%", "web-weekly", "Web_Daily"}},
		{"image type other", store.ItemFilter{ImageType: "replication"}, nil},
		{"ip", store.ItemFilter{IP: "10.0.0.2"}, []string{"web-weekly"}},
		{"start time inclusive", store.ItemFilter{StartTime: tm(30)}, []string{"Ünïcode", "dbXweekly"}},
		{"end time inclusive", store.ItemFilter{EndTime: tm(10)}, []string{"web-weekly", "Web_Daily"}},
		{"time window", store.ItemFilter{StartTime: tm(5), EndTime: tm(25)}, []string{"db 100%", "web-weekly"}},
		{"combined", store.ItemFilter{AZ: "az1", Name: "db", Statuses: []string{store.StatusProtecting}}, []string{"dbXweekly"}},
		{"all tenants", store.ItemFilter{AllTenants: true, Name: "web"}, []string{"web-weekly", "web-other-project", "Web_Daily"}},
	}
	for _, tc := range tests {
		items, err := s.ListItems(ctx, project, tc.f)
		if err != nil {
			t.Errorf("%s: ListItems: %v", tc.name, err)
			continue
		}
		want := tc.want
		if want == nil {
			want = []string{}
		}
		if got := names(items); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ListItems = %q, want %q", tc.name, got, want)
		}
		n, err := s.CountItems(ctx, project, tc.f)
		if err != nil {
			t.Errorf("%s: CountItems: %v", tc.name, err)
		} else if n != len(want) {
			t.Errorf("%s: CountItems = %d, want %d", tc.name, n, len(want))
		}
	}
}

// sortData stores backups whose sort keys collide in every way (equal
// times, equal names, names that differ only in case) and returns them.
func sortData(t *testing.T, s store.Store) []*store.Item {
	names := []string{"alpha", "Beta", "beta", "gamma", "alpha"}
	statuses := []string{store.StatusAvailable, store.StatusError, store.StatusProtecting}
	var items []*store.Item
	for i := range 13 {
		items = append(items, addItem(t, s, &store.Item{
			Name:       names[i%len(names)],
			ResourceID: fmt.Sprintf("srv-%d", i),
			Status:     statuses[i%len(statuses)],
			CreatedAt:  at(i % 4),
			UpdatedAt:  at(100 + i%3),
		}))
	}
	// Neither of these may show up.
	addItem(t, s, &store.Item{Name: "alpha", ProjectID: other, CreatedAt: at(1)})
	gone := addItem(t, s, &store.Item{Name: "alpha", CreatedAt: at(1)})
	if ok, err := s.SetItemStatus(context.Background(), gone.ID, []string{store.StatusAvailable}, store.StatusDeleted); !ok || err != nil {
		t.Fatalf("SetItemStatus deleted = %v, %v", ok, err)
	}
	return items
}

// sorted returns items in the order of keys, id last, as the store must.
func sorted(items []*store.Item, keys []store.SortKey) []*store.Item {
	if len(keys) == 0 {
		keys = []store.SortKey{{Key: "created_at", Desc: true}}
	}
	cmp := func(a, b *store.Item, key string) int {
		switch key {
		case "created_at", "protected_at":
			return a.CreatedAt.Compare(b.CreatedAt)
		case "updated_at":
			return a.UpdatedAt.Compare(b.UpdatedAt)
		case "name":
			return strings.Compare(a.Name, b.Name)
		case "status":
			return strings.Compare(a.Status, b.Status)
		case "id":
			return strings.Compare(a.ID, b.ID)
		}
		panic("unknown sort key " + key)
	}
	all := append(keys, store.SortKey{Key: "id", Desc: keys[len(keys)-1].Desc})
	out := append([]*store.Item(nil), items...)
	sort.Slice(out, func(i, j int) bool {
		for _, k := range all {
			c := cmp(out[i], out[j], k.Key)
			if k.Desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
	return out
}

func testSortAndPage(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	items := sortData(t, s)

	var orders [][]store.SortKey
	orders = append(orders, nil) // the default
	for _, key := range []string{"created_at", "updated_at", "name", "status", "protected_at", "id"} {
		for _, desc := range []bool{false, true} {
			orders = append(orders, []store.SortKey{{Key: key, Desc: desc}})
		}
	}
	orders = append(orders,
		[]store.SortKey{{Key: "name"}, {Key: "created_at", Desc: true}},
		[]store.SortKey{{Key: "status", Desc: true}, {Key: "updated_at"}, {Key: "name", Desc: true}},
	)
	for _, keys := range orders {
		want := ids(sorted(items, keys))
		for _, limit := range []int{0, 1, 3, 5, 13, 20} {
			var got []string
			marker := ""
			for page := 0; ; page++ {
				if page > len(items)+1 {
					t.Fatalf("sort %v limit %d: paging does not end", keys, limit)
				}
				p, err := s.ListItems(ctx, project, store.ItemFilter{Sort: keys, Limit: limit, Marker: marker})
				if err != nil {
					t.Fatalf("sort %v limit %d: ListItems: %v", keys, limit, err)
				}
				if limit > 0 && len(p) > limit {
					t.Fatalf("sort %v limit %d: page of %d", keys, limit, len(p))
				}
				if len(p) == 0 {
					break
				}
				got = append(got, ids(p)...)
				marker = p[len(p)-1].ID
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("sort %v limit %d: pages = %v\nwant %v", keys, limit, got, want)
			}
		}
	}
}

func testOffsetAndLimit(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	items := sortData(t, s)
	keys := []store.SortKey{{Key: "name"}}
	want := ids(sorted(items, keys))
	tests := []struct {
		name          string
		marker        int // index into want, -1 for none
		offset, limit int
		from, to      int // the expected page is want[from:to]
	}{
		{"offset only", -1, 4, 0, 4, 13},
		{"offset and limit", -1, 2, 3, 2, 5},
		{"limit only", -1, 0, 3, 0, 3},
		{"marker", 2, 0, 0, 3, 13},
		{"marker and limit", 2, 0, 4, 3, 7},
		{"marker offset limit", 2, 1, 3, 4, 7},
		{"offset past the end", 10, 5, 3, 13, 13},
		{"marker is last", 12, 0, 3, 13, 13},
	}
	for _, tc := range tests {
		f := store.ItemFilter{Sort: keys, Offset: tc.offset, Limit: tc.limit}
		if tc.marker >= 0 {
			f.Marker = want[tc.marker]
		}
		p, err := s.ListItems(ctx, project, f)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := ids(p); !reflect.DeepEqual(got, want[tc.from:tc.to]) {
			t.Errorf("%s: got %v, want %v", tc.name, got, want[tc.from:tc.to])
		}
		// Count ignores paging.
		if n, err := s.CountItems(ctx, project, f); err != nil || n != len(items) {
			t.Errorf("%s: CountItems = %d, %v; want %d", tc.name, n, err, len(items))
		}
	}
}

func testBadMarkerAndSortKey(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	addItem(t, s, &store.Item{Name: "a"})
	if _, err := s.ListItems(ctx, project, store.ItemFilter{Marker: "no-such-id"}); !errors.Is(err, store.ErrBadMarker) {
		t.Errorf("unknown marker: err = %v, want ErrBadMarker", err)
	}
	if _, err := s.ListItems(ctx, project, store.ItemFilter{Sort: []store.SortKey{{Key: "size"}}}); !errors.Is(err, store.ErrBadSortKey) {
		t.Errorf("unknown sort key: err = %v, want ErrBadSortKey", err)
	}
	if _, err := s.ListItems(ctx, project, store.ItemFilter{Sort: []store.SortKey{{Key: "name; DROP TABLE items"}}}); !errors.Is(err, store.ErrBadSortKey) {
		t.Errorf("injected sort key: err = %v, want ErrBadSortKey", err)
	}
}

func testConflict(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	cp := addCheckpoint(t, s, project)
	first := &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1", Status: store.StatusWaitingProtect}
	if err := s.InsertItem(ctx, first); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{store.StatusWaitingProtect, store.StatusProtecting} {
		err := s.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1", Status: st})
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("second %s backup while the first waits: err = %v, want ErrConflict", st, err)
		}
	}
	// Another server, or a finished backup of the same one, is no conflict.
	if err := s.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-2"}); err != nil {
		t.Errorf("backup of another server: %v", err)
	}
	if err := s.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1", Status: store.StatusAvailable}); err != nil {
		t.Errorf("available backup of a server with a running one: %v", err)
	}
	if ok, err := s.SetItemStatus(ctx, first.ID, []string{store.StatusWaitingProtect}, store.StatusProtecting); !ok || err != nil {
		t.Fatalf("SetItemStatus protecting = %v, %v", ok, err)
	}
	if err := s.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second backup while the first runs: err = %v, want ErrConflict", err)
	}
	if ok, err := s.SetItemStatus(ctx, first.ID, []string{store.StatusProtecting}, store.StatusAvailable); !ok || err != nil {
		t.Fatalf("SetItemStatus available = %v, %v", ok, err)
	}
	if err := s.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1"}); err != nil {
		t.Errorf("backup once the first is available: %v", err)
	}
	// A duplicate id is a conflict too.
	if err := s.InsertItem(ctx, &store.Item{ID: first.ID, CheckpointID: cp, ProjectID: project, ResourceID: "srv-9", Status: store.StatusAvailable}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate id: err = %v, want ErrConflict", err)
	}
}

// testConflictInTx checks that a conflict does not spoil the transaction
// (PostgreSQL aborts a transaction on a failed statement).
func testConflictInTx(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	addItem(t, s, &store.Item{Name: "running", ResourceID: "srv-1", Status: store.StatusProtecting})
	var added string
	err := s.InTx(ctx, func(tx store.Tx) error {
		cp := addCheckpoint(t, tx, project)
		if err := tx.InsertItem(ctx, &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-1"}); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("InsertItem of a running server: err = %v, want ErrConflict", err)
		}
		it := &store.Item{CheckpointID: cp, ProjectID: project, ResourceID: "srv-2"}
		if err := tx.InsertItem(ctx, it); err != nil {
			return err
		}
		added = it.ID
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if _, err := s.GetItem(ctx, project, added); err != nil {
		t.Errorf("backup inserted after a conflict in the same transaction: %v", err)
	}
}

func testSetItemStatus(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	it := addItem(t, s, &store.Item{Name: "a", Status: store.StatusAvailable, UpdatedAt: base})

	if ok, err := s.SetItemStatus(ctx, it.ID, []string{store.StatusProtecting}, store.StatusAvailable); ok || err != nil {
		t.Errorf("SetItemStatus from a status it is not in = %v, %v; want false", ok, err)
	}
	if ok, err := s.SetItemStatus(ctx, it.ID, nil, store.StatusError); ok || err != nil {
		t.Errorf("SetItemStatus from no status = %v, %v; want false", ok, err)
	}
	if ok, err := s.SetItemStatus(ctx, "no-such-id", []string{store.StatusAvailable}, store.StatusError); ok || err != nil {
		t.Errorf("SetItemStatus of a missing backup = %v, %v; want false", ok, err)
	}

	// Of concurrent movers, exactly one wins.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.SetItemStatus(ctx, it.ID, []string{store.StatusAvailable, store.StatusError}, store.StatusWaitingDelete)
			if err != nil {
				t.Errorf("SetItemStatus: %v", err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent SetItemStatus calls won, want 1", wins)
	}
	got, err := s.GetItem(ctx, project, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusWaitingDelete || !got.UpdatedAt.After(base) {
		t.Errorf("after SetItemStatus: status %s, updated %v; want waiting_delete, updated now", got.Status, got.UpdatedAt)
	}
}

func testUpdateItem(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	it := addItem(t, s, &store.Item{Name: "old", Status: store.StatusProtecting, UpdatedAt: base})

	it.Name = "New Name"
	it.Description = "d"
	it.Status = store.StatusAvailable
	it.Tags = []store.Tag{{Key: "k", Value: "v"}} // not written: only UpdateItemTags changes tags
	it.Info.Progress = 100
	it.Info.BackupData.PrivateIP = "10.1.1.1"
	it.ResourceName = "ignored" // not mutable
	if err := s.UpdateItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	if !it.UpdatedAt.After(base) {
		t.Errorf("UpdateItem left UpdatedAt at %v", it.UpdatedAt)
	}
	got, err := s.GetItem(ctx, project, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *it
	want.ResourceName = "" // as stored
	want.Tags = nil        // as stored
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("after UpdateItem: %+v\nwant %+v", got, &want)
	}
	// The filter columns follow.
	for _, f := range []store.ItemFilter{{Name: "new na"}, {IP: "10.1.1.1"}, {Statuses: []string{store.StatusAvailable}}} {
		if n, err := s.CountItems(ctx, project, f); err != nil || n != 1 {
			t.Errorf("CountItems(%+v) after UpdateItem = %d, %v; want 1", f, n, err)
		}
	}
	if err := s.UpdateItem(ctx, &store.Item{ID: "no-such-id", ProjectID: project}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateItem of a missing backup: err = %v, want ErrNotFound", err)
	}
	if err := s.UpdateItem(ctx, &store.Item{ID: it.ID, ProjectID: other}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateItem from another project: err = %v, want ErrNotFound", err)
	}
}

func testDeleted(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	items := []*store.Item{
		addItem(t, s, &store.Item{Name: "a", CreatedAt: at(1)}),
		addItem(t, s, &store.Item{Name: "b", CreatedAt: at(2)}),
		addItem(t, s, &store.Item{Name: "c", CreatedAt: at(3)}),
	}
	b := items[1]
	for _, st := range []string{store.StatusWaitingDelete, store.StatusDeleting, store.StatusDeleted} {
		b.Status = st
		if err := s.UpdateItem(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GetItem(ctx, project, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetItem of a deleted backup: err = %v, want ErrNotFound", err)
	}
	if got, err := s.GetItemAnyProject(ctx, b.ID); err != nil || got.Status != store.StatusDeleted {
		t.Errorf("GetItemAnyProject of a deleted backup = %+v, %v; want it, deleted", got, err)
	}
	if got, err := s.ItemsOfCheckpoint(ctx, project, b.CheckpointID); err != nil || len(got) != 0 {
		t.Errorf("ItemsOfCheckpoint of a deleted backup = %v, %v; want none", names(got), err)
	}
	list, err := s.ListItems(ctx, project, store.ItemFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list); !reflect.DeepEqual(got, []string{"c", "a"}) {
		t.Errorf("ListItems = %v, want [c a]", got)
	}
	if n, err := s.CountItems(ctx, project, store.ItemFilter{}); err != nil || n != 2 {
		t.Errorf("CountItems = %d, %v; want 2", n, err)
	}
	// A page marker deleted since the previous page still marks its place.
	list, err = s.ListItems(ctx, project, store.ItemFilter{Marker: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list); !reflect.DeepEqual(got, []string{"a"}) {
		t.Errorf("ListItems after a deleted marker = %v, want [a]", got)
	}
}

func testLatestItem(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	for i, st := range []string{store.StatusAvailable, store.StatusAvailable, store.StatusError, store.StatusAvailable} {
		addItem(t, s, &store.Item{Name: fmt.Sprint(i), ResourceID: "srv-1", Status: st, CreatedAt: at(10 * i)})
	}
	addItem(t, s, &store.Item{Name: "other server", ResourceID: "srv-2", CreatedAt: at(25)})
	addItem(t, s, &store.Item{Name: "other project", ProjectID: other, ResourceID: "srv-1", CreatedAt: at(25)})
	avail := []string{store.StatusAvailable}
	tests := []struct {
		statuses []string
		before   time.Time
		want     string // name, "" for ErrNotFound
	}{
		{avail, at(100), "3"},
		{avail, at(30), "1"}, // strictly before
		{avail, at(31), "3"},
		{[]string{store.StatusError}, at(100), "2"},
		{nil, at(29), "2"},
		{avail, at(0), ""},
		{[]string{store.StatusProtecting}, at(100), ""},
	}
	for _, tc := range tests {
		it, err := s.LatestItem(ctx, project, "srv-1", tc.statuses, tc.before)
		switch {
		case tc.want == "" && !errors.Is(err, store.ErrNotFound):
			t.Errorf("LatestItem(%v, %v) = %v, %v; want ErrNotFound", tc.statuses, tc.before, it, err)
		case tc.want != "" && err != nil:
			t.Errorf("LatestItem(%v, %v): %v", tc.statuses, tc.before, err)
		case tc.want != "" && it.Name != tc.want:
			t.Errorf("LatestItem(%v, %v) = %s, want %s", tc.statuses, tc.before, it.Name, tc.want)
		}
	}
}

func testInTxRollback(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	kept := addItem(t, s, &store.Item{Name: "kept", Status: store.StatusAvailable})
	boom := errors.New("boom")
	var cpID, itemID, jobID string
	err := s.InTx(ctx, func(tx store.Tx) error {
		cpID = addCheckpoint(t, tx, project)
		itemID = addItem(t, tx, &store.Item{Name: "rolled back", CheckpointID: cpID}).ID
		j := &store.Job{Kind: "protect", ItemID: itemID}
		if err := tx.InsertJob(ctx, j); err != nil {
			return err
		}
		jobID = j.ID
		if ok, err := tx.SetItemStatus(ctx, kept.ID, []string{store.StatusAvailable}, store.StatusWaitingDelete); !ok || err != nil {
			return fmt.Errorf("SetItemStatus = %v, %v", ok, err)
		}
		// Inside, the changes are visible.
		if _, err := tx.GetItem(ctx, project, itemID); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want fn's error", err)
	}
	if _, err := s.GetCheckpoint(ctx, project, cpID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("checkpoint of a rolled back transaction: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetItemAnyProject(ctx, itemID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("backup of a rolled back transaction: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetJob(ctx, jobID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("job of a rolled back transaction: err = %v, want ErrNotFound", err)
	}
	if got, err := s.GetItem(ctx, project, kept.ID); err != nil || got.Status != store.StatusAvailable {
		t.Errorf("status changed in a rolled back transaction: %+v, %v", got, err)
	}

	// And a committed one keeps everything.
	err = s.InTx(ctx, func(tx store.Tx) error {
		cpID = addCheckpoint(t, tx, project)
		itemID = addItem(t, tx, &store.Item{Name: "committed", CheckpointID: cpID}).ID
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetItem(ctx, project, itemID); err != nil {
		t.Errorf("backup of a committed transaction: %v", err)
	}
}

func testJobs(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	if j, err := s.ClaimJob(ctx, "w1", "", time.Minute); j != nil || err != nil {
		t.Fatalf("ClaimJob of an empty queue = %+v, %v; want nil, nil", j, err)
	}
	j := &store.Job{Kind: "protect", ProjectID: project, CheckpointID: "cp", ItemID: "it", PlanID: "pl", RestoreID: "rs", Node: "n1",
		Args: json.RawMessage(`{"full":true}`), CreatedAt: base}
	if err := s.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if j.ID == "" || j.Status != store.JobQueued {
		t.Fatalf("InsertJob left id %q status %q", j.ID, j.Status)
	}
	got, err := s.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Errorf("GetJob = %+v\nwant %+v", got, j)
	}
	if _, err := s.GetJob(ctx, "no-such-job"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJob of a missing job: err = %v, want ErrNotFound", err)
	}
	if err := s.InsertJob(ctx, &store.Job{ID: j.ID, Kind: "gc"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("InsertJob of a duplicate id: err = %v, want ErrConflict", err)
	}
	later := &store.Job{Kind: "gc", CreatedAt: base.Add(time.Second)}
	if err := s.InsertJob(ctx, later); err != nil {
		t.Fatal(err)
	}

	before := time.Now()
	c, err := s.ClaimJob(ctx, "w1", "", time.Hour)
	if err != nil || c == nil {
		t.Fatalf("ClaimJob = %+v, %v", c, err)
	}
	if c.ID != j.ID || c.Status != store.JobRunning || c.Attempt != 1 || c.LeaseOwner != "w1" ||
		c.LeaseUntil.Before(before.Add(time.Hour-time.Second)) || c.StartedAt == nil || string(c.Args) != `{"full":true}` {
		t.Errorf("ClaimJob = %+v; want the oldest job, running, attempt 1, leased to w1 for an hour", c)
	}
	for _, tc := range []struct {
		status string
		want   int
	}{{store.JobQueued, 1}, {store.JobRunning, 1}, {store.JobSucceeded, 0}, {"", 2}} {
		if n, err := s.CountJobs(ctx, tc.status); err != nil || n != tc.want {
			t.Errorf("CountJobs(%q) = %d, %v; want %d", tc.status, n, err, tc.want)
		}
	}
	if err := s.RenewLease(ctx, c.ID, "w1", 2*time.Hour); err != nil {
		t.Errorf("RenewLease: %v", err)
	}
	if got, _ := s.GetJob(ctx, c.ID); got == nil || got.LeaseUntil.Before(before.Add(2*time.Hour-time.Second)) {
		t.Errorf("RenewLease did not extend the lease: %+v", got)
	}
	if err := s.FinishJob(ctx, c.ID, "w1", ""); err != nil {
		t.Fatalf("FinishJob: %v", err)
	}
	c2, err := s.ClaimJob(ctx, "w1", "", time.Hour)
	if err != nil || c2 == nil || c2.ID != later.ID {
		t.Fatalf("second ClaimJob = %+v, %v; want the gc job", c2, err)
	}
	if err := s.FinishJob(ctx, c2.ID, "w1", "disk full"); err != nil {
		t.Fatalf("FinishJob failed: %v", err)
	}
	for id, want := range map[string]struct{ status, err string }{
		c.ID:  {store.JobSucceeded, ""},
		c2.ID: {store.JobFailed, "disk full"},
	} {
		got, err := s.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want.status || got.Error != want.err || got.FinishedAt == nil {
			t.Errorf("finished job %s: status %q error %q finished %v; want %q %q", id, got.Status, got.Error, got.FinishedAt, want.status, want.err)
		}
	}
	if j, err := s.ClaimJob(ctx, "w1", "", time.Minute); j != nil || err != nil {
		t.Errorf("ClaimJob with only finished jobs = %+v, %v; want nil, nil", j, err)
	}
}

func testClaimConcurrent(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	const jobs = 60
	for i := range jobs {
		if err := s.InsertJob(ctx, &store.Job{Kind: "protect", CreatedAt: at(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		claims = map[string][]string{} // job id -> owners
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("worker-%d", w)
			for {
				j, err := s.ClaimJob(ctx, owner, "", time.Hour)
				if err != nil {
					t.Errorf("%s: ClaimJob: %v", owner, err)
					return
				}
				if j == nil {
					return
				}
				mu.Lock()
				claims[j.ID] = append(claims[j.ID], owner)
				mu.Unlock()
				if err := s.FinishJob(ctx, j.ID, owner, ""); err != nil {
					t.Errorf("%s: FinishJob: %v", owner, err)
				}
			}
		}()
	}
	wg.Wait()
	if len(claims) != jobs {
		t.Errorf("%d jobs claimed, want %d", len(claims), jobs)
	}
	for id, owners := range claims {
		if len(owners) != 1 {
			t.Errorf("job %s claimed by %v", id, owners)
		}
	}
	if n, err := s.CountJobs(ctx, store.JobSucceeded); err != nil || n != jobs {
		t.Errorf("CountJobs(succeeded) = %d, %v; want %d", n, err, jobs)
	}
}

func testExpiredLease(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	j := &store.Job{Kind: "protect"}
	if err := s.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	// A lease that ended in the past stands for a worker that died.
	dead, err := s.ClaimJob(ctx, "dead", "", -time.Minute)
	if err != nil || dead == nil {
		t.Fatalf("ClaimJob = %+v, %v", dead, err)
	}
	again, err := s.ClaimJob(ctx, "alive", "", time.Hour)
	if err != nil || again == nil {
		t.Fatalf("ClaimJob of an expired lease = %+v, %v", again, err)
	}
	if again.ID != j.ID || again.Attempt != 2 || again.LeaseOwner != "alive" || !again.StartedAt.Equal(*dead.StartedAt) {
		t.Errorf("reclaimed job = %+v; want attempt 2, owner alive, first start kept", again)
	}
	if err := s.RenewLease(ctx, j.ID, "dead", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease by the former owner: err = %v, want ErrLeaseLost", err)
	}
	if err := s.FinishJob(ctx, j.ID, "dead", ""); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("FinishJob by the former owner: err = %v, want ErrLeaseLost", err)
	}
	// A live lease is not taken.
	if other, err := s.ClaimJob(ctx, "third", "", time.Hour); other != nil || err != nil {
		t.Errorf("ClaimJob of a leased job = %+v, %v; want nil, nil", other, err)
	}
	if err := s.FinishJob(ctx, j.ID, "alive", ""); err != nil {
		t.Errorf("FinishJob by the owner: %v", err)
	}
}

func testLeaseOwner(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	j := &store.Job{Kind: "restore"}
	if err := s.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	// Not running yet: nobody owns it.
	if err := s.RenewLease(ctx, j.ID, "w1", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease of a queued job: err = %v, want ErrLeaseLost", err)
	}
	if _, err := s.ClaimJob(ctx, "w1", "", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewLease(ctx, j.ID, "w2", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease by a non-owner: err = %v, want ErrLeaseLost", err)
	}
	if err := s.FinishJob(ctx, j.ID, "w2", ""); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("FinishJob by a non-owner: err = %v, want ErrLeaseLost", err)
	}
	if err := s.RenewLease(ctx, "no-such-job", "w1", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease of a missing job: err = %v, want ErrLeaseLost", err)
	}
	if err := s.FinishJob(ctx, j.ID, "w1", "failed"); err != nil {
		t.Fatal(err)
	}
	// Finished: the lease is over.
	if err := s.FinishJob(ctx, j.ID, "w1", ""); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("FinishJob twice: err = %v, want ErrLeaseLost", err)
	}
	if err := s.RenewLease(ctx, j.ID, "w1", time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease of a finished job: err = %v, want ErrLeaseLost", err)
	}
}
