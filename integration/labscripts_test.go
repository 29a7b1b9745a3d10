//go:build integration

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestPidAliveZombie: the lab scripts' pid_alive takes a zombie (a process killed, not yet
// reaped by its parent) for gone, as the tests that SIGKILL a node do. Before, `kill -0`
// answered for it: in a CI container whose PID 1 reaps orphans late, lab-node.sh found the
// killed pec-milter "running", did not start it, and TestTwoNodesOfA failed.
func TestPidAliveZombie(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	check := func(pid int) bool {
		file := filepath.Join(dir, "x.pid")
		if err := os.WriteFile(file, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := exec.Command("bash", "-c", `. scripts/lib.sh && pid_alive "$1"`, "bash", file).Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
		return err == nil
	}
	// A child of this test process that exits stays a zombie until Wait reaps it.
	z := exec.Command("true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	defer z.Wait()
	waitState(t, z.Process.Pid, 'Z')
	if check(z.Process.Pid) {
		t.Errorf("pid_alive: the zombie %d is taken for a running process", z.Process.Pid)
	}
	if !check(os.Getpid()) {
		t.Errorf("pid_alive: this test process (%d) is taken for gone", os.Getpid())
	}
}

// waitState waits until /proc/PID/stat shows the state letter st.
func waitState(t *testing.T, pid int, st byte) {
	for range 500 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == st {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d never reached state %c", pid, st)
}
