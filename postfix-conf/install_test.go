package postfixconf

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// installBlocks are the shell blocks of README.md's "Installing, step by step" (```sh
// install:NAME), by name, in order: what integration/scripts/sysadmin-install.sh runs.
func installBlocks(t *testing.T) (names []string, body map[string]string) {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	body = map[string]string{}
	re := regexp.MustCompile("(?ms)^```sh install:([a-z]+)\n(.*?)^```")
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if _, dup := body[m[1]]; dup {
			t.Errorf("README.md: two install:%s blocks", m[1])
		}
		names = append(names, m[1])
		body[m[1]] = m[2]
	}
	if len(names) == 0 || names[0] != "site" {
		t.Fatalf("README.md: the install blocks must start with install:site, got %v", names)
	}
	return names, body
}

// Every install block is valid shell, and every placeholder of the snippets is substituted by
// the step that installs the snippet: a new placeholder cannot ship without its step.
func TestInstallStepsCoverPlaceholders(t *testing.T) {
	names, body := installBlocks(t)
	for _, n := range names {
		if out, err := exec.Command("bash", "-n", "-c", body[n]).CombinedOutput(); err != nil {
			t.Errorf("install:%s is not valid shell: %v\n%s", n, err, out)
		}
	}
	steps := map[string]string{"main.cf.pec": "postfix", "master.cf.pec": "postfix", "dovecot-pec.conf": "dovecot"}
	ph := regexp.MustCompile(`@[A-Z][A-Z0-9_]*@`)
	for file, step := range steps {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(body[step], "postfix-conf/"+file) {
			t.Errorf("install:%s does not install %s", step, file)
		}
		for _, p := range ph.FindAllString(string(b), -1) {
			if !strings.Contains(body[step], "s|"+p+"|") {
				t.Errorf("%s uses %s, which install:%s does not substitute", file, p, step)
			}
		}
	}
}
