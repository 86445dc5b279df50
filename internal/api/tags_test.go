package api

import (
	"testing"

	"github.com/csbs/csbs/internal/service"
)

func TestQueryBody(t *testing.T) {
	for _, tc := range []struct {
		body          string
		ok            bool
		limit, offset int
	}{
		{`{"action": "filter"}`, true, 1000, 0},
		{`{"action": "filter", "limit": "100", "offset": "100"}`, true, 100, 100},
		{`{"action": "filter", "limit": 7, "offset": 3}`, true, 7, 3},
		{`{"action": "filter", "limit": " 5 "}`, true, 5, 0},
		{`{"action": "count", "limit": "ten"}`, true, 0, 0}, // not read for count
		{`{"action": "filter", "limit": "0"}`, false, 0, 0},
		{`{"action": "filter", "limit": "ten"}`, false, 0, 0},
		{`{"action": "filter", "limit": 1.5}`, false, 0, 0},
		{`{"action": "filter", "tags": [{"key": "k"}]}`, false, 0, 0},
		{`{"action": "filter", "tags": [{"values": []}]}`, false, 0, 0},
		{`{"action": "filter", "matches": [{"key": "resource_name"}]}`, false, 0, 0},
	} {
		var b queryBody
		if err := decodeBytes([]byte(tc.body), &b); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		q, err := b.request()
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.body, err, tc.ok)
			continue
		}
		if err == nil && (q.Limit != tc.limit || q.Offset != tc.offset) {
			t.Errorf("%s: limit %d offset %d, want %d and %d", tc.body, q.Limit, q.Offset, tc.limit, tc.offset)
		}
	}
}

// FuzzDecodeTagQuery feeds arbitrary bodies to the decoders of the tag
// operations: they must refuse or accept, never panic.
func FuzzDecodeTagQuery(f *testing.F) {
	for _, s := range []string{
		`{"action": "filter", "limit": "100", "offset": "0", "tags": [{"key": "k", "values": ["v"]}], "matches": [{"key": "resource_name", "value": "x"}]}`,
		`{"action": "count", "not_tags_any": [{"key": "k", "values": []}]}`,
		`{"action": "create", "tags": [{"key": "k", "value": "v"}]}`, `{"tag": {"key": "k", "value": "v"}}`,
		`{"limit": null}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	refusal := func(t *testing.T, err error) {
		if err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("error is not a refusal: %v", err)
			}
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var q queryBody
		if err := decodeBytes(body, &q); err == nil {
			_, err = q.request()
			refusal(t, err)
		} else {
			refusal(t, err)
		}
		var a tagsActionBody
		refusal(t, decodeBytes(body, &a))
		var one addTagBody
		if err := decodeBytes(body, &one); err == nil && one.Tag != nil {
			_, err = tagsFromWire("tag", &[]wireTag{*one.Tag})
			refusal(t, err)
		}
	})
}
