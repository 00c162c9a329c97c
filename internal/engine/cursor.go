package engine

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/droverhq/drover/internal/job"
)

// Cursors are opaque to clients, the same in every face: base64url
// (unpadded) of 18 bytes,
//
//	version (2) | order (0 asc, 1 desc) | id (8 bytes, big-endian) | check (8 bytes)
//
// where check is the first 8 bytes of SHA-256 over a fixed label and the
// first 10 bytes. The check makes any change to a cursor (a flipped bit, a
// truncated copy, an edited id) fail, instead of silently listing from
// another position. It is a checksum, not a MAC: anyone who reads this
// code can make a valid cursor, which grants nothing, since a cursor only
// says where a listing resumes and every listing applies the caller's own
// filters and scope. A keyed MAC would need a secret shared by every node
// and kept across restarts, for no gain. Version 1 cursors (base64 of
// "v1:asc:ID", without a check) are refused: a client mid-listing across
// an upgrade starts the listing again.
const (
	cursorVersion = 2
	cursorLen     = 18
	cursorLabel   = "drover list cursor\x00"
)

// errBadCursor is the one answer for every cursor that is not exactly one
// that EncodeCursor wrote, so that the answer tells nothing about which
// part was wrong.
var errBadCursor = errors.New("not a cursor from this API, or altered")

// cursorCheck is the check of a cursor's first 10 bytes.
func cursorCheck(head []byte) []byte {
	h := sha256.New()
	h.Write([]byte(cursorLabel))
	h.Write(head)
	return h.Sum(nil)[:8]
}

// EncodeCursor encodes the position after id in a listing by id, in
// descending order if desc: the next_cursor of every face.
func EncodeCursor(after job.ID, desc bool) string {
	b := make([]byte, 10, cursorLen)
	b[0] = cursorVersion
	if desc {
		b[1] = 1
	}
	binary.BigEndian.PutUint64(b[2:10], uint64(after)) //nolint:gosec // G115: ids are positive
	b = append(b, cursorCheck(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the position of a cursor that EncodeCursor wrote
// for a listing in the same order. Anything else, including a cursor with
// any byte changed, is an error (a plain one: each face says which of its
// fields was wrong).
func DecodeCursor(c string, desc bool) (job.ID, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion || b[1] > 1 ||
		subtle.ConstantTimeCompare(b[10:], cursorCheck(b[:10])) != 1 {
		return 0, errBadCursor
	}
	id := int64(binary.BigEndian.Uint64(b[2:10])) //nolint:gosec // G115: checked below
	if id <= 0 {
		return 0, errBadCursor // never written: pages follow positive ids
	}
	if (b[1] == 1) != desc {
		return 0, fmt.Errorf("the cursor belongs to a listing in the other order")
	}
	return job.ID(id), nil
}
