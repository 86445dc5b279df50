package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Disk is a disk of a backup read through the API (the extension GET
// …/checkpoint_items/{id}/volumes/{volume_id}/data with Range requests):
// an io.ReaderAt that csbs mount and csbs export serve. Each ReadAt is one
// request; nothing is cached here.
type Disk struct {
	c    *Client
	url  string
	size int64
	ctx  context.Context
}

// OpenDisk opens disk volumeID of backup itemID. A refusal (no such backup
// or disk, a backup not available) is an *APIError.
func (c *Client) OpenDisk(ctx context.Context, itemID, volumeID string) (*Disk, error) {
	d := &Disk{c: c, ctx: context.WithoutCancel(ctx),
		url: c.Endpoint + "/checkpoint_items/" + url.PathEscape(itemID) + "/volumes/" + url.PathEscape(volumeID) + "/data"}
	// One byte tells the size (Content-Range: bytes 0-0/SIZE).
	resp, err := d.get(ctx, 0, 1)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	cr := resp.Header.Get("Content-Range")
	_, total, ok := strings.Cut(cr, "/")
	if !ok {
		return nil, fmt.Errorf("disk %s of backup %s: no size in the answer (Content-Range %q)", volumeID, itemID, cr)
	}
	if d.size, err = strconv.ParseInt(total, 10, 64); err != nil {
		return nil, fmt.Errorf("disk %s of backup %s: size %q: %w", volumeID, itemID, total, err)
	}
	return d, nil
}

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 { return d.size }

// ReadAt reads len(p) bytes at off; past the end it returns io.EOF with
// the bytes that were there.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size || len(p) == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), d.size-off)
	resp, err := d.get(d.ctx, off, n)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	k, err := io.ReadFull(resp.Body, p[:n])
	if err != nil {
		return k, fmt.Errorf("read disk at %d: %w", off, err)
	}
	if n < int64(len(p)) {
		return k, io.EOF
	}
	return k, nil
}

// get asks for n bytes at off; the answer is 206, or 416 for an empty
// disk (its size is in Content-Range as well).
func (d *Disk) get(ctx context.Context, off, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	if d.c.Token != "" {
		req.Header.Set("X-Auth-Token", d.c.Token)
	}
	resp, err := d.c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", d.url, err)
	}
	if resp.StatusCode == http.StatusPartialContent || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off == 0 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return nil, apiError(resp, data)
}
