package config

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/pec/reinject"
	"github.com/gestore-pec/gestore/pec/store"
)

// The sample configuration of postfix-conf (issue 17 item 4): a production file with every
// key documented, commented out when optional.
const samplePath = "../../../postfix-conf/pec.yaml.sample"

// The sample is a valid configuration for both daemons, by the programs' own loader and
// validation (which read no file, so no path needs rewriting), and its content and
// reinjection sections pass the checks their constructors make at start.
func TestSampleLoads(t *testing.T) {
	c, err := Load(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateMilter(); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateLMTP(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspector(); err != nil {
		t.Fatal(err)
	}
	if _, err := reinject.New(c.Reinject, reinject.Deps{Store: noOutbox{}}); err != nil {
		t.Fatal(err)
	}
	// The production choices the sample stands for.
	if !c.Provider.Production || c.Seal == nil || c.Reinject.Addr != "unix:/var/spool/postfix/public/pec-reinject" ||
		c.LMTP.Dovecot != "unix:/run/dovecot/lmtp" || c.Signer.PKCS11.PINEnv == "" || c.Signer.PEMKey != "" {
		t.Errorf("not the production sample: %+v", c)
	}
	for _, l := range []Listener{c.Milter.Listener(), c.Confirm.Listener(), c.LMTP.Listener()} {
		if n, _, _ := ParseListen(l.Spec); n != "unix" || !slices.Equal(l.Peers.AllowUsers, []string{"postfix"}) {
			t.Errorf("%s: %s admits %v, want a unix socket for postfix", l.Key, l.Spec, l.Peers.AllowUsers)
		}
	}
	// With every commented-out key uncommented the file still decodes strictly: no commented
	// key is misspelt or in the wrong section.
	all := uncomment(mustRead(t, samplePath))
	if _, err := decode(all); err != nil {
		t.Fatalf("sample with every key uncommented: %v", err)
	}
}

// Every key of the configuration (Config's yaml tags, recursively, inline structs included)
// is in the sample, commented out or not: a new key without documentation fails here.
func TestSampleHasEveryKey(t *testing.T) {
	missing, err := missingKeys(mustRead(t, samplePath))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range missing {
		t.Errorf("%s: not in %s (add it, with its comment)", k, samplePath)
	}
}

// The check above can fail: removing any one key line of the sample makes missingKeys name
// that key.
func TestSampleMissingKeyIsNamed(t *testing.T) {
	doc := uncomment(mustRead(t, samplePath))
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	type keyLine struct {
		path string
		line int
	}
	var lines []keyLine
	count := map[string]int{}
	walkNodes(&root, "", func(path string, k, v *yaml.Node) {
		count[path]++
		if v.Line == k.Line { // the key and its whole value on one line
			lines = append(lines, keyLine{path, k.Line})
		}
	})
	tried := 0
	required := configKeys(reflect.TypeFor[Config](), "", map[reflect.Type]bool{})
	src := strings.Split(string(doc), "\n")
	for _, kl := range lines {
		if count[kl.path] > 1 || !slices.Contains(required, kl.path) {
			continue
		}
		tried++
		cut := strings.Join(slices.Delete(slices.Clone(src), kl.line-1, kl.line), "\n")
		missing, err := missingKeys([]byte(cut))
		if err != nil {
			t.Fatalf("without line %d: %v", kl.line, err)
		}
		if !slices.Contains(missing, kl.path) {
			t.Errorf("line %d (%s) deleted: missing keys %v do not name it", kl.line, kl.path, missing)
		}
	}
	if tried < 100 {
		t.Errorf("only %d of the %d keys tried", tried, len(required))
	}
}

// missingKeys lists the keys of Config that the sample (commented-out keys included) lacks.
func missingKeys(sample []byte) ([]string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(uncomment(sample), &root); err != nil {
		return nil, err
	}
	have := map[string]bool{}
	walkNodes(&root, "", func(path string, _, _ *yaml.Node) { have[path] = true })
	var missing []string
	for _, k := range configKeys(reflect.TypeFor[Config](), "", map[reflect.Type]bool{}) {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// configKeys lists the dotted yaml keys of struct type t: a field's key, and for a struct
// field the keys inside it (an inline struct adds its keys to the parent's). Elements of a
// slice or pointer count as the field itself. A struct type met a second time as a named key
// (signer.keys[].pkcs11 has signer.pkcs11's type) needs only its key: its fields are
// documented where it first appears.
func configKeys(t reflect.Type, prefix string, seen map[reflect.Type]bool) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		nested := ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[yaml.Unmarshaler]())
		if opts == "inline" {
			out = append(out, configKeys(ft, prefix, seen)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		out = append(out, key)
		if nested && !seen[ft] {
			seen[ft] = true
			out = append(out, configKeys(ft, key+".", seen)...)
		}
	}
	return out
}

// walkNodes calls fn for every mapping key with its dotted path; sequence elements share
// the path of their sequence.
func walkNodes(n *yaml.Node, prefix string, fn func(path string, k, v *yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			walkNodes(c, prefix, fn)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			fn(prefix+k.Value, k, v)
			walkNodes(v, prefix+k.Value+".", fn)
		}
	}
}

// commentedKey is a commented-out setting: "# key: value", "#   - key: value" (a list
// item), at any indentation, or a comment of such a line. Prose comments never start with
// "word:" (the strict decode of the uncommented file catches one that does).
var commentedKey = regexp.MustCompile(`^(\s*)# (\s*(?:- )?[a-z][a-z0-9_]*:(?:\s.*)?)$`)

// uncomment turns every commented-out setting into a setting, repeatedly (a commented line
// inside a commented block).
func uncomment(doc []byte) []byte {
	lines := strings.Split(string(doc), "\n")
	for changed := true; changed; {
		changed = false
		for i, l := range lines {
			if m := commentedKey.FindStringSubmatch(l); m != nil {
				lines[i] = m[1] + m[2]
				changed = true
			}
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noOutbox satisfies reinject.Outbox for the drainer's start-up checks; it is never used.
type noOutbox struct{}

func (noOutbox) ClaimOutbox(context.Context, store.Claim) ([]store.OutboxItem, error) {
	return nil, nil
}
func (noOutbox) MarkOutbox(context.Context, int64, string, store.Mark) error { return nil }
func (noOutbox) OutboxWait() <-chan struct{}                                 { return nil }

// The sample, the systemd units, main.cf.pec and the README agree on where the sockets and
// the file are: each unix listener of the sample is in the directory the units create
// (RuntimeDirectory), which they may write under ProtectSystem=strict, and main.cf.pec and
// the README name the same sockets; the units start the programs with -config DefaultPath.
func TestSampleSocketsMatchPostfixConf(t *testing.T) {
	c, err := Load(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateMilter(); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateLMTP(); err != nil {
		t.Fatal(err)
	}
	conf := "../../../postfix-conf/"
	maincf, readme := string(mustRead(t, conf+"main.cf.pec")), string(mustRead(t, conf+"README.md"))
	if !strings.Contains(string(mustRead(t, samplePath)), DefaultPath) {
		t.Errorf("the sample does not say it is installed as %s", DefaultPath)
	}
	for _, unit := range []string{"pec-milter", "pec-lmtpd"} {
		u := string(mustRead(t, conf+"systemd/"+unit+".service"))
		if !strings.Contains(u, "/"+unit+" -config "+DefaultPath+"\n") {
			t.Errorf("%s.service: ExecStart does not give -config %s", unit, DefaultPath)
		}
		rt := regexp.MustCompile(`(?m)^RuntimeDirectory=(\S+)$`).FindStringSubmatch(u)
		if rt == nil || !regexp.MustCompile(`(?m)^ReadWritePaths=.*\s/run/`+rt[1]+`(\s|$)`).MatchString(u) {
			t.Fatalf("%s.service: no RuntimeDirectory= listed in ReadWritePaths=", unit)
		}
		// Postfix's user is not the service's user nor in its group: it needs the search
		// bit for "others" to reach a socket in the directory.
		m := regexp.MustCompile(`(?m)^RuntimeDirectoryMode=([0-7]+)$`).FindStringSubmatch(u)
		if m == nil {
			t.Errorf("%s.service: no RuntimeDirectoryMode (the default 0755 is fine, but say it)", unit)
		} else if mode, _ := strconv.ParseUint(m[1], 8, 32); mode&0o001 == 0 {
			t.Errorf("%s.service: RuntimeDirectoryMode=%s: Postfix's user could not reach the sockets", unit, m[1])
		}
		for _, l := range []Listener{c.Milter.Listener(), c.Confirm.Listener(), c.LMTP.Listener()} {
			if _, p, _ := ParseListen(l.Spec); filepath.Dir(p) != "/run/"+rt[1] {
				t.Errorf("%s.listen %s: not in /run/%s, the RuntimeDirectory of %s.service", l.Key, l.Spec, rt[1], unit)
			}
		}
	}
	_, confirm, _ := ParseListen(c.Confirm.Listen)
	for _, want := range []struct{ where, text, what string }{
		{"main.cf.pec", maincf, c.Milter.Listen},
		{"main.cf.pec", maincf, "lmtp:" + c.LMTP.Listen},
		{"main.cf.pec", maincf, confirm},
		{"README.md", readme, "`" + c.Milter.Listen + "`"},
		{"README.md", readme, "`lmtp:" + c.LMTP.Listen + "`"},
		{"README.md", readme, "`" + confirm + "`"},
	} {
		if !strings.Contains(want.text, want.what) {
			t.Errorf("%s does not name %s", want.where, want.what)
		}
	}
	for _, old := range []string{"/var/spool/postfix/gestore", "lmtp:inet:", "/etc/pec/", "/var/lib/pec/"} {
		for name, text := range map[string]string{"main.cf.pec": maincf, "README.md": readme} {
			if strings.Contains(text, old) {
				t.Errorf("%s still names %s", name, old)
			}
		}
	}
}
