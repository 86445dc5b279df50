package api

import (
	"net/http"
	"sync"
	"time"
)

// Clients poll backups: the Terraform provider reads GET checkpoint_items/{id}
// until a backup is available, dashboards reload list pages. responseCache
// keeps the bytes of those answers so that a poll costs a map lookup instead
// of a query, a JSON decode and a JSON encode.
//
// An entry is valid while the store's write generation is the one it was
// made at (any write by this process clears the whole cache at once) and for
// at most responseTTL, which bounds how stale an answer can be when other
// processes write to a shared database.
type responseCache struct {
	version func() uint64 // the store's write generation

	mu      sync.Mutex
	gen     uint64
	entries map[string]cachedResponse
}

type cachedResponse struct {
	expires time.Time
	body    []byte
}

const (
	responseTTL        = time.Second
	maxCachedResponses = 4096
)

func newResponseCache(version func() uint64) *responseCache {
	return &responseCache{version: version, entries: map[string]cachedResponse{}}
}

// key names a request's answer: the URL the client asked for, with what
// next links are built from (host and scheme).
func cacheKey(r *http.Request) string {
	scheme := r.Header.Get("X-Forwarded-Proto")
	if r.TLS != nil {
		scheme += "+tls"
	}
	return scheme + " " + r.Host + " " + r.URL.RequestURI()
}

// get returns the cached body of a 200 answer to r, if valid.
func (c *responseCache) get(r *http.Request) ([]byte, bool) {
	now := time.Now()
	v := c.version()
	c.mu.Lock()
	defer c.mu.Unlock()
	if v != c.gen {
		c.gen, c.entries = v, map[string]cachedResponse{}
		return nil, false
	}
	e, ok := c.entries[cacheKey(r)]
	if !ok || now.After(e.expires) {
		return nil, false
	}
	return e.body, true
}

// put keeps body as the answer to r, made while the store was at
// generation gen (read before the answer was computed, so a write during
// the computation makes the entry invalid rather than stale).
func (c *responseCache) put(r *http.Request, gen uint64, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.version() != gen {
		return
	}
	if len(c.entries) >= maxCachedResponses {
		c.entries = map[string]cachedResponse{}
	}
	c.entries[cacheKey(r)] = cachedResponse{expires: time.Now().Add(responseTTL), body: body}
}

// cachedJSON answers r from the cache, or with compute's value (as 200
// JSON), which it caches. compute's refusals are not cached.
func (s *Server) cachedJSON(w http.ResponseWriter, r *http.Request, compute func() (any, error)) error {
	if body, ok := s.cache.get(r); ok {
		return writeRaw(w, http.StatusOK, body)
	}
	gen := s.cache.version()
	v, err := compute()
	if err != nil {
		return err
	}
	body, err := encodeJSON(v)
	if err != nil {
		return err
	}
	s.cache.put(r, gen, body)
	return writeRaw(w, http.StatusOK, body)
}
