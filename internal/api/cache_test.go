package api

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestResponseCache(t *testing.T) {
	cases := []struct {
		name string
		// between put and get: what happens to the store's generation and
		// the clock, and to the request.
		writeDuringCompute bool
		writeAfterPut      bool
		wait               time.Duration
		otherURL           bool
		otherHost          bool
		want               bool
	}{
		{name: "hit", want: true},
		{name: "a write after the answer invalidates it", writeAfterPut: true},
		{name: "a write while computing keeps it out", writeDuringCompute: true},
		{name: "expires", wait: responseTTL + 50*time.Millisecond},
		{name: "another query is another answer", otherURL: true},
		{name: "another host is another answer (next links)", otherHost: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gen uint64 = 7
			c := newResponseCache(func() uint64 { return gen })
			r := httptest.NewRequest("GET", "http://h1/v1/p/checkpoint_items?limit=5", nil)
			if _, ok := c.get(r); ok {
				t.Fatal("hit in an empty cache")
			}
			g := gen
			if tc.writeDuringCompute {
				gen++
			}
			c.put(r, g, []byte("body"))
			if tc.writeAfterPut {
				gen++
			}
			time.Sleep(tc.wait)
			q := r
			if tc.otherURL {
				q = httptest.NewRequest("GET", "http://h1/v1/p/checkpoint_items?limit=6", nil)
			}
			if tc.otherHost {
				q = httptest.NewRequest("GET", "http://h2/v1/p/checkpoint_items?limit=5", nil)
			}
			body, ok := c.get(q)
			if ok != tc.want {
				t.Fatalf("hit %v, want %v", ok, tc.want)
			}
			if ok && string(body) != "body" {
				t.Fatalf("body %q", body)
			}
		})
	}
}
