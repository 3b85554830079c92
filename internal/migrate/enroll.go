package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// ParseNodeLine parses the line `certsync node init` prints for
// publisher.yaml's nodes, "NAME: RECIPIENT", checking the name
// (wire.CheckNodeName) and the recipient (crypto.ParseRecipient). Errors
// never repeat what looks like a private key.
func ParseNodeLine(line string) (name, recipient string, err error) {
	line = strings.TrimSpace(line)
	if crypto.LooksLikePrivateKey(line) {
		return "", "", errors.New("parsing node line: this holds a private key, not a recipient: give the line `certsync node init` printed")
	}
	name, recipient, ok := strings.Cut(line, ":")
	if !ok || strings.ContainsAny(line, "\n\r") {
		return "", "", fmt.Errorf("parsing node line %q: want \"NAME: RECIPIENT\", as `certsync node init` prints it", line)
	}
	name, recipient = strings.TrimSpace(name), strings.TrimSpace(recipient)
	if err := wire.CheckNodeName(name); err != nil {
		return "", "", fmt.Errorf("parsing node line: %w", err)
	}
	if _, err := crypto.ParseRecipient(recipient); err != nil {
		return "", "", fmt.Errorf("parsing node line of %q: %w", name, err)
	}
	return name, recipient, nil
}

// recipientID is what makes two recipients the same key: an SSH key line
// without its comment, else the whole text.
func recipientID(r string) string {
	r = strings.TrimSpace(r)
	if f := strings.Fields(r); len(f) >= 2 && strings.HasPrefix(r, "ssh-") {
		return f[0] + " " + f[1]
	}
	return r
}

// AddNode adds node name with recipient under nodes in the publisher.yaml
// data, and the node to each of certs under certificates, and returns the
// new file. Every other byte stays as it was: comments, order, quoting,
// flow or block style; the node goes after the last node, and after the
// last node of each certificate's list, in the same style. data must be a
// valid publisher.yaml (the caller loads it first). It refuses a name
// already under nodes, a recipient another node has, and a certificate not
// under certificates. The result is parsed again and must say exactly what
// data said plus the node, or nothing is returned.
func AddNode(data []byte, name, recipient string, certs []string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("adding node %q: %v", name, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("adding node %q: the configuration is not a mapping", name)
	}
	root := doc.Content[0]
	nodes, certsNode := lookup(root, "nodes"), lookup(root, "certificates")
	if nodes == nil || nodes.Kind != yaml.MappingNode || len(nodes.Content) == 0 {
		return nil, fmt.Errorf("adding node %q: no nodes mapping to add to", name)
	}
	if certsNode == nil || certsNode.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("adding node %q: no certificates mapping to add to", name)
	}
	for i := 0; i+1 < len(nodes.Content); i += 2 {
		k, v := nodes.Content[i], nodes.Content[i+1]
		if k.Value == name {
			return nil, fmt.Errorf("adding node %q: already under nodes (line %d): choose another name, or edit the file to change it", name, k.Line)
		}
		if recipientID(v.Value) == recipientID(recipient) {
			return nil, fmt.Errorf("adding node %q: its recipient is node %q's already (line %d): each node has its own key", name, k.Value, v.Line)
		}
	}
	var seqs []*yaml.Node
	var seqNames []string
	seen := map[string]bool{}
	for _, c := range certs {
		if seen[c] {
			continue
		}
		seen[c] = true
		seq := lookup(certsNode, c)
		if seq == nil {
			return nil, fmt.Errorf("adding node %q: certificate %q is not under certificates: add it there first, with its lineage under lineages", name, c)
		}
		if seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 {
			return nil, fmt.Errorf("adding node %q: certificates.%s is not a list of nodes", name, c)
		}
		seqs = append(seqs, seq)
		seqNames = append(seqNames, c)
	}
	cannot := func(what string, err error) error {
		return fmt.Errorf("adding node %q: cannot edit %s in place (%v): add the node by hand", name, what, err)
	}
	e := &editor{src: data}
	e.lines = splitLines(data)
	if err := e.appendPair(nodes, name, recipient); err != nil {
		return nil, cannot("nodes", err)
	}
	for i, seq := range seqs {
		if err := e.appendItem(seq, name); err != nil {
			return nil, cannot("certificates."+seqNames[i], err)
		}
	}
	out := e.apply()
	if err := sameBut(data, out, name, recipient, certs); err != nil {
		return nil, cannot("the file", err)
	}
	return out, nil
}

// lookup returns the value of key in mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// splitLines splits data into lines, each with its "\n" if it had one.
func splitLines(data []byte) [][]byte {
	var lines [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			lines = append(lines, data)
			break
		}
		lines = append(lines, data[:i+1])
		data = data[i+1:]
	}
	return lines
}

// editor collects insertions into a source text.
type editor struct {
	src   []byte
	lines [][]byte
	ins   []insertion
}

// insertion puts text before byte off of line (0-based); off may be the
// line's length.
type insertion struct {
	line, off int
	text      string
}

var blockItemPrefix = regexp.MustCompile(`^ *- +$`)

// appendPair adds "key: value" after the last pair of the mapping m.
func (e *editor) appendPair(m *yaml.Node, key, value string) error {
	k, v := m.Content[len(m.Content)-2], m.Content[len(m.Content)-1]
	line, end, err := e.scalarEnd(v)
	if err != nil {
		return err
	}
	if m.Style&yaml.FlowStyle != 0 {
		e.ins = append(e.ins, insertion{line: line, off: end, text: ", " + key + ": " + scalar(value)})
		return nil
	}
	kl, koff, err := e.pos(k)
	if err != nil {
		return err
	}
	indent := string(e.lines[kl][:koff])
	if strings.Trim(indent, " ") != "" {
		return errors.New("its last key does not start its line")
	}
	e.ins = append(e.ins, insertion{line: line + 1, off: 0, text: indent + key + ": " + scalar(value) + "\n"})
	return nil
}

// appendItem adds item after the last item of the sequence s.
func (e *editor) appendItem(s *yaml.Node, item string) error {
	last := s.Content[len(s.Content)-1]
	line, end, err := e.scalarEnd(last)
	if err != nil {
		return err
	}
	if s.Style&yaml.FlowStyle != 0 {
		e.ins = append(e.ins, insertion{line: line, off: end, text: ", " + scalar(item)})
		return nil
	}
	l, off, err := e.pos(last)
	if err != nil {
		return err
	}
	prefix := string(e.lines[l][:off])
	if !blockItemPrefix.MatchString(prefix) {
		return errors.New("its last item does not start its line with '- '")
	}
	e.ins = append(e.ins, insertion{line: line + 1, off: 0, text: prefix + scalar(item) + "\n"})
	return nil
}

// pos returns the 0-based line and byte offset where node n starts.
func (e *editor) pos(n *yaml.Node) (int, int, error) {
	l := n.Line - 1
	if l < 0 || l >= len(e.lines) {
		return 0, 0, fmt.Errorf("line %d is outside the file", n.Line)
	}
	off, col := 0, 1
	text := e.lines[l]
	for col < n.Column {
		if off >= len(text) {
			return 0, 0, fmt.Errorf("line %d has no column %d", n.Line, n.Column)
		}
		_, size := utf8.DecodeRune(text[off:])
		off += size
		col++
	}
	return l, off, nil
}

// scalarEnd returns the 0-based line and the byte offset just after the
// scalar n, which must sit on one line.
func (e *editor) scalarEnd(n *yaml.Node) (int, int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, 0, fmt.Errorf("line %d: want a single value", n.Line)
	}
	l, off, err := e.pos(n)
	if err != nil {
		return 0, 0, err
	}
	text := strings.TrimRight(string(e.lines[l]), "\r\n")
	rest := text[off:]
	switch n.Style {
	case 0:
		if !strings.HasPrefix(rest, n.Value) {
			return 0, 0, fmt.Errorf("line %d: the value spans several lines", n.Line)
		}
		return l, off + len(n.Value), nil
	case yaml.SingleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			if rest[i] == '\'' {
				if i+1 < len(rest) && rest[i+1] == '\'' {
					i++
					continue
				}
				return l, off + i + 1, nil
			}
		}
	case yaml.DoubleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			switch rest[i] {
			case '\\':
				i++
			case '"':
				return l, off + i + 1, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("line %d: the value spans several lines or is a block", n.Line)
}

// apply returns the source with every insertion made.
func (e *editor) apply() []byte {
	ins := slices.Clone(e.ins)
	sort.SliceStable(ins, func(i, j int) bool {
		if ins[i].line != ins[j].line {
			return ins[i].line > ins[j].line
		}
		return ins[i].off > ins[j].off
	})
	lines := make([][]byte, len(e.lines))
	for i, l := range e.lines {
		lines[i] = slices.Clone(l)
	}
	if n := len(lines); n > 0 && !bytes.HasSuffix(lines[n-1], []byte("\n")) {
		lines[n-1] = append(lines[n-1], '\n')
	}
	for _, in := range ins {
		if in.line == len(lines) {
			lines = append(lines, []byte(in.text))
			continue
		}
		l := lines[in.line]
		lines[in.line] = slices.Concat(l[:in.off:in.off], []byte(in.text), l[in.off:])
	}
	return bytes.Join(lines, nil)
}

var plainSafe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+/=_.-]*( [A-Za-z0-9+/=_.@-]+)*$`)

// scalar renders s as a YAML scalar, plain when that reads back as the
// same string, double-quoted otherwise: both forms are valid in flow and
// block context alike.
func scalar(s string) string {
	if plainSafe.MatchString(s) {
		var back string
		if yaml.Unmarshal([]byte(s), &back) == nil && back == s {
			return s
		}
	}
	return strconv.Quote(s)
}

// sameBut checks that after holds exactly what before holds, plus node
// name with recipient under nodes and in each of certs.
func sameBut(before, after []byte, name, recipient string, certs []string) error {
	var want, got map[string]any
	if err := yaml.Unmarshal(before, &want); err != nil {
		return err
	}
	if err := yaml.Unmarshal(after, &got); err != nil {
		return fmt.Errorf("the edited file does not parse: %v", err)
	}
	nodes, _ := want["nodes"].(map[string]any)
	if nodes == nil {
		return errors.New("no nodes")
	}
	nodes[name] = recipient
	cm, _ := want["certificates"].(map[string]any)
	for _, c := range certs {
		list, _ := cm[c].([]any)
		if !slices.Contains(list, any(name)) {
			cm[c] = append(list, name)
		}
	}
	if !reflect.DeepEqual(want, got) {
		return errors.New("the edited file says something else than intended")
	}
	return nil
}
