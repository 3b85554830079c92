package strictyaml

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		"":                         "empty configuration",
		"# nothing\n":              "empty configuration",
		"~\n":                      "empty configuration",
		"- a\n":                    "line 1: want a mapping of keys at the top level, got a list",
		"a: 1\n---\nb: 2\n":        "line 2: a second YAML document",
		"a: &x 1\n":                "line 1: anchors and aliases",
		"a: 1\nb: *x\n":            "unknown anchor",
		"a: {b: 1\n":               "line 1:",
		"a:\n\tb: 1\n":             "line 2",
		"a:\n  b: [1, &y 2]\n":     "line 2: anchors and aliases",
		"a: 1\n---\n# only this\n": "second YAML document",
	} {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) = %v, want one line with %q", doc, err, want)
		}
	}
}

// walk parses doc and walks its top level with known keys, reading every
// value with get.
func walk(t *testing.T, doc string, known []string, get func(key string, v *yaml.Node) error) error {
	t.Helper()
	root, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return Walk(root, "", known, func(key string, _, v *yaml.Node) error { return get(key, v) })
}

func TestWalk(t *testing.T) {
	t.Parallel()
	known := []string{"install_dir", "reload", "sub"}
	var keys []string
	err := walk(t, "reload: a\ninstall_dir: /x\nsub: {}\n", known, func(key string, _ *yaml.Node) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil || strings.Join(keys, ",") != "reload,install_dir,sub" {
		t.Errorf("walked %v, %v; want the keys in order", keys, err)
	}
	for doc, want := range map[string]string{
		"instal_dir: /x\n":               `line 1: unknown key "instal_dir" (did you mean "install_dir"?)`,
		"zzzzzz: 1\n":                    `line 1: unknown key "zzzzzz"`,
		"reload: a\nreload: b\n":         `line 2: duplicate key "reload" (first on line 1)`,
		"? [a]\n: x\n":                   "line 1: want a name as key, got a list",
		"sub: [1]\n":                     "line 1: sub: want a mapping, got a list",
		"sub:\n  deeper: 1\n":            `line 2: sub: unknown key "deeper"`,
		"sub:\n  other: 1\n  other: 2\n": `line 3: sub: duplicate key "other" (first on line 2)`,
		"reload: ''\n":                   "line 1: reload: empty; remove the key",
		"reload: 12\n":                   "line 1: reload: want a string, got an integer (quote it)",
		"reload:\n":                      "line 1: reload: want a string, got nothing",
		"install_dir: relative\n":        `line 1: install_dir: want an absolute path, got "relative"`,
		"install_dir: /\n":               "line 1: install_dir: the root folder cannot be used",
	} {
		err := walk(t, doc, known, func(key string, v *yaml.Node) error {
			switch key {
			case "sub":
				return Walk(v, key, []string{"other"}, func(string, *yaml.Node, *yaml.Node) error { return nil })
			case "install_dir":
				_, err := AbsPath(v, key)
				return err
			}
			_, err := String(v, key)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
		var e *Error
		if !errors.As(err, &e) || e.Line < 1 {
			t.Errorf("%q: %v is not an *Error with a line", doc, err)
		}
	}
}

func TestGetters(t *testing.T) {
	t.Parallel()
	root, err := Parse([]byte("n: 7\nbig: 99999999999999999999\nd: 90s\nzero: 0\nneg: -1s\nlong: 2000000h\nb: true\nyes: yes\nl: [a, b]\ns: x\npw: 73519\ntagged: !!int \"1\\n2\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]*yaml.Node{}
	if err := Walk(root, "", nil, func(key string, _, n *yaml.Node) error { v[key] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	if i, err := Int(v["n"], "n", 1, 10); i != 7 || err != nil {
		t.Errorf("Int = %d, %v", i, err)
	}
	if _, err := Int(v["n"], "n", 1, 5); err == nil || err.Error() != "line 1: n: want an integer from 1 to 5, got 7" {
		t.Errorf("Int out of range: %v", err)
	}
	if _, err := Int(v["big"], "big", 0, 10); err == nil {
		t.Error("Int of a huge number: no error")
	}
	if _, err := Int(v["tagged"], "tagged", 0, 10); err == nil || err.Error() != `line 12: tagged: want an integer from 0 to 10, got "1\n2"` {
		t.Errorf("Int of a tagged string with a newline: %v", err)
	}
	if d, err := Duration(v["d"], "d", 1); d != 90*time.Second || err != nil {
		t.Errorf("Duration = %v, %v", d, err)
	}
	if d, err := Duration(v["zero"], "zero", 0); d != 0 || err != nil {
		t.Errorf("Duration of a bare 0 = %v, %v", d, err)
	}
	if _, err := Duration(v["zero"], "zero", 1); err == nil || !strings.Contains(err.Error(), "want a positive duration, got 0") {
		t.Errorf("Duration 0, positive wanted: %v", err)
	}
	if _, err := Duration(v["neg"], "neg", 0); err == nil || !strings.Contains(err.Error(), "want a duration of 0s or more, got -1s") {
		t.Errorf("Duration negative: %v", err)
	}
	if _, err := Duration(v["long"], "long", 0); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("Duration too long: %v", err)
	}
	if b, err := Bool(v["b"], "b"); !b || err != nil {
		t.Errorf("Bool = %v, %v", b, err)
	}
	if _, err := Bool(v["yes"], "yes"); err == nil || !strings.Contains(err.Error(), "want true or false, got a string") {
		t.Errorf("Bool of yes: %v", err)
	}
	if l, err := List(v["l"], "l"); len(l) != 2 || err != nil {
		t.Errorf("List = %v, %v", l, err)
	}
	if _, err := List(v["s"], "s"); err == nil || !strings.Contains(err.Error(), "want a list, got a string") {
		t.Errorf("List of a string: %v", err)
	}
	// A value that may be a secret is never repeated.
	if _, err := String(v["pw"], "pw"); err == nil || strings.Contains(err.Error(), "73519") {
		t.Errorf("String of an integer password: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"instal_dir", "install_dir", 1},
		{"relaod", "reload", 2}, {"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzParse: any input parses or fails with one line, never panics, and a
// walk of what parses, reading every scalar with every getter, does too.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a: 1\n", "a: &x 1\nb: *x\n", "a: 1\n---\nb: 2\n", "a:\n  b: [1, 2]\n  c: {d: 90s}\n",
		"? [a]\n: x\n", "a: !!binary aGVsbG8=\n", "a: 0o644\nb: '0644'\nc: true\n",
		"a: !!int \"1\\n2\"\n",
		"\"b:([\\n\\n2\": x\n\"b\": {\"c d\": 1}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		oneLine := func(err error) {
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		}
		root, err := Parse(data)
		oneLine(err)
		if err != nil {
			return
		}
		var visit func(n *yaml.Node, path string, depth int)
		visit = func(n *yaml.Node, path string, depth int) {
			if depth > 20 {
				return
			}
			oneLine(Walk(n, path, nil, func(key string, _, v *yaml.Node) error {
				p := Join(path, key)
				_, err := String(v, p)
				oneLine(err)
				_, err = AbsPath(v, p)
				oneLine(err)
				_, err = Int(v, p, -5, 5)
				oneLine(err)
				_, err = Duration(v, p, 0)
				oneLine(err)
				_, err = Bool(v, p)
				oneLine(err)
				items, err := List(v, p)
				oneLine(err)
				for _, item := range items {
					visit(item, p, depth+1)
				}
				visit(v, p, depth+1)
				return nil
			}))
		}
		visit(root, "", 0)
	})
}
