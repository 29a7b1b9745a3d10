package environ

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

const secret = "s3cr3t-PIN-4711"

// TestForget runs this test binary again with a secret in its initial environment; the child
// calls Forget and reports what /proc/self/environ shows and what os.Getenv says.
func TestForget(t *testing.T) {
	if os.Getenv("ENVIRON_TEST_CHILD") == "1" {
		child(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestForget$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ENVIRON_TEST_CHILD=1", "PEC_TEST_PIN="+secret, "OTHER_VAR=kept")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// child is the re-executed test: it fails (and so fails its parent) when the secret is still
// visible after Forget.
func child(t *testing.T) {
	before, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(before, []byte("PEC_TEST_PIN="+secret)) {
		t.Fatalf("the secret is not in the initial environment: the test proves nothing")
	}
	if err := Forget("PEC_TEST_PIN"); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(after, []byte(secret)) {
		t.Errorf("/proc/self/environ still shows the secret")
	}
	if _, ok := os.LookupEnv("PEC_TEST_PIN"); ok {
		t.Errorf("os.LookupEnv still finds the variable")
	}
	if os.Getenv("OTHER_VAR") != "kept" || !bytes.Contains(after, []byte("OTHER_VAR=kept")) {
		t.Errorf("another variable was changed")
	}
	if len(after) != len(before) {
		t.Errorf("the environment block changed size: %d, was %d", len(after), len(before))
	}
}
