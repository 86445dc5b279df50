package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/minio/minio-go/v7"
)

// upload stores size bytes of src under key: with one PUT up to the part
// size, else as a multipart upload.
//
// Each request's body (the object, or one part) is read from src once into
// one of the backend's Config.Threads part buffers, which bounds both the
// memory of all uploads together and the requests in flight. Every request
// carries the SHA-256 of its body, signed, so the store refuses a body
// damaged in transit (rather than the signed 64 KiB chunks minio-go streams
// on plain HTTP, which cost more CPU). The body is a bytes.Reader, so
// minio-go rewinds and retries it; this is why multipart uploads are done
// here rather than by minio-go's PutObject, whose checksumming reader
// cannot be rewound and so is never retried.
func (b *Backend) upload(ctx context.Context, key string, src io.ReaderAt, size int64) error {
	if size <= b.partSize {
		return b.withPart(ctx, src, 0, size, func(body []byte, sum string) error {
			_, err := b.core.PutObject(ctx, b.bucket, key, bytes.NewReader(body), size, "", sum,
				minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
			return err
		})
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

// withPart reads n bytes of src at off into a part buffer (waiting for a
// free one) and calls fn with them and their SHA-256 in hex.
func (b *Backend) withPart(ctx context.Context, src io.ReaderAt, off, n int64, fn func(body []byte, sum string) error) error {
	var buf []byte
	select {
	case buf = <-b.parts:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { b.parts <- buf }()
	if buf == nil {
		buf = make([]byte, b.partSize)
	}
	body := buf[:n]
	if k, err := src.ReadAt(body, off); k < len(body) {
		return fmt.Errorf("read the data to upload: %w", err)
	}
	sum := sha256.Sum256(body)
	return fn(body, hex.EncodeToString(sum[:]))
}

// uploadParts sends the parts of src, as many at a time as there are part
// buffers free, and returns them in order for the complete request. The
// first failure stops the others.
func (b *Backend) uploadParts(ctx context.Context, key, id string, src io.ReaderAt, size int64) ([]minio.CompletePart, error) {
	n := int((size + b.partSize - 1) / b.partSize)
	parts := make([]minio.CompletePart, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := range min(cap(b.parts), n) {
		wg.Go(func() {
			for j := i; j < n && ctx.Err() == nil; j += cap(b.parts) {
				off := int64(j) * b.partSize
				length := min(b.partSize, size-off)
				err := b.withPart(ctx, src, off, length, func(body []byte, sum string) error {
					p, err := b.core.PutObjectPart(ctx, b.bucket, key, id, j+1, bytes.NewReader(body), length,
						minio.PutObjectPartOptions{Sha256Hex: sum, DisableContentSha256: true})
					if err != nil {
						return fmt.Errorf("part %d of %d: %w", j+1, n, err)
					}
					parts[j] = minio.CompletePart{PartNumber: j + 1, ETag: p.ETag}
					return nil
				})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err() // the caller's context ended
	}
	return parts, firstErr
}
