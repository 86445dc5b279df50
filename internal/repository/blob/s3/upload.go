package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/minio/minio-go/v7"
)

// upload stores size bytes of src under key: with one PUT up to the part
// size, else as a multipart upload of parts sent Config.Threads at a time.
//
// Every request carries the SHA-256 of its body, signed, so the store
// rejects a body damaged in transit (rather than the signed 64 KiB chunks
// minio-go streams on plain HTTP, which cost more CPU). The hash is
// computed from src before sending, which reads each part twice (from the
// page cache for a pack just written). A request's body is a fresh
// SectionReader of src, so minio-go can rewind and retry it; this is why
// multipart uploads are done here rather than by minio-go's PutObject,
// whose checksumming reader cannot be rewound and so is never retried.
func (b *Backend) upload(ctx context.Context, key string, src io.ReaderAt, size int64) error {
	if size <= int64(b.partSize) {
		sum, err := sha256Hex(io.NewSectionReader(src, 0, size))
		if err != nil {
			return err
		}
		_, err = b.core.PutObject(ctx, b.bucket, key, io.NewSectionReader(src, 0, size), size, "", sum,
			minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
		return err
	}
	id, err := b.core.NewMultipartUpload(ctx, b.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	parts, err := b.uploadParts(ctx, key, id, src, size)
	if err == nil {
		_, err = b.core.CompleteMultipartUpload(ctx, b.bucket, key, id, parts, minio.PutObjectOptions{})
		if err != nil && minio.ToErrorResponse(err).Code == "NoSuchUpload" {
			// A retried complete whose first attempt succeeded (its
			// answer lost) finds the upload gone: the object is there.
			if info, serr := b.client.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{}); serr == nil && info.Size == size {
				err = nil
			}
		}
	}
	if err != nil {
		// Free the parts now; RemoveStaleTemp catches what this misses.
		if aerr := b.core.AbortMultipartUpload(context.WithoutCancel(ctx), b.bucket, key, id); aerr != nil && minio.ToErrorResponse(aerr).Code != "NoSuchUpload" {
			err = fmt.Errorf("%w (and aborting the upload: %v)", err, aerr)
		}
		return err
	}
	return nil
}

// uploadParts sends the parts of src, Config.Threads at a time, and
// returns them in order for the complete request. The first failure stops
// the others.
func (b *Backend) uploadParts(ctx context.Context, key, id string, src io.ReaderAt, size int64) ([]minio.CompletePart, error) {
	psize := int64(b.partSize)
	n := int((size + psize - 1) / psize)
	parts := make([]minio.CompletePart, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range min(int(b.threads), n) {
		wg.Go(func() {
			for i := range next {
				off := int64(i) * psize
				length := min(psize, size-off)
				err := func() error {
					sum, err := sha256Hex(io.NewSectionReader(src, off, length))
					if err != nil {
						return err
					}
					p, err := b.core.PutObjectPart(ctx, b.bucket, key, id, i+1, io.NewSectionReader(src, off, length), length,
						minio.PutObjectPartOptions{Sha256Hex: sum, DisableContentSha256: true})
					if err != nil {
						return fmt.Errorf("part %d of %d: %w", i+1, n, err)
					}
					parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: p.ETag}
					return nil
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err() // the caller's context ended
	}
	return parts, firstErr
}

func sha256Hex(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
