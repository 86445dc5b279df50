package service

import (
	"testing"

	"github.com/csbs/csbs/internal/store"
)

func TestTagQueryMatches(t *testing.T) {
	res := []store.TaggedResource{
		{ID: "a", Name: "Alpha-Web", Tags: []store.Tag{{Key: "env", Value: "prod"}, {Key: "tier", Value: "web"}}},
		{ID: "b", Name: "beta", Tags: []store.Tag{{Key: "team", Value: "web"}}},
		{ID: "c", Name: "gamma-web", Tags: []store.Tag{{Key: "env", Value: "dev"}, {Key: "team", Value: "db"}}},
		{ID: "d", Name: "", Tags: nil},
	}
	c := func(k string, vs ...string) TagCondition { return TagCondition{Key: k, Values: vs} }
	for _, tc := range []struct {
		name string
		q    TagQuery
		want string
	}{
		{"no condition", TagQuery{}, "abcd"},
		{"tags", TagQuery{Tags: []TagCondition{c("env", "prod", "dev"), c("team")}}, "c"},
		{"tags_any", TagQuery{TagsAny: []TagCondition{c("tier"), c("team", "db")}}, "ac"},
		{"not_tags", TagQuery{NotTags: []TagCondition{c("env"), c("team")}}, "abd"},
		{"not_tags_any", TagQuery{NotTagsAny: []TagCondition{c("env"), c("team", "web")}}, "d"},
		{"fuzzy name", TagQuery{Matches: []TagMatch{{"resource_name", "WEB"}}}, "ac"},
		{"exact empty name", TagQuery{Matches: []TagMatch{{"resource_name", ""}}}, "d"},
		{"all at once", TagQuery{TagsAny: []TagCondition{c("env"), c("team")}, NotTags: []TagCondition{c("tier")},
			Matches: []TagMatch{{"resource_name", "a"}}}, "bc"},
	} {
		got := ""
		for _, r := range res {
			if tc.q.matches(r) {
				got += r.ID
			}
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTagQueryNormalize(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    TagQuery
		ok   bool
	}{
		{"filter", TagQuery{Action: "filter"}, true},
		{"count", TagQuery{Action: "count", Limit: 5000}, true},
		{"no action", TagQuery{}, false},
		{"limit 1001", TagQuery{Action: "filter", Limit: 1001}, false},
		{"negative offset", TagQuery{Action: "filter", Offset: -1}, false},
		{"empty list", TagQuery{Action: "filter", Tags: []TagCondition{}}, false},
		{"repeated key after trim", TagQuery{Action: "filter", TagsAny: []TagCondition{{Key: "k"}, {Key: " k "}}}, false},
		{"repeated value after trim", TagQuery{Action: "filter", NotTags: []TagCondition{{Key: "k", Values: []string{"v", " v"}}}}, false},
		{"other match key", TagQuery{Action: "filter", Matches: []TagMatch{{"name", "x"}}}, false},
	} {
		err := tc.q.normalize()
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil {
			if e, ok := AsError(err); !ok || e.Code != CodeInvalidParam {
				t.Errorf("%s: err = %v, want a CSBS.9001 refusal", tc.name, err)
			}
		}
	}
}

func TestSetTags(t *testing.T) {
	cur := []store.Tag{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}
	got, err := setTags(cur, []store.Tag{{Key: "b", Value: "3"}, {Key: "c", Value: "4"}})
	if err != nil || len(got) != 3 || got[1].Value != "3" || got[2].Key != "c" || cur[1].Value != "2" {
		t.Errorf("setTags = %v, %v (cur now %v)", got, err, cur)
	}
	var ten []store.Tag
	for i := range 10 {
		ten = append(ten, store.Tag{Key: string(rune('a' + i))})
	}
	if _, err := setTags(ten, []store.Tag{{Key: "z"}}); err == nil {
		t.Error("setTags past 10 tags succeeded")
	} else if e, _ := AsError(err); e == nil || e.Code != CodeTagLimit {
		t.Errorf("setTags past 10: %v, want CSBS.7000", err)
	}
	if _, err := setTags(ten, []store.Tag{{Key: "a", Value: "x"}}); err != nil {
		t.Errorf("overwriting within 10 tags: %v", err)
	}
}
