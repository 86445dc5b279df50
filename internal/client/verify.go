package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// VerifyResult is what POST /verifications answers: the run and the
// verification of each backup it read. Raw is the object as sent.
type VerifyResult struct {
	Verified    int     `json:"verified"`
	Damaged     int     `json:"damaged"`
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	Quarantined int     `json:"quarantined"`
	Results     []json.RawMessage

	Raw json.RawMessage `json:"-"`
}

// Verify verifies backups now (the admin role is needed when the service
// authenticates): itemIDs, or every backup not verified within maxAge
// ("" every backup); allTenants covers every project. It waits for the
// answer however long the verification takes (unless ctx ends).
func (c *Client) Verify(ctx context.Context, itemIDs []string, maxAge string, allTenants bool) (*VerifyResult, error) {
	v := map[string]any{}
	if len(itemIDs) > 0 {
		v["checkpoint_item_ids"] = itemIDs
	}
	if maxAge != "" {
		v["max_age"] = maxAge
	}
	var q url.Values
	if allTenants {
		q = url.Values{"all_tenants": {"true"}}
	}
	var out struct {
		V json.RawMessage `json:"verification"`
	}
	// A verification answers when it has read the data: it takes as long
	// as that does, so the default client's timeout does not apply (ctx
	// ends it).
	cl := *c
	if cl.HTTP == nil {
		cl.HTTP = &http.Client{}
	}
	if err := cl.Do(ctx, http.MethodPost, "/verifications", q, map[string]any{"verification": v}, &out); err != nil {
		return nil, err
	}
	r := &VerifyResult{Raw: out.V}
	var res struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(out.V, r); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(out.V, &res); err != nil {
		return nil, err
	}
	r.Results = res.Results
	return r, nil
}

// Verifications lists the last verification of each backup (only the
// damaged ones when damagedOnly), as the API sent them.
func (c *Client) Verifications(ctx context.Context, damagedOnly, allTenants bool) ([]json.RawMessage, error) {
	q := url.Values{}
	if damagedOnly {
		q.Set("damaged", "true")
	}
	if allTenants {
		q.Set("all_tenants", "true")
	}
	var out struct {
		V []json.RawMessage `json:"verifications"`
	}
	if err := c.Do(ctx, http.MethodGet, "/verifications", q, nil, &out); err != nil {
		return nil, err
	}
	return out.V, nil
}
