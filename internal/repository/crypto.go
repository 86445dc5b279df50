package repository

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
)

const (
	nonceLen     = 12
	tagLen       = 16
	sealOverhead = nonceLen + tagLen
	masterKeyLen = 64
)

// keys are the working keys derived from the master key.
type keys struct {
	aead   cipher.AEAD // AES-256-GCM; safe for concurrent use
	idKey  [32]byte    // BLAKE3 key of chunk ids
	cfgKey [32]byte    // BLAKE3 key of the config's MAC
}

func deriveKeys(master []byte) (*keys, error) {
	if len(master) != masterKeyLen {
		return nil, errors.New("master key has the wrong length")
	}
	var enc [32]byte
	k := new(keys)
	blake3.DeriveKey("csbs repository v1 encryption key", master, enc[:])
	blake3.DeriveKey("csbs repository v1 chunk id key", master, k.idKey[:])
	blake3.DeriveKey("csbs repository v3 config key", master, k.cfgKey[:])
	aead, err := newGCM(enc[:])
	if err != nil {
		return nil, err
	}
	k.aead = aead
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal returns nonce | ciphertext | tag of plaintext, in a new slice.
func seal(aead cipher.AEAD, plaintext, aad []byte) []byte {
	blob := make([]byte, nonceLen+len(plaintext)+tagLen)
	sealTo(aead, blob, plaintext, aad)
	return blob
}

// sealTo writes nonce | ciphertext | tag of plaintext into dst, which is
// exactly that long and does not overlap plaintext.
func sealTo(aead cipher.AEAD, dst, plaintext, aad []byte) {
	if _, err := rand.Read(dst[:nonceLen]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	aead.Seal(dst[nonceLen:nonceLen], dst[:nonceLen], plaintext, aad)
}

// errAuth means a blob failed authentication: it was damaged or tampered
// with, or belongs to another repository.
var errAuth = errors.New("authentication failed: data damaged or not of this repository")

// open decrypts blob (nonce | ciphertext | tag) and appends the plaintext to
// dst. open(blob[nonceLen:nonceLen], blob, aad) decrypts in place.
func open(aead cipher.AEAD, dst, blob, aad []byte) ([]byte, error) {
	if len(blob) < sealOverhead {
		return nil, errAuth
	}
	out, err := aead.Open(dst, blob[:nonceLen], blob[nonceLen:], aad)
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}

// Additional data binding each kind of sealed object to its role, so one
// cannot be substituted for another.
var (
	aadKey     = []byte("csbs key v1")
	aadTrailer = []byte("csbs pack trailer v1")
	aadIndex   = []byte("csbs index v1")
)

func aadSnapshot(id string) []byte { return []byte("csbs snapshot v1 " + id) }

// keyFile is keys/<id>: the master key sealed with a key derived from the
// password by Argon2id.
type keyFile struct {
	Version   int       `json:"version"`
	Created   time.Time `json:"created"`
	KDF       string    `json:"kdf"`
	Time      uint32    `json:"time"`
	MemoryKiB uint32    `json:"memory_kib"`
	Threads   uint8     `json:"threads"`
	Salt      []byte    `json:"salt"`
	Data      []byte    `json:"data"` // sealed master key
}

// Bounds on KDF parameters read from storage: a key file must not make Open
// spend unbounded memory or time.
const (
	maxKDFMemoryKiB = 4 << 20 // 4 GiB
	maxKDFTime      = 100
)

func decodeKeyFile(b []byte) (*keyFile, error) {
	var k keyFile
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	switch {
	case k.Version != 1:
		return nil, fmt.Errorf("key file: version %d is not supported", k.Version)
	case k.KDF != "argon2id":
		return nil, fmt.Errorf("key file: unknown KDF %q", k.KDF)
	case k.Time < 1 || k.Time > maxKDFTime:
		return nil, fmt.Errorf("key file: KDF time %d out of range", k.Time)
	case k.MemoryKiB < 8 || k.MemoryKiB > maxKDFMemoryKiB:
		return nil, fmt.Errorf("key file: KDF memory %d KiB out of range", k.MemoryKiB)
	case k.Threads < 1:
		return nil, errors.New("key file: KDF threads must be at least 1")
	case len(k.Salt) < 16 || len(k.Salt) > 64:
		return nil, errors.New("key file: salt length out of range")
	case len(k.Data) != masterKeyLen+sealOverhead:
		return nil, errors.New("key file: sealed key has the wrong length")
	}
	return &k, nil
}

func newKeyFile(password, master []byte, t, memKiB uint32) (*keyFile, error) {
	k := &keyFile{
		Version:   1,
		Created:   time.Now().UTC(),
		KDF:       "argon2id",
		Time:      t,
		MemoryKiB: memKiB,
		Threads:   4,
		Salt:      make([]byte, 32),
	}
	if _, err := rand.Read(k.Salt); err != nil {
		return nil, err
	}
	aead, err := newGCM(k.wrapKey(password))
	if err != nil {
		return nil, err
	}
	k.Data = seal(aead, master, aadKey)
	return k, nil
}

func (k *keyFile) wrapKey(password []byte) []byte {
	return argon2.IDKey(password, k.Salt, k.Time, k.MemoryKiB, k.Threads, 32)
}

// unwrap returns the master key, or ErrWrongPassword.
func (k *keyFile) unwrap(password []byte) ([]byte, error) {
	aead, err := newGCM(k.wrapKey(password))
	if err != nil {
		return nil, err
	}
	master, err := open(aead, nil, k.Data, aadKey)
	if err != nil {
		return nil, ErrWrongPassword
	}
	return master, nil
}
