package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/csbs/csbs/internal/repository/blob"
)

// maxSnapshotSize bounds what a snapshot may decompress to, so that a
// snapshot file cannot exhaust memory. JSON costs about 67 bytes per chunk:
// 4 GiB holds some 64 million chunks, 60 TiB of disks in 1 MiB chunks.
// encodeSnapshot refuses a larger snapshot, so that none is ever written
// that could not be read back. A variable for the tests.
var maxSnapshotSize int64 = 4 << 30

var (
	snapEncOnce sync.Once
	snapEnc     *zstd.Encoder
	snapDec     *zstd.Decoder
)

func snapshotCodec() (*zstd.Encoder, *zstd.Decoder) {
	snapEncOnce.Do(func() {
		var err error
		snapEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err)
		}
		snapDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(uint64(maxSnapshotSize)), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			panic(err)
		}
	})
	return snapEnc, snapDec
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// encodeSnapshot returns the sealed snapshot file: seal(zstd(JSON)).
func encodeSnapshot(k *keys, id string, s *Snapshot) ([]byte, error) {
	js, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if int64(len(js)) > maxSnapshotSize {
		return nil, fmt.Errorf("the snapshot's manifest is %d bytes, more than the %d a snapshot may hold (about %d chunks): back up fewer or smaller disks per server",
			len(js), maxSnapshotSize, maxSnapshotSize/67)
	}
	enc, _ := snapshotCodec()
	return seal(k.aead, enc.EncodeAll(js, nil), aadSnapshot(id)), nil
}

// decodeSnapshot parses a decrypted snapshot file: zstd-compressed JSON.
func decodeSnapshot(b []byte) (*Snapshot, error) {
	_, dec := snapshotCodec()
	js, err := dec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("snapshot: decompress: %w", err)
	}
	return decodeSnapshotJSON(js)
}

// LoadSnapshot reads snapshot id. It returns an error matching ErrNotFound
// if there is no such snapshot.
func (r *Repository) LoadSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	h := blob.Handle{Type: blob.SnapshotFile, Name: id}
	if !h.Valid() {
		return nil, fmt.Errorf("snapshot %q: %w", id, ErrNotFound)
	}
	b, err := readAll(ctx, r.be, h, maxSnapshotSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	plain, err := open(r.keys.aead, nil, b, aadSnapshot(id))
	if err != nil {
		return nil, damageError{fmt.Errorf("snapshot %s: %w", id, err)}
	}
	s, err := decodeSnapshot(plain)
	if err != nil {
		return nil, damageError{fmt.Errorf("snapshot %s: %w", id, err)}
	}
	s.ID = id
	return s, nil
}

// Snapshots returns every snapshot, oldest first. A snapshot that cannot be
// read fails the whole call (Verify names damaged snapshots).
func (r *Repository) Snapshots(ctx context.Context) ([]*Snapshot, error) {
	ids, err := r.snapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	snaps := make([]*Snapshot, 0, len(ids))
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, s)
	}
	sort.Slice(snaps, func(i, j int) bool {
		if !snaps[i].Time.Equal(snaps[j].Time) {
			return snaps[i].Time.Before(snaps[j].Time)
		}
		return snaps[i].ID < snaps[j].ID
	})
	return snaps, nil
}

func (r *Repository) snapshotIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.be.List(ctx, blob.SnapshotFile, func(fi blob.FileInfo) error {
		ids = append(ids, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return ids, nil
}

// DeleteSnapshot removes snapshot id; its chunks stay until GC. A missing
// snapshot is not an error.
func (r *Repository) DeleteSnapshot(ctx context.Context, id string) error {
	h := blob.Handle{Type: blob.SnapshotFile, Name: id}
	if !h.Valid() {
		return nil
	}
	err := r.be.Remove(ctx, h)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return nil
}
