package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/csbs/csbs/internal/store"
)

// CodeTagNotFound is the refusal to delete a tag the resource does not
// have (404).
const CodeTagNotFound = "CSBS.7001"

// The resource kinds that carry tags, as their URLs name them.
const (
	TagKindBackup = "csbs_backup"
	TagKindPolicy = "csbs_backup_policy"
)

// Limits of the tag pages beyond those of NormalizeTags: deletes and
// queries accept longer keys and values than creates do.
const (
	maxQueryKeyLen   = 127
	maxQueryValueLen = 255
	maxQueryValues   = 10
	maxQueryLimit    = 1000
)

// tagTarget is where the tags of one resource kind live.
type tagTarget interface {
	// list returns the resources of the project with their tags, in the
	// order tag queries return them.
	list(ctx context.Context, projectID string) ([]store.TaggedResource, error)
	// get returns the tags of one resource; a missing resource is the
	// kind's not-found refusal.
	get(ctx context.Context, projectID, id string) ([]store.Tag, error)
	// update changes the tags of one resource as store.UpdateItemTags does;
	// a missing resource is the kind's not-found refusal.
	update(ctx context.Context, projectID, id string, fn func([]store.Tag) ([]store.Tag, error)) error
}

func (s *Service) tagTarget(kind string) (tagTarget, error) {
	switch kind {
	case TagKindBackup:
		return backupTags{s.store}, nil
	case TagKindPolicy:
		return policyTags{s.store}, nil
	}
	return nil, InvalidParam("resource type", "%q has no tags; use %s or %s", kind, TagKindBackup, TagKindPolicy)
}

type backupTags struct{ st store.Store }

func (b backupTags) list(ctx context.Context, projectID string) ([]store.TaggedResource, error) {
	return b.st.ListItemTags(ctx, projectID)
}

func (b backupTags) get(ctx context.Context, projectID, id string) ([]store.Tag, error) {
	it, err := b.st.GetItem(ctx, projectID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(CodeItemNotFound, "Checkpoint_item (%s) is not found.", id)
	}
	if err != nil {
		return nil, err
	}
	return it.Tags, nil
}

func (b backupTags) update(ctx context.Context, projectID, id string, fn func([]store.Tag) ([]store.Tag, error)) error {
	err := b.st.UpdateItemTags(ctx, projectID, id, fn)
	if errors.Is(err, store.ErrNotFound) {
		return errf(CodeItemNotFound, "Checkpoint_item (%s) is not found.", id)
	}
	return err
}

type policyTags struct{ st store.Store }

func policyNotFound(id string) error {
	return errf(CodePlanNotFound, "plan not found: no backup policy %s", truncateRunes(id, 70))
}

func (p policyTags) list(ctx context.Context, projectID string) ([]store.TaggedResource, error) {
	return p.st.ListPolicyTags(ctx, projectID)
}

func (p policyTags) get(ctx context.Context, projectID, id string) ([]store.Tag, error) {
	pol, err := p.st.GetPolicy(ctx, projectID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, policyNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return pol.Tags, nil
}

func (p policyTags) update(ctx context.Context, projectID, id string, fn func([]store.Tag) ([]store.Tag, error)) error {
	err := p.st.UpdatePolicyTags(ctx, projectID, id, fn)
	if errors.Is(err, store.ErrNotFound) {
		return policyNotFound(id)
	}
	return err
}

// setTags returns cur with add applied: a tag whose key exists replaces
// it in place, others are appended. More than maxTags is CSBS.7000.
func setTags(cur, add []store.Tag) ([]store.Tag, error) {
	out := slices.Clone(cur)
	for _, t := range add {
		i := slices.IndexFunc(out, func(o store.Tag) bool { return o.Key == t.Key })
		if i >= 0 {
			out[i] = t
		} else {
			out = append(out, t)
		}
	}
	if len(out) > maxTags {
		return nil, errf(CodeTagLimit, "request tags exceed the max allowed count: the resource would have %d tags, at most %d are allowed; delete some first", len(out), maxTags)
	}
	return out, nil
}

// AddTag adds one tag to a backup or policy; a tag with the same key is
// overwritten. Adding a tag the resource already has changes nothing.
func (s *Service) AddTag(ctx context.Context, kind, projectID, id string, tag store.Tag) error {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return err
	}
	tags, err := NormalizeTags("tag", []store.Tag{tag})
	if err != nil {
		return err
	}
	return tt.update(ctx, projectID, id, func(cur []store.Tag) ([]store.Tag, error) {
		return setTags(cur, tags)
	})
}

// TagDelete names a tag to delete: by key alone, or by key and value
// when Value is not nil.
type TagDelete struct {
	Key   string
	Value *string
}

// CreateTags adds tags in one step, as AddTag does for each; keys in tags
// must be unique. Either all are added or, when the result would exceed
// 10 tags, none.
func (s *Service) CreateTags(ctx context.Context, kind, projectID, id string, tags []store.Tag) error {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return err
	}
	if tags == nil {
		return InvalidParam("tags", "missing; a list of 1 to %d tags is required", maxTags)
	}
	tags, err = NormalizeTags("tags", tags)
	if err != nil {
		return err
	}
	return tt.update(ctx, projectID, id, func(cur []store.Tag) ([]store.Tag, error) {
		return setTags(cur, tags)
	})
}

// DeleteTags removes tags in one step. Tags the resource does not have are
// skipped, keys may repeat, and neither keys nor values are checked
// against the character set of creates.
func (s *Service) DeleteTags(ctx context.Context, kind, projectID, id string, dels []TagDelete) error {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return err
	}
	if dels == nil {
		return InvalidParam("tags", "missing; a list of 1 to %d tags is required", maxTags)
	}
	if len(dels) == 0 {
		return InvalidParam("tags", "must not be an empty list")
	}
	if len(dels) > maxTags {
		return InvalidParam("tags", "has %d tags; at most %d are allowed", len(dels), maxTags)
	}
	clean := make([]TagDelete, len(dels))
	for i, d := range dels {
		k := strings.TrimSpace(d.Key)
		if k == "" {
			return InvalidParam("tags", "tag %d: key must not be empty", i+1)
		}
		if n := len([]rune(k)); n > maxQueryKeyLen {
			return InvalidParam("tags", "tag key of %d characters; at most %d are allowed", n, maxQueryKeyLen)
		}
		clean[i].Key = k
		if d.Value != nil {
			v := strings.TrimSpace(*d.Value)
			if n := len([]rune(v)); n > maxQueryValueLen {
				return InvalidParam("tags", "value of tag %q has %d characters; at most %d are allowed", truncateRunes(k, 40), n, maxQueryValueLen)
			}
			clean[i].Value = &v
		}
	}
	return tt.update(ctx, projectID, id, func(cur []store.Tag) ([]store.Tag, error) {
		return slices.DeleteFunc(slices.Clone(cur), func(t store.Tag) bool {
			return slices.ContainsFunc(clean, func(d TagDelete) bool {
				return d.Key == t.Key && (d.Value == nil || *d.Value == t.Value)
			})
		}), nil
	})
}

// DeleteTag removes the tag with key from a backup or policy:
// CSBS.7001 (404) when it has no such tag.
func (s *Service) DeleteTag(ctx context.Context, kind, projectID, id, key string) error {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return err
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return InvalidParam("key", "must not be empty")
	}
	return tt.update(ctx, projectID, id, func(cur []store.Tag) ([]store.Tag, error) {
		i := slices.IndexFunc(cur, func(t store.Tag) bool { return t.Key == key })
		if i < 0 {
			return nil, &Error{Code: CodeTagNotFound, Status: 404,
				Msg: fmt.Sprintf("The backup tag does not exist: %s has no tag with key %q.", id, truncateRunes(key, 130))}
		}
		return slices.Delete(slices.Clone(cur), i, i+1), nil
	})
}

// ResourceTags returns the tags of one backup or policy (an empty list
// when it has none).
func (s *Service) ResourceTags(ctx context.Context, kind, projectID, id string) ([]store.Tag, error) {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return nil, err
	}
	tags, err := tt.get(ctx, projectID, id)
	if err != nil {
		return nil, err
	}
	return nonNilTags(tags), nil
}

func nonNilTags(t []store.Tag) []store.Tag {
	if t == nil {
		return []store.Tag{}
	}
	return t
}

// KeyValues is a tag key with the values the resources of a project give it.
type KeyValues struct {
	Key    string
	Values []string
}

// ProjectTags returns every tag key used by the backups (or policies) of
// the project with its distinct values, both sorted.
func (s *Service) ProjectTags(ctx context.Context, kind, projectID string) ([]KeyValues, error) {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return nil, err
	}
	res, err := tt.list(ctx, projectID)
	if err != nil {
		return nil, err
	}
	vals := map[string]map[string]bool{}
	for _, r := range res {
		for _, t := range r.Tags {
			if vals[t.Key] == nil {
				vals[t.Key] = map[string]bool{}
			}
			vals[t.Key][t.Value] = true
		}
	}
	out := make([]KeyValues, 0, len(vals))
	for k, vs := range vals {
		kv := KeyValues{Key: k, Values: make([]string, 0, len(vs))}
		for v := range vs {
			kv.Values = append(kv.Values, v)
		}
		slices.Sort(kv.Values)
		out = append(out, kv)
	}
	slices.SortFunc(out, func(a, b KeyValues) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// TagCondition is one entry of tags, tags_any, not_tags or not_tags_any:
// the resource has Key with one of Values (any value when Values is empty).
type TagCondition struct {
	Key    string
	Values []string
}

// TagMatch is one entry of matches; only the key resource_name exists.
type TagMatch struct {
	Key   string
	Value string
}

// TagQuery is a request of "Querying backup resources (policies) by tag".
// A nil list does not filter; an empty one is refused.
type TagQuery struct {
	Action     string // filter | count
	Tags       []TagCondition
	TagsAny    []TagCondition
	NotTags    []TagCondition
	NotTagsAny []TagCondition
	Matches    []TagMatch
	Limit      int // filter only: 1–1000, 0 = 1000
	Offset     int // filter only
}

// TaggedResult answers a TagQuery: the page of resources (filter only)
// and the number of all that match.
type TaggedResult struct {
	Resources  []TaggedView
	TotalCount int
}

// TaggedView is one resource of a TaggedResult. Item is the backup for
// csbs_backup (nil for policies).
type TaggedView struct {
	store.TaggedResource
	Item *store.Item
}

// QueryTagged filters the backups or policies of a project by tag and
// name, as "Querying Backup Resources by Tag" describes:
//   - tags: every condition holds (AND of keys, OR of each key's values);
//   - tags_any: at least one condition holds;
//   - not_tags: not every condition holds (the resource is left out when
//     it has all of them);
//   - not_tags_any: no condition holds;
//   - matches resource_name: an empty value matches the name exactly,
//     any other value is a case-insensitive substring of the name.
func (s *Service) QueryTagged(ctx context.Context, kind, projectID string, q TagQuery) (*TaggedResult, error) {
	tt, err := s.tagTarget(kind)
	if err != nil {
		return nil, err
	}
	if err := q.normalize(); err != nil {
		return nil, err
	}
	res, err := tt.list(ctx, projectID)
	if err != nil {
		return nil, err
	}
	var hits []store.TaggedResource
	for _, r := range res {
		if q.matches(r) {
			hits = append(hits, r)
		}
	}
	out := &TaggedResult{TotalCount: len(hits), Resources: []TaggedView{}}
	if q.Action == "count" {
		return out, nil
	}
	if q.Offset >= len(hits) {
		return out, nil
	}
	hits = hits[q.Offset:]
	if len(hits) > q.Limit {
		hits = hits[:q.Limit]
	}
	for _, r := range hits {
		v := TaggedView{TaggedResource: r}
		if kind == TagKindBackup {
			it, err := s.store.GetItem(ctx, projectID, r.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted since the list was read
			}
			if err != nil {
				return nil, err
			}
			v.Item, v.Tags = it, it.Tags
		}
		v.Tags = nonNilTags(v.Tags)
		out.Resources = append(out.Resources, v)
	}
	return out, nil
}

// normalize trims and checks q, and sets the default limit.
func (q *TagQuery) normalize() error {
	switch q.Action {
	case "filter":
		switch {
		case q.Limit == 0:
			q.Limit = maxQueryLimit
		case q.Limit < 1 || q.Limit > maxQueryLimit:
			return InvalidParam("limit", "%d is out of range; want 1 to %d", q.Limit, maxQueryLimit)
		}
		if q.Offset < 0 {
			return InvalidParam("offset", "%d is negative; want 0 or more", q.Offset)
		}
	case "count":
	case "":
		return InvalidParam("action", "missing; want filter or count")
	default:
		return InvalidParam("action", "%q: want filter or count", truncateRunes(q.Action, 20))
	}
	for _, l := range []struct {
		field string
		conds []TagCondition
	}{{"tags", q.Tags}, {"tags_any", q.TagsAny}, {"not_tags", q.NotTags}, {"not_tags_any", q.NotTagsAny}} {
		if err := normalizeConditions(l.field, l.conds); err != nil {
			return err
		}
	}
	if q.Matches != nil {
		if len(q.Matches) == 0 {
			return InvalidParam("matches", "must not be an empty list when given")
		}
		seen := map[string]bool{}
		for i := range q.Matches {
			m := &q.Matches[i]
			m.Key = strings.TrimSpace(m.Key)
			if m.Key != "resource_name" {
				return InvalidParam("matches", "key %q: only resource_name can be matched", truncateRunes(m.Key, 40))
			}
			if seen[m.Key] {
				return InvalidParam("matches", "key %q appears more than once", m.Key)
			}
			seen[m.Key] = true
			if n := len([]rune(m.Value)); n > maxQueryValueLen {
				return InvalidParam("matches", "value of %s has %d characters; at most %d are allowed", m.Key, n, maxQueryValueLen)
			}
		}
	}
	return nil
}

func normalizeConditions(field string, conds []TagCondition) error {
	if conds == nil {
		return nil
	}
	if len(conds) == 0 {
		return InvalidParam(field, "must not be an empty list when given")
	}
	if len(conds) > maxTags {
		return InvalidParam(field, "has %d keys; at most %d are allowed", len(conds), maxTags)
	}
	keys := map[string]bool{}
	for i := range conds {
		c := &conds[i]
		c.Key = strings.TrimSpace(c.Key)
		switch n := len([]rune(c.Key)); {
		case n == 0:
			return InvalidParam(field, "entry %d: key must not be empty", i+1)
		case n > maxQueryKeyLen:
			return InvalidParam(field, "key of %d characters; at most %d are allowed", n, maxQueryKeyLen)
		case keys[c.Key]:
			return InvalidParam(field, "key %q appears more than once", truncateRunes(c.Key, 40))
		}
		keys[c.Key] = true
		if len(c.Values) > maxQueryValues {
			return InvalidParam(field, "key %q has %d values; at most %d are allowed", truncateRunes(c.Key, 40), len(c.Values), maxQueryValues)
		}
		vals := map[string]bool{}
		for j, v := range c.Values {
			v = strings.TrimSpace(v)
			if n := len([]rune(v)); n > maxQueryValueLen {
				return InvalidParam(field, "a value of key %q has %d characters; at most %d are allowed", truncateRunes(c.Key, 40), n, maxQueryValueLen)
			}
			if vals[v] {
				return InvalidParam(field, "value %q of key %q appears more than once", truncateRunes(v, 40), truncateRunes(c.Key, 40))
			}
			vals[v] = true
			c.Values[j] = v
		}
	}
	return nil
}

// holds reports whether tags satisfy c.
func (c TagCondition) holds(tags []store.Tag) bool {
	for _, t := range tags {
		if t.Key == c.Key && (len(c.Values) == 0 || slices.Contains(c.Values, t.Value)) {
			return true
		}
	}
	return false
}

func (q *TagQuery) matches(r store.TaggedResource) bool {
	all := func(cs []TagCondition) bool {
		for _, c := range cs {
			if !c.holds(r.Tags) {
				return false
			}
		}
		return true
	}
	anyOf := func(cs []TagCondition) bool {
		return slices.ContainsFunc(cs, func(c TagCondition) bool { return c.holds(r.Tags) })
	}
	switch {
	case q.Tags != nil && !all(q.Tags),
		q.TagsAny != nil && !anyOf(q.TagsAny),
		q.NotTags != nil && all(q.NotTags),
		q.NotTagsAny != nil && anyOf(q.NotTagsAny):
		return false
	}
	for _, m := range q.Matches {
		if m.Value == "" {
			if r.Name != "" {
				return false
			}
		} else if !strings.Contains(strings.ToLower(r.Name), strings.ToLower(m.Value)) {
			return false
		}
	}
	return true
}

// truncateRunes shortens s to n runes for messages.
func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
