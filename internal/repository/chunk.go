package repository

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// slot is what one worker needs to compress a chunk: encoders and an
// output buffer. The repository has Workers slots, shared by all backups,
// which bounds the memory compression takes.
type slot struct {
	enc encoder
	out []byte // a compressed chunk
}

func newSlot(chunkSize int) *slot {
	return &slot{out: make([]byte, maxEncodedLen(chunkSize))}
}

const (
	sampleLen   = 16 << 10
	sampleCount = 3
)

// compressible guesses from three samples whether compressing data with c
// pays. Random data costs three small encodes instead of a full one.
func (s *slot) compressible(c Compression, data []byte) bool {
	if len(data) < 8*sampleLen {
		return true
	}
	in, out := 0, 0
	for i := range sampleCount {
		off := (len(data) - sampleLen) * i / (sampleCount - 1) // start, middle, end
		smp := data[off : off+sampleLen]
		enc, _ := s.enc.encode(c, s.out, smp)
		in += len(smp)
		out += len(enc)
	}
	return out < in*15/16
}

// compress returns what to store of a chunk and its flags: data compressed
// with c (in s.out, valid until the next call) when that shrinks it, else
// data itself with flagRaw.
func (s *slot) compress(c Compression, data []byte) ([]byte, uint8) {
	// S2 gives up on incompressible data by itself, at ~19 GB/s: sampling
	// first would only cost compressible chunks more. zstd's fastest level
	// spends as long on random data as on text, so it is sampled first.
	if c == CompressS2 || c == CompressZstd && s.compressible(c, data) {
		enc, flags := s.enc.encode(c, s.out, data)
		// The output must be in s.out (a codec that outgrew it allocated).
		if len(enc) > 0 && len(enc) < len(data) && &enc[0] == &s.out[0] {
			return enc, flags
		}
	}
	return data, flagRaw
}

// hasher computes chunk ids.
type hasher struct{ h *blake3.Hasher }

// newHasher returns a hasher of the repository-wide dedup domain ("").
func newHasher(k *keys) hasher { return newDomainHasher(k, "") }

// newDomainHasher returns a hasher of chunk ids in a dedup domain: the
// same data gets another id in each domain, so deduplication (and what it
// shows: whether a chunk was already stored) stays inside it. The domain
// "" is the repository-wide one of repositories made before domains.
func newDomainHasher(k *keys, domain string) hasher {
	key := k.idKey
	if domain != "" {
		blake3.DeriveKey("csbs repository v2 dedup domain "+domain, k.idKey[:], key[:])
	}
	h, err := blake3.NewKeyed(key[:])
	if err != nil {
		panic(err) // the key is always 32 bytes
	}
	return hasher{h}
}

func (h hasher) sum(data []byte) ChunkID {
	h.h.Reset()
	_, _ = h.h.Write(data)
	var id ChunkID
	h.h.Sum(id[:0])
	return id
}

// errChunkID means a chunk decrypted fine but hashes to another id: it was
// stored under the wrong id (a bug) or the index was tampered with.
var errChunkID = errors.New("content does not match its id")

// openChunk authenticates and decodes the blob of chunk id and returns the
// plaintext, which lies at the start of out (blob is used as scratch). It
// checks the plaintext hashes to id, so no unverified byte is ever returned.
func openChunk(k *keys, dec *zstd.Decoder, h hasher, id ChunkID, loc location, blob, out []byte) ([]byte, error) {
	if int(loc.rawLen) > len(out) {
		return nil, fmt.Errorf("chunk of %d bytes is larger than the repository's chunks", loc.rawLen)
	}
	dst := out[:0]
	if loc.flags != flagRaw {
		dst = blob[nonceLen:nonceLen] // decrypt in place, decompress to out
	}
	plain, err := open(k.aead, dst, blob, id[:])
	if err != nil {
		return nil, err
	}
	if loc.flags != flagRaw {
		if plain, err = decompress(dec, loc.flags, plain, out, int(loc.rawLen)); err != nil {
			return nil, err
		}
	}
	if len(plain) != int(loc.rawLen) {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(plain), loc.rawLen)
	}
	if h.sum(plain) != id {
		return nil, errChunkID
	}
	return plain, nil
}

// isZero reports whether b is all zero bytes; zero must be at least as long.
func isZero(b, zero []byte) bool { return bytes.Equal(b, zero[:len(b)]) }
