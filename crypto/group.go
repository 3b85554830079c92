// The recipient group record (format 2, 0x0001, critical): which of how
// many sealed copies of one version an envelope is. age opens no header
// with more than MaxRecipients stanzas, and a message is bounded by the
// server's max payload, so the publisher splits a large fleet into groups
// and seals the same bundle, under the same version, once per group
// (docs/FORMAT.md, "The recipient group record"). Nodes compare the record
// with the subject the envelope came on.

package crypto

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// groupRecordSize is the group record's value size: the group index and
// the group count, 16 bits each.
const groupRecordSize = 4

// Group is an envelope's recipient group record: the envelope is sealed
// to group Index (from 0) of Count groups of one version's recipients.
// The zero Group (Count 0) means the envelope carries none: it is sealed
// to all the certificate's recipients at once.
type Group struct {
	Index, Count int
}

// IsZero tells whether g is the zero Group: no group record.
func (g Group) IsZero() bool { return g == Group{} }

// String is g as the Certsync-Group header writes it, "<index>/<count>";
// "" for the zero Group.
func (g Group) String() string {
	if g.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d/%d", g.Index, g.Count)
}

// ParseGroup reads a Certsync-Group header, String's form "<index>/<count>",
// as a group a record could hold (check); false for anything else. The
// header is not signed: it is a hint (for pacing, for listings), never
// what a node trusts, which is the envelope's record.
func ParseGroup(s string) (Group, bool) {
	index, count, ok := strings.Cut(s, "/")
	if !ok {
		return Group{}, false
	}
	k, err1 := strconv.Atoi(index)
	n, err2 := strconv.Atoi(count)
	g := Group{Index: k, Count: n}
	if err1 != nil || err2 != nil || g.check() != "" || g.String() != s {
		return Group{}, false
	}
	return g, true
}

// check says why g cannot be a group record, or "": a record names one
// group of 2 to 65,535 (one group is written as no record).
func (g Group) check() string {
	switch {
	case g.Count < 2 || g.Count > 0xffff:
		return fmt.Sprintf("group count %d is not in 2..65535", g.Count)
	case g.Index < 0 || g.Index >= g.Count:
		return fmt.Sprintf("group index %d is not below the group count %d", g.Index, g.Count)
	}
	return ""
}

// WithGroup makes Seal write the recipient group record: the envelope is
// group index (from 0) of count groups of one version's recipients. Seal
// refuses a count below 2 (one group is an envelope without the record)
// or above 65,535, and an index not below count.
func WithGroup(index, count int) SealOption {
	return func(o *sealOptions) { o.group = Group{Index: index, Count: count} }
}

// groupExtension is the record Seal writes for g in format, nil for the
// zero Group.
func groupExtension(format uint8, g Group) (*extension, error) {
	if g.IsZero() {
		return nil, nil
	}
	if format < 2 {
		return nil, fmt.Errorf("format %d has no recipient group record", format)
	}
	if why := g.check(); why != "" {
		return nil, fmt.Errorf("recipient group record: %s", why)
	}
	v := binary.BigEndian.AppendUint16(nil, uint16(g.Index))
	v = binary.BigEndian.AppendUint16(v, uint16(g.Count))
	return &extension{typ: extRecipientGroup, value: v}, nil
}

// checkGroupRecord checks the value v of a group record the reader r has
// just consumed: 4 bytes (refused at its length field otherwise), a count
// of at least 2 and an index below it (refused at the value).
func checkGroupRecord(r *reader, v []byte) error {
	if len(v) != groupRecordSize {
		r.off -= len(v) + 4
		return r.errorf("extension length", "recipient group record (0x%04x) is %d bytes, want %d", extRecipientGroup, len(v), groupRecordSize)
	}
	if why := parseGroupRecord(v).check(); why != "" {
		r.off -= len(v)
		return r.errorf("extension value", "recipient group record (0x%04x): %s", extRecipientGroup, why)
	}
	return nil
}

// parseGroupRecord decodes a group record's value, already checked to be
// groupRecordSize bytes.
func parseGroupRecord(v []byte) Group {
	return Group{Index: int(binary.BigEndian.Uint16(v)), Count: int(binary.BigEndian.Uint16(v[2:]))}
}
