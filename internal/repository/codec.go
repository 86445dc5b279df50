package repository

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression names how new chunks are compressed (Options.Compression).
// Each stored chunk records its codec in its pack's index, so a repository
// may hold chunks of every codec and every program reads them all: the
// setting can change at any time, and processes sharing a repository may
// differ.
type Compression string

const (
	// CompressAuto (the default) is S2 for a volume's first backup and
	// zstd for a backup with a parent. A first backup stores everything,
	// and on a few cores compression bounds its time; a later one stores
	// little (its time is in reading and committing), and what it stores
	// accumulates backup after backup, so it is compressed harder.
	CompressAuto Compression = "auto"
	// CompressS2 is S2, a byte-oriented LZ77 codec without entropy
	// coding. On log text it compresses 2.5x faster than zstd's fastest
	// level, to 30% of the size instead of 20% (bench/README.md).
	CompressS2 Compression = "s2"
	// CompressZstd is zstd at its fastest level.
	CompressZstd Compression = "zstd"
	// CompressNone stores chunks uncompressed.
	CompressNone Compression = "none"
)

func (c Compression) check() error {
	switch c {
	case CompressAuto, CompressS2, CompressZstd, CompressNone:
		return nil
	}
	return fmt.Errorf("compression %q: want %s, %s, %s or %s", string(c), CompressAuto, CompressS2, CompressZstd, CompressNone)
}

// forVolume is the codec of the new chunks of a volume backup, which has
// a parent or not.
func (c Compression) forVolume(hasParent bool) Compression {
	if c != CompressAuto {
		return c
	}
	if hasParent {
		return CompressZstd
	}
	return CompressS2
}

// encoder compresses chunks. It is not safe for concurrent use: each
// compression slot has its own.
type encoder struct {
	zstd *zstd.Encoder // made on first use
}

// maxEncodedLen is the most bytes any codec may write for n bytes of input
// (zstd's bound; S2's is smaller).
func maxEncodedLen(n int) int { return n + n/64 + 4096 }

// encode compresses src with codec c (not CompressAuto) into dst, which
// must hold maxEncodedLen(len(src)) bytes, and returns the result (in dst)
// and its flag. flagRaw means c does not compress (CompressNone).
func (e *encoder) encode(c Compression, dst, src []byte) ([]byte, uint8) {
	switch c {
	case CompressZstd:
		if e.zstd == nil {
			z, err := zstd.NewWriter(nil,
				zstd.WithEncoderLevel(zstd.SpeedFastest),
				zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderCRC(false)) // GCM authenticates
			if err != nil {
				panic(err) // only for invalid options
			}
			e.zstd = z
		}
		return e.zstd.EncodeAll(src, dst[:0]), flagZstd
	case CompressS2:
		return s2.Encode(dst, src), flagS2
	}
	return nil, flagRaw
}

// decompress decodes src, a chunk stored with flags, into out[:0:rawLen]
// and checks it decodes to exactly rawLen bytes; it never writes past
// rawLen, whatever src claims.
func decompress(dec *zstd.Decoder, flags uint8, src, out []byte, rawLen int) ([]byte, error) {
	var plain []byte
	switch flags {
	case flagZstd:
		p, err := dec.DecodeAll(src, out[:0:rawLen])
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		plain = p
	case flagS2:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		if n != rawLen {
			return nil, fmt.Errorf("decompress: decodes to %d bytes, want %d", n, rawLen)
		}
		if plain, err = s2.Decode(out[:rawLen], src); err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
	default:
		return nil, fmt.Errorf("decompress: unknown flags %#x", flags)
	}
	if len(plain) != rawLen {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(plain), rawLen)
	}
	return plain, nil
}
