package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// KeptClones is what GET and DELETE /kept_clones answer: the clones the
// local compute driver keeps on the answering node's disks (listed, or
// just dropped), with their totals. Clones holds each as the API sent it;
// Raw is the whole answer.
type KeptClones struct {
	Node           string            `json:"node"`
	Count          int               `json:"count"`
	ApparentBytes  int64             `json:"apparent_bytes"`
	ExclusiveBytes int64             `json:"exclusive_bytes"`
	Clones         []json.RawMessage `json:"kept_clones"`

	Raw json.RawMessage `json:"-"`
}

// KeptFilter selects kept clones; empty fields select all of the
// project's (of every project with AllTenants).
type KeptFilter struct {
	ServerID, VolumeID string
	AllTenants         bool
}

func (f KeptFilter) query() url.Values {
	q := url.Values{}
	if f.ServerID != "" {
		q.Set("server_id", f.ServerID)
	}
	if f.VolumeID != "" {
		q.Set("volume_id", f.VolumeID)
	}
	if f.AllTenants {
		q.Set("all_tenants", "true")
	}
	return q
}

// KeptClones lists the kept clones f selects (the admin role is needed
// when the service authenticates).
func (c *Client) KeptClones(ctx context.Context, f KeptFilter) (*KeptClones, error) {
	return c.keptClones(ctx, http.MethodGet, f)
}

// DropKeptClones drops the kept clones f selects and returns them as they
// were: their ExclusiveBytes were freed.
func (c *Client) DropKeptClones(ctx context.Context, f KeptFilter) (*KeptClones, error) {
	return c.keptClones(ctx, http.MethodDelete, f)
}

func (c *Client) keptClones(ctx context.Context, method string, f KeptFilter) (*KeptClones, error) {
	var raw json.RawMessage
	if err := c.Do(ctx, method, "/kept_clones", f.query(), nil, &raw); err != nil {
		return nil, err
	}
	k := &KeptClones{Raw: raw}
	if err := json.Unmarshal(raw, k); err != nil {
		return nil, err
	}
	return k, nil
}
