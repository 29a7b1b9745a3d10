//go:build testhooks

package milter

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
)

// testHook runs, once, the shell command written in $PEC_TEST_HOOK_DIR/<name>, and removes the
// file. Only binaries built with -tags testhooks have it: the integration tests build such a
// pec-milter to kill Postfix processes at an exact point of a transaction ("after-eom": the
// milter has decided and modified the message, its reply is not sent yet).
func testHook(name string) {
	dir := os.Getenv("PEC_TEST_HOOK_DIR")
	if dir == "" {
		return
	}
	f := filepath.Join(dir, name)
	cmd, err := os.ReadFile(f)
	if err != nil {
		return
	}
	os.Remove(f)
	out, err := exec.Command("sh", "-c", string(cmd)).CombinedOutput()
	slog.Warn("test hook ran", "hook", name, "command", string(cmd), "output", string(out), "error", err)
}
