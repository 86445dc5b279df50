package api

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// defaultLimit is the page size of the reference when limit is not given.
const defaultLimit = 1000

var sortKeys = map[string]bool{"created_at": true, "updated_at": true, "name": true, "status": true, "protected_at": true, "id": true}

// itemFilter reads the query of "Querying All Backups" (count: of
// "Querying the Number of Backups", which has no paging or sort).
func itemFilter(q url.Values, count bool) (store.ItemFilter, error) {
	f := store.ItemFilter{
		Name: q.Get("name"), ResourceID: q.Get("resource_id"),
		ResourceName: q.Get("resource_name"), AZ: q.Get("az"), PolicyID: q.Get("policy_id"),
		CheckpointID: q.Get("checkpoint_id"), ResourceType: q.Get("resource_type"), ImageType: q.Get("image_type"),
		// The SDK's ListOpts.VmIp sends ip on lists too, not only on count.
		IP: q.Get("ip"),
	}
	if st := q.Get("status"); st != "" {
		if !slices.Contains(store.ItemStatuses, st) {
			return f, service.InvalidParam("status", "%q is not a backup status", truncate(st, 40))
		}
		f.Statuses = service.StoredStatuses(st)
	}
	all, err := parseAllTenants(q)
	if err != nil {
		return f, err
	}
	f.AllTenants = all
	for _, tf := range []struct {
		name string
		dst  **time.Time
	}{{"start_time", &f.StartTime}, {"end_time", &f.EndTime}} {
		if v := q.Get(tf.name); v != "" {
			t, err := parseTime(v)
			if err != nil {
				return f, service.InvalidParam(tf.name, "want a time like 2017-04-18T01:21:52.701973, got %q", truncate(v, 40))
			}
			*tf.dst = &t
		}
	}
	if count {
		return f, nil
	}
	pg, err := parsePaging(q)
	if err != nil {
		return f, err
	}
	f.Limit, f.Offset, f.Marker = pg.limit, pg.offset, pg.marker
	if v := q.Get("sort"); v != "" {
		keys, err := parseSort(v)
		if err != nil {
			return f, err
		}
		f.Sort = keys
	}
	return f, nil
}

// parseSort reads key1[:asc|desc],key2[:…]; the direction defaults to desc.
func parseSort(v string) ([]store.SortKey, error) {
	if len(v) > 255 {
		return nil, service.InvalidParam("sort", "is %d characters long; at most 255 are allowed", len(v))
	}
	var keys []store.SortKey
	for _, part := range strings.Split(v, ",") {
		k, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
		if !sortKeys[k] {
			return nil, service.InvalidParam("sort", "unknown key %q; use created_at, updated_at, name, status, protected_at or id", truncate(k, 40))
		}
		switch dir {
		case "", "desc":
			keys = append(keys, store.SortKey{Key: k, Desc: true})
		case "asc":
			keys = append(keys, store.SortKey{Key: k})
		default:
			return nil, service.InvalidParam("sort", "direction %q of %s: want asc or desc", truncate(dir, 20), k)
		}
	}
	return keys, nil
}

// parseTime accepts the reference's time forms, with or without fraction.
func parseTime(v string) (time.Time, error) {
	var err error
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02 15:04:05", time.RFC3339Nano} {
		var t time.Time
		if t, err = time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, err
}

// nextLink is the URL of the page after the one ending with lastID: the
// same query with marker set and offset dropped (the marker already skips),
// under base (Server.baseURL).
func nextLink(r *http.Request, base, lastID string) string {
	q := r.URL.Query()
	q.Del("offset")
	q.Set("marker", lastID)
	return base + r.URL.EscapedPath() + "?" + q.Encode()
}

// paging is where a list page starts and how long it is.
type paging struct {
	limit  int    // 1 to defaultLimit
	offset int    // rows to skip after the marker
	marker string // id of the last row of the previous page
}

// parsePaging reads limit (default and at most 1000), offset and marker,
// which every list of the API takes.
func parsePaging(q url.Values) (paging, error) {
	pg := paging{limit: defaultLimit, marker: q.Get("marker")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return pg, service.InvalidParam("limit", "want a positive whole number, got %q", truncate(v, 20))
		}
		pg.limit = min(n, defaultLimit)
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return pg, service.InvalidParam("offset", "want a whole number of at least 0, got %q", truncate(v, 20))
		}
		pg.offset = n
	}
	return pg, nil
}

// parseAllTenants reads all_tenants (who may use it is authorization's).
func parseAllTenants(q url.Values) (bool, error) {
	v := q.Get("all_tenants")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, service.InvalidParam("all_tenants", "want true or false, got %q", truncate(v, 20))
	}
	return b, nil
}

// listPage is the answer to a list request: rows were fetched with a limit
// one more than the page's, so that a row beyond it tells there is a next
// page; the page goes under key, and a next link under key_links.
func listPage[T, W any](r *http.Request, base, key string, rows []T, limit int, id func(T) string, wire func(T) W) map[string]any {
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	out := make([]W, len(rows))
	for i, x := range rows {
		out[i] = wire(x)
	}
	resp := map[string]any{key: out}
	if more {
		resp[key+"_links"] = []map[string]string{{"rel": "next", "href": nextLink(r, base, id(rows[len(rows)-1]))}}
	}
	return resp
}
